"""SA-Net: deep spectral analysis network (Wang & Jiang, arXiv 2009.07026), closed-form variant.

Layers of parallel spectral-analysis units learn convolution filters by spectral regression on patch
graphs (clusterkit.methods.sanet.units); images are compared block by block with a trimmed distance that
occlusion spoils little (clusterkit.methods.sanet.blocks); the final partition is spectral clustering of the
sparse kNN graph of that distance. New images go through the same filters and take a weighted vote
of their robust-nearest training images. docs/methods.md gives the equations and every default's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from clusterkit import console
from clusterkit.config import MethodConfig
from clusterkit.data.samples import ImageSet
from clusterkit.data.loading import resample
from clusterkit.engine.context import FitContext
from clusterkit.engine.predict import float_batches
from clusterkit.engine.device import resolve_device
from clusterkit.errors import InputError
from clusterkit.methods.sanet.blocks import (
    CELL,
    BlankRule,
    Blocks,
    Projection,
    blank_threshold,
    describe,
    infer_missing,
    robust_neighbors,
    searched_candidates,
    split_blocks,
)
from clusterkit.methods.sanet.layers import SpectralLayer, forward, iter_maps, rows_per_pass
from clusterkit.methods.sanet.units import sample_patches, spectral_filters
from clusterkit.algorithms.spectral import (
    affinity_from_neighbors,
    check_distinct,
    distinct_rows,
    neighbor_vote,
    normalized_cut,
    refine_cut,
    relaxed_cut,
    spectral_partition,
)
from clusterkit.methods.base import ClusterMethod
from clusterkit.methods.registry import register


@dataclass
class SANetConfig(MethodConfig):
    """layers / units / filters: depth, parallel units per layer, filters per unit.
    patch_size: first-layer patch side; deep_patch_size: patch side in later layers (their input has
    2 x units x filters channels). pool: average pooling between layers. subset_size: images a unit
    draws; patches_per_unit: patches sampled from them for the unit's graph. n_neighbors: kNN of every
    graph (patch graphs and the image graph). ridge: spectral-regression penalty as a fraction of the
    mean diagonal entry of the patch Gram matrix, tr(P^T P) / D. grid: blocks per side of the last map;
    keep_fraction: share of each pair's informative blocks (those `blank_blocks` does not leave out;
    the most similar ones) that count in the image distance. blank_blocks: a block leaves a pair's comparison when it is blank
    (no ink) in both images, or in either ('either': blank may mean erased by an occluder; costs the
    evidence of blank areas on clean images), or ('inferred') when blank in both or blank in either where
    most of that image's robust neighbours (found under 'either') have ink: erased, not background
    (a second neighbour search). local_blocks: each block goes through the layers on its own
    (zero padding at its border), so that its descriptor depends on its own pixels only and an
    occluder spoils only the blocks it overlaps, not those within the filters' reach of it. Off by
    default: a block is a fraction of the image (2 x 2 px on 8 x 8 digits), smaller than the filters,
    which then see mostly padding and lose the context across block borders that tells strokes
    apart, on every image, occluded or not; on images whose blocks are larger than the first-layer
    patch it costs little context. candidates: neighbours from the untrimmed distance that are
    re-ranked robustly, searched on the first `candidate_dims` principal components. vote_neighbors:
    training images voting for a new image. knn_backend: 'auto' uses FAISS when installed.
    batch_size: images per forward pass. n_init: k-means restarts.
    k_max: largest k tried by --k auto (eigengap). working_size: the shorter side, in pixels, that images
    are resized to before the layers: the filters have a fixed size in pixels, so what they see (a stroke,
    a texture, a whole part) depends on it. 'auto' tries the input size and its halvings down to
    2 x grid px (grid x patch_size with local_blocks) and keeps the size whose image graph has the smallest relaxed normalized cut (the mean of
    its first k Laplacian eigenvalues: the clearest k groups), judged on the same seeded `subset_size`
    images at every size; Ng, Jordan & Weiss choose their affinity's scale the same way. restarts: whole
    fits with other random draws (units' subsets and patches), judged on those same images; the filters of
    the one whose partition has the smallest normalized cut are kept, as k-means keeps its restart of
    smallest inertia."""

    layers: int = 2
    units: int = 4
    filters: int = 8
    patch_size: int = 5
    deep_patch_size: int = 3
    pool: int = 2
    subset_size: int = 2000
    patches_per_unit: int = 8000
    n_neighbors: int = 10
    ridge: float = 1e-3
    grid: int = 4
    keep_fraction: float = 0.75
    blank_blocks: Literal["both", "either", "inferred"] = "both"
    local_blocks: bool = False
    candidates: int = 50
    candidate_dims: int = 64
    vote_neighbors: int = 10
    knn_backend: Literal["auto", "sklearn", "faiss"] = "auto"
    batch_size: int = 256
    n_init: int = 10
    k_max: int = 20
    working_size: Literal["auto"] | int = "auto"
    restarts: int = 4

    def validate(self) -> None:
        positive = ("layers", "units", "filters", "patch_size", "deep_patch_size", "pool", "grid", "batch_size", "n_init",
                    "candidate_dims", "restarts")
        for key in positive:
            if getattr(self, key) < 1:
                raise InputError(f"sanet option {key} must be >= 1, got {getattr(self, key)}")
        for key in ("patch_size", "deep_patch_size"):
            if getattr(self, key) % 2 == 0:
                raise InputError(f"sanet option {key} must be odd (a centred patch), got {getattr(self, key)}")
        if self.n_neighbors < 2 or self.vote_neighbors < 1 or self.k_max < 2:
            raise InputError("sanet needs n_neighbors >= 2, vote_neighbors >= 1 and k_max >= 2")
        if self.subset_size < 2 * self.n_neighbors or self.patches_per_unit < 4 * self.n_neighbors:
            raise InputError("sanet subset_size and patches_per_unit are too small for n_neighbors")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise InputError(f"sanet option keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if not self.ridge > 0:
            raise InputError(f"sanet option ridge must be > 0, got {self.ridge}")
        if self.working_size != "auto" and self.working_size < self.grid:
            raise InputError(f"sanet option working_size must be 'auto' or >= grid ({self.grid}), got {self.working_size}")


def restart_seed(seed: int, restart: int) -> int:
    """Restart 0 keeps the run's seed, so that one restart is the plain fit; the others draw theirs
    from it, below 2^30 (the seed also goes to scikit-learn, whose random_state must be below 2^32)."""
    return seed if restart == 0 else int(np.random.SeedSequence([seed, restart]).generate_state(1)[0] >> 2)


def _layers(state: dict[str, Any]) -> list[SpectralLayer]:
    return [SpectralLayer(layer["filters"], int(layer["pool"])) for layer in state["layers"]]


def scaled(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """(height, width) times `factor`, rounded, at least one pixel."""
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


@register
class SANet(ClusterMethod):
    name = "sanet"
    description = "SA-Net: spectral-analysis units in layers, occlusion-robust block similarity, spectral clustering refined on its normalized cut"
    supports_auto_k = True
    Config = SANetConfig
    config: SANetConfig

    # --- learning -------------------------------------------------------------------------
    def _fit(self, images: ImageSet, context: FitContext) -> None:
        """One fit, or the best of several candidates (working sizes, then restarts at the chosen
        size), each judged on the same seeded `subset_size` images; when those are not all the images,
        the winner's filters then describe all of them, and the graph and partition are of all."""
        cfg = self.config
        device = resolve_device(self.device)
        self.device_ = str(device)
        self.size_cuts_: dict[str, float] = {}  # relaxed cut per candidate size, when there are several
        self.restart_cuts_: dict[str, float] = {}  # normalized cut per restart's seed, when there are several
        self.k_selection_: dict[str, Any] = {}  # the eigenvalues --k auto chose k from
        sizes = self._working_sizes(images.size)
        if len(sizes) == 1 and cfg.restarts == 1:
            self._fit_at(images, sizes[0], device, self.seed)
            return
        first, _, _ = distinct_rows(images.pixels)  # the sample is drawn from distinct images: copies add nothing
        check_distinct(self.k_, len(first))
        generator = torch.Generator().manual_seed(self.seed)
        chosen = first[torch.randperm(len(first), generator=generator)[: cfg.subset_size].sort().values.numpy()]
        sample = images if len(chosen) == len(images) else images.subset(chosen)
        size, state = self._best_size(sample, sizes, device)
        seed, state = self._best_restart(sample, size, device, state)
        size_cuts, restart_cuts = dict(self.size_cuts_), dict(self.restart_cuts_)
        if sample is images:
            self.load_state_dict(state)
        else:  # the winner's filters, which is what the restarts chose between; the rest on all images
            self._fit_at(images, size, device, seed, layers=_layers(state))
        self.size_cuts_, self.restart_cuts_ = size_cuts, restart_cuts

    def _working_sizes(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """The configured working size, or (auto) the input size and its halvings down to 2 x grid px:
        two pixels a block. With `local_blocks`, down to grid x patch_size px only: a block that goes
        through the filters on its own must be at least as large as the first-layer patch."""
        cfg = self.config
        if cfg.working_size != "auto":
            return [scaled(size, cfg.working_size / min(size))]
        smallest = cfg.grid * (cfg.patch_size if cfg.local_blocks else 2)
        sizes, factor = [size], 2
        while min(size) // factor >= smallest:
            sizes.append(scaled(size, 1 / factor))
            factor *= 2
        return sizes

    def _best_size(self, sample: ImageSet, sizes: list[tuple[int, int]], device: torch.device):
        """(size, state) of the candidate size whose image graph has the smallest relaxed cut.

        Cuts are compared at one k: with --k auto, the one the eigengap picks at the input size (the
        first candidate); a mean over fewer eigenvalues is smaller, so each size's own k would favour
        whichever size's eigengap happens to pick a small k.
        """
        sizes = self._sizes_that_fit_k(sample, sizes)
        best = None
        for size in sizes:
            self._fit_at(sample, size, device, self.seed)  # resolves k at the first size when it was 'auto'
            if len(sizes) == 1:
                return size, self.state_dict()
            cut = relaxed_cut(np.asarray(self.eigenvalues_), int(self.k_))
            self.size_cuts_[f"{size[0]}x{size[1]}"] = round(cut, 6)
            console.info(f"sanet: working size {size[0]}x{size[1]}: relaxed cut {cut:.4f} on {len(sample)} images")
            if best is None or cut < best[0]:
                best = (cut, size, self.state_dict())
        cut, size, state = best
        console.info(f"sanet: working size {size[0]}x{size[1]} (smallest relaxed cut, {cut:.4f})")
        return size, state

    def _sizes_that_fit_k(self, sample: ImageSet, sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The candidate sizes at which the sample still holds k distinct images: shrinking can make
        images that differ alike. The input size always does (`_fit` checked it)."""
        if self.k_ == "auto" or len(sizes) == 1:
            return sizes
        kept = sizes[:1]
        for size in sizes[1:]:
            n_distinct = len(distinct_rows(resample(sample, size).pixels)[0])
            if n_distinct >= int(self.k_):
                kept.append(size)
            else:
                console.info(f"sanet: working size {size[0]}x{size[1]} skipped: the sample holds only "
                             f"{n_distinct} distinct images there, fewer than k = {self.k_}")
        return kept

    def _best_restart(self, sample: ImageSet, size: tuple[int, int], device: torch.device, first: dict[str, Any]):
        """(seed, state) of the restart whose partition has the smallest normalized cut.

        Restarts differ in the units' random subsets and patches, hence in their filters and graph,
        and the partitions they give differ more than k-means restarts on one graph do. Their cuts are
        comparable: each graph is a self-tuning kNN graph of the same images with the same degree.
        """
        restarts, best = self.config.restarts, None
        for restart in range(restarts):
            seed = restart_seed(self.seed, restart)
            if restart:
                self._fit_at(sample, size, device, seed)
            state = self.state_dict() if restart else first
            cut = float(state["cut"])
            if restarts > 1:
                self.restart_cuts_[str(seed)] = round(cut, 6)
                console.info(f"sanet: restart {restart + 1}/{restarts}: normalized cut {cut:.4f}")
            if best is None or cut < best[0]:
                best = (cut, seed, state)
        return best[1], best[2]

    def _fit_at(self, images: ImageSet, size: tuple[int, int], device: torch.device, seed: int,
                layers: list[SpectralLayer] | None = None) -> None:
        """The whole fit with the images resized to `size`, its random draws seeded by `seed`: layers
        (unless given), block table, graph, partition."""
        cfg = self.config
        self.working_size_ = size
        images = self._at_working_size(images)
        first, copy_of, counts = distinct_rows(images.pixels)
        check_distinct(self.k_, len(first))
        if len(first) < len(images):
            console.info(f"sanet: {len(images) - len(first)} image(s) are exact copies of others; "
                         "each distinct image is one node of the graph")
            images = images.subset(first)
        self.copy_of_ = torch.from_numpy(copy_of)
        self.layers_ = layers or self._fit_layers(images.pixels, device, seed)
        console.info(f"sanet: describing {len(images)} images through {len(self.layers_)} layer(s)")
        # A seeded random sample, not the first images: folders are read sorted by path, and
        # class-sorted folders would bias the blank threshold and the PCA axes towards a few classes.
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(images), generator=generator)[: cfg.subset_size].sort().values
        sample = torch.from_numpy(images.pixels[chosen.numpy()]).float() / 255.0
        self.blank_norm_ = blank_threshold(sample, cfg.grid)
        self.train_blocks_ = self._describe(images.pixels, device, cfg.batch_size)
        sample = Blocks(self.train_blocks_.vectors[chosen], self.train_blocks_.state[chosen])
        self.projection_ = Projection.fit(sample, cfg.candidate_dims)
        self.train_coords_: np.ndarray | None = None
        if cfg.blank_blocks == "inferred":
            self.train_blocks_ = self._with_missing(self.train_blocks_, device, training=True)
        dist, idx = self._neighbors(self.train_blocks_, cfg.n_neighbors, device, exclude_self=True)
        affinity = affinity_from_neighbors(dist, idx)
        self.graph_nnz_ = int(affinity.nnz)
        from scipy.sparse.csgraph import connected_components

        self.graph_components_ = int(connected_components(affinity, directed=False)[0])
        if self.graph_components_ > (self.k_ if self.k_ != "auto" else cfg.k_max):
            console.warn(
                f"sanet: the image graph has {self.graph_components_} connected components, more than the clusters "
                "asked for; groups of near-duplicates larger than n_neighbors do this (raise n_neighbors)"
            )
        labels, k, values = spectral_partition(affinity, self.k_, cfg.k_max, cfg.n_init, seed, weights=counts)
        if self.k_ == "auto":
            console.info(f"sanet: --k auto chose k={k} (eigengap)")
            self.k_selection_ = {"criterion": "eigengap", "eigenvalues": [float(v) for v in values]}
        self.k_ = k
        self.eigenvalues_ = [float(v) for v in values]
        labels = refine_cut(affinity, labels, k)
        self.cut_ = normalized_cut(affinity, labels, k)
        self.train_labels_ = torch.from_numpy(labels)

    def _fit_layers(self, pixels: np.ndarray, device: torch.device, seed: int) -> list[SpectralLayer]:
        """Layer by layer: each unit draws its images, maps them through the layers fitted so far, and
        learns its filters from their patches; the layer is all units' filters side by side."""
        cfg = self.config
        generator = torch.Generator().manual_seed(seed)
        layers: list[SpectralLayer] = []
        side = min(pixels.shape[2:])
        for depth in range(cfg.layers):
            patch = cfg.patch_size if depth == 0 else cfg.deep_patch_size
            unit_filters = []
            for unit in range(cfg.units):
                subset = torch.randperm(len(pixels), generator=generator)[: cfg.subset_size].sort().values.numpy()
                maps = iter_maps(pixels[subset], layers, cfg.batch_size, device)
                patches = sample_patches(maps, len(subset), patch, cfg.patches_per_unit, generator)
                if len(patches) <= cfg.n_neighbors + cfg.filters + 1:
                    raise InputError("sanet: the images are almost blank; no patch with structure to learn from")
                filters = spectral_filters(
                    patches, cfg.filters, cfg.n_neighbors, cfg.ridge, seed * 1000 + depth * 100 + unit, cfg.knn_backend
                )
                unit_filters.append(filters.reshape(cfg.filters, -1, patch, patch))
            deeper = depth < cfg.layers - 1 and side // cfg.pool >= cfg.grid * CELL
            layers.append(SpectralLayer(torch.cat(unit_filters), cfg.pool if deeper else 1))
            console.info(f"sanet: layer {depth + 1}: {cfg.units} units x {cfg.filters} filters ({patch}x{patch})")
            if not deeper:
                break
            side //= cfg.pool
        if len(layers) < cfg.layers:
            console.info(
                f"sanet: stopped at {len(layers)} layer(s): pooling a {side}px map would leave fewer than "
                f"{CELL}x{CELL} positions per block of the {cfg.grid}x{cfg.grid} grid"
            )
        return layers

    def _neighbors(self, queries: Blocks, n: int, device: torch.device, exclude_self: bool,
                   rule: BlankRule | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Robust-nearest training images of `queries`, under `rule` (default: the configured one)."""
        cfg = self.config
        searched = searched_candidates(cfg.candidates, n, len(self.train_blocks_), exclude_self)
        return robust_neighbors(
            queries, self.train_blocks_, self.projection_, n, cfg.candidates, cfg.keep_fraction, device,
            cfg.knn_backend, exclude_self=exclude_self, blank_blocks=rule or cfg.blank_blocks,
            data_coords=self._train_coords() if searched < len(self.train_blocks_) else None,
        )

    def _train_coords(self) -> np.ndarray:
        """The training table on the candidate-search axes, projected once per fitted or loaded model
        (marking missing blocks changes block states, not vectors)."""
        if self.train_coords_ is None:
            self.train_coords_ = self.projection_(self.train_blocks_)
        return self.train_coords_

    def _with_missing(self, queries: Blocks, device: torch.device, training: bool) -> Blocks:
        """`queries` with their erased blocks marked, judged by their `n_neighbors` robust-nearest
        training images under the blank-in-either rule (blank_blocks='inferred').

        An image does not vote on its own blanks: the fit leaves each training image out of its own
        neighbours, and for other images an exact copy (distance 0) is left out, so that `assign`
        marks a training image's blocks as the fit did.
        """
        n = self.config.n_neighbors
        if training:
            _, idx = self._neighbors(queries, n, device, exclude_self=True, rule="either")
        else:
            dist, idx = self._neighbors(queries, n + 1, device, exclude_self=False, rule="either")
            idx = np.where(dist[:, :1] == 0, idx[:, 1:], idx[:, :-1])
        return infer_missing(queries, self.train_blocks_, torch.from_numpy(idx))

    def _describe(self, pixels: np.ndarray, device: torch.device, batch_size: int) -> Blocks:
        """Block descriptors of all images, a bounded batch at a time, written into one preallocated
        (N, G, D) table (collecting the batches and concatenating them would hold the table twice)."""
        vectors = state = None
        start = 0
        rows = rows_per_pass(self.layers_, pixels.shape[1:], batch_size)  # local_blocks: about as much map
        with torch.inference_mode():
            for x in float_batches(pixels, rows, device):
                inputs = split_blocks(x, self.config.grid) if self.config.local_blocks else x
                part = describe(x.cpu(), forward(inputs, self.layers_).cpu(), self.config.grid, self.blank_norm_)
                if vectors is None:
                    vectors = torch.empty((len(pixels), *part.vectors.shape[1:]), dtype=part.vectors.dtype)
                    state = torch.empty((len(pixels), *part.state.shape[1:]), dtype=part.state.dtype)
                vectors[start : start + len(x)] = part.vectors
                state[start : start + len(x)] = part.state
                start += len(x)
        return Blocks(vectors, state)

    # --- prediction -----------------------------------------------------------------------
    def _fitted_labels(self) -> np.ndarray:
        """Every training image's cluster: exact copies share their distinct image's node."""
        return self.train_labels_.numpy()[self.copy_of_.numpy()]

    def _predict_proba(self, images: ImageSet) -> np.ndarray:
        """Out-of-sample extension: new images through the fitted filters, then a vote of their
        robust-nearest training images (the same trimmed block distance as the training graph)."""
        cfg = self.config
        images = self._at_working_size(images)
        device = resolve_device(self.device)
        queries = self._describe(images.pixels, device, self.predict_batch_size)
        if cfg.blank_blocks == "inferred":
            queries = self._with_missing(queries, device, training=False)
        dist, idx = self._neighbors(queries, cfg.vote_neighbors, device, exclude_self=False)
        return neighbor_vote(dist, idx, self.train_labels_.numpy(), int(self.k_))

    def fit_info(self) -> dict[str, Any]:
        info = {"layers_used": len(self.layers_), "eigenvalues": self.eigenvalues_, "graph_nnz": self.graph_nnz_,
                "graph_components": self.graph_components_, "working_size": list(self.working_size_),
                "working_size_cuts": self.size_cuts_, "normalized_cut": self.cut_, "restart_cuts": self.restart_cuts_}
        if self.k_selection_:
            info["k_selection"] = self.k_selection_
        return info

    def _at_working_size(self, images: ImageSet) -> ImageSet:
        return images if images.size == tuple(self.working_size_) else resample(images, self.working_size_)

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "layers": [{"filters": layer.filters, "pool": layer.pool} for layer in self.layers_],
            "train_blocks": self.train_blocks_.vectors,
            "train_blank": self.train_blocks_.state,  # block states; the key predates MISSING (old: bool)
            "projection_mean": self.projection_.mean,
            "projection_axes": self.projection_.axes,
            "train_labels": self.train_labels_,
            "copy_of": self.copy_of_,
            "eigenvalues": self.eigenvalues_,
            "graph_nnz": self.graph_nnz_,
            "graph_components": self.graph_components_,
            "blank_norm": self.blank_norm_,
            "working_size": list(self.working_size_),
            "working_size_cuts": self.size_cuts_,
            "restart_cuts": self.restart_cuts_,
            "cut": self.cut_,
            "k_selection": self.k_selection_,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layers_ = _layers(state)
        self.train_blocks_ = Blocks(state["train_blocks"], state["train_blank"])
        self.projection_ = Projection(state["projection_mean"], state["projection_axes"])
        self.train_coords_ = None
        self.train_labels_ = state["train_labels"]
        self.copy_of_ = state.get("copy_of", torch.arange(len(self.train_labels_)))  # older models: no copies
        self.eigenvalues_ = list(state["eigenvalues"])
        self.graph_nnz_ = int(state["graph_nnz"])
        self.graph_components_ = int(state.get("graph_components", 0)) or None
        self.blank_norm_ = float(state["blank_norm"])
        self.working_size_ = tuple(state.get("working_size", self.input_shape_[1:]))  # older models: input size
        self.size_cuts_ = dict(state.get("working_size_cuts", {}))
        self.restart_cuts_ = dict(state.get("restart_cuts", {}))
        self.cut_ = float(state.get("cut", float("nan")))  # older models: not recorded
        self.k_selection_ = dict(state.get("k_selection", {}))
