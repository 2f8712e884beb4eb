"""SA-Net-inspired: the project's own closed-form reconstruction of the deep spectral analysis
network (Wang & Jiang, arXiv 2009.07026) from the paper's abstract; its method section could not be
read, so nothing here is the paper's (docs/methods.md lists where it may differ).

Layers of parallel spectral-analysis units learn convolution filters by spectral regression on patch
graphs (clusterkit.methods.sanet.units); images are compared block by block with a trimmed distance that
occlusion spoils little (clusterkit.methods.sanet.blocks); the final partition is spectral clustering of the
sparse kNN graph of that distance. New images go through the same filters and take a weighted vote
of their robust-nearest training images. docs/methods.md gives the equations and every default's reason.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import torch

from clusterkit import console
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
from clusterkit.config import MethodConfig, Rule, option
from clusterkit.data.loading import resample
from clusterkit.data.samples import ImageSet
from clusterkit.engine.context import FitContext
from clusterkit.engine.device import resolve_device
from clusterkit.engine.predict import float_batches
from clusterkit.methods.base import ClusterMethod
from clusterkit.methods.registry import register
from clusterkit.methods.sanet.blocks import (
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
from clusterkit.methods.sanet.layers import SpectralLayer, fit_layers, forward, rows_per_pass


@dataclass
class SANetConfig(MethodConfig):
    """Defaults are the project's own (the paper's method could not be read); docs/methods.md gives
    what each rests on, and marks those kept after comparing ACC on the built-in digits (issue 19)."""

    layers: int = option(2, "spectral-analysis layers (PCANet's stages)", low=1)
    units: int = option(4, "parallel spectral-analysis units per layer", low=1)
    filters: int = option(8, "filters each unit learns", low=1)
    patch_size: int = option(5, "first-layer patch side in pixels (odd: a centred patch)", low=1, odd=True)
    deep_patch_size: int = option(
        3, "patch side in later layers, whose input has 2 x units x filters channels", low=1, odd=True
    )
    pool: int = option(2, "average pooling between layers", low=1)
    subset_size: int = option(2000, "images a unit draws its patches from (also the sample for working_size=auto)")
    patches_per_unit: int = option(8000, "patches sampled from them for the unit's patch graph")
    n_neighbors: int = option(10, "kNN of every graph (patch graphs and the image graph)", low=2)
    ridge: float = option(
        1e-3,
        "spectral-regression penalty, a fraction of tr(P^T P) / D; only has to make it invertible",
        low=0,
        low_open=True,
    )
    grid: int = option(4, "blocks per side of the last map compared in the image distance", low=1)
    keep_fraction: float = option(
        0.75,
        "share of each pair's informative blocks (the most similar) that count in the distance",
        low=0,
        high=1,
        low_open=True,
    )
    blank_blocks: Literal["both", "either", "inferred"] = option(
        "both",
        "a block leaves a pair's comparison when blank in both images, in either, or in either where inferred erased",
    )
    local_blocks: bool = option(
        False, "each block goes through the layers on its own, so an occluder spoils only its blocks"
    )
    candidates: int = option(50, "neighbours from the untrimmed distance that are re-ranked robustly", low=1)
    candidate_dims: int = option(64, "principal components the candidate search runs on", low=1)
    vote_neighbors: int = option(10, "training images voting for the cluster of a new image", low=1)
    knn_backend: Literal["auto", "sklearn", "faiss"] = option(
        "auto", "nearest-neighbour search; 'auto' uses FAISS when installed"
    )
    batch_size: int = option(256, "images per forward pass", low=1)
    n_init: int = option(10, "k-means restarts of the spectral partition", low=1)
    k_max: int = option(20, "largest k tried by --k auto (eigengap)", low=2)
    working_size: Literal["auto"] | int = option(
        "auto",
        "shorter side in px images are resized to before the layers; 'auto' keeps the size of smallest normalized cut",
    )
    restarts: int = option(4, "whole fits with other random draws; the one of smallest normalized cut is kept", low=1)

    rules = (
        Rule("subset_size", ">=", "n_neighbors", factor=2),
        Rule("patches_per_unit", ">=", "n_neighbors", factor=4),
        Rule("working_size", ">=", "grid", unless=("auto",)),
    )


def restart_seed(seed: int, restart: int) -> int:
    """Restart 0 keeps the run's seed, so that one restart is the plain fit; the others draw theirs
    from it, below 2^30 (the seed also goes to scikit-learn, whose random_state must be below 2^32)."""
    return seed if restart == 0 else int(np.random.SeedSequence([seed, restart]).generate_state(1)[0] >> 2)


def _layers(state: dict[str, Any]) -> list[SpectralLayer]:
    return [SpectralLayer(layer["filters"], int(layer["pool"])) for layer in state["layers"]]


def scaled(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """(height, width) times `factor`, rounded, at least one pixel."""
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def working_sizes(size: tuple[int, int], config: SANetConfig) -> list[tuple[int, int]]:
    """The configured working size, or (auto) the input size and its halvings down to 2 x grid px:
    two pixels a block. With `local_blocks`, down to grid x patch_size px only: a block that goes
    through the filters on its own must be at least as large as the first-layer patch."""
    if config.working_size != "auto":
        return [scaled(size, config.working_size / min(size))]
    smallest = config.grid * (config.patch_size if config.local_blocks else 2)
    sizes, factor = [size], 2
    while min(size) // factor >= smallest:
        sizes.append(scaled(size, 1 / factor))
        factor *= 2
    return sizes


def at_size(images: ImageSet, size: tuple[int, int]) -> ImageSet:
    """`images` resized to `size` (a working size), unless they already are that size."""
    return images if images.size == tuple(size) else resample(images, size)


def describe_images(
    pixels: np.ndarray,
    layers: list[SpectralLayer],
    blank_norm: float,
    config: SANetConfig,
    device: torch.device,
    batch_size: int,
) -> Blocks:
    """Block descriptors of all images through `layers`, a bounded batch at a time, written into one
    preallocated (N, G, D) table (collecting the batches and concatenating them would hold the table
    twice)."""
    vectors = state = None
    start = 0
    rows = rows_per_pass(layers, pixels.shape[1:], batch_size)  # local_blocks: about as much map
    with torch.inference_mode():
        for x in float_batches(pixels, rows, device):
            inputs = split_blocks(x, config.grid) if config.local_blocks else x
            part = describe(x.cpu(), forward(inputs, layers).cpu(), config.grid, blank_norm)
            if vectors is None:
                vectors = torch.empty((len(pixels), *part.vectors.shape[1:]), dtype=part.vectors.dtype)
                state = torch.empty((len(pixels), *part.state.shape[1:]), dtype=part.state.dtype)
            vectors[start : start + len(x)] = part.vectors
            state[start : start + len(x)] = part.state
            start += len(x)
    return Blocks(vectors, state)


@dataclass(frozen=True)
class TrainingTable:
    """The training images' block table made searchable: the candidate-search axes fitted on it and
    the table's coordinates on them, projected once per fit (marking erased blocks changes block
    states, not vectors, so the coordinates hold for the marked table too)."""

    blocks: Blocks
    projection: Projection
    coords: np.ndarray

    def neighbors(
        self,
        queries: Blocks,
        n: int,
        config: SANetConfig,
        device: torch.device,
        exclude_self: bool,
        rule: BlankRule | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Robust-nearest training images of `queries`, under `rule` (default: the configured one)."""
        searched = searched_candidates(config.candidates, n, len(self.blocks), exclude_self)
        return robust_neighbors(
            queries,
            self.blocks,
            self.projection,
            n,
            config.candidates,
            config.keep_fraction,
            device,
            config.knn_backend,
            exclude_self=exclude_self,
            blank_blocks=rule or config.blank_blocks,
            data_coords=self.coords if searched < len(self.blocks) else None,
        )


def with_missing(
    queries: Blocks, table: TrainingTable, config: SANetConfig, device: torch.device, training: bool
) -> Blocks:
    """`queries` with their erased blocks marked, judged by their `n_neighbors` robust-nearest
    training images under the blank-in-either rule (blank_blocks='inferred'); `training`: the queries
    are the table's own images.

    An image does not vote on its own blanks: the fit leaves each training image out of its own
    neighbours, and for other images an exact copy (distance 0) is left out, so that `assign`
    marks a training image's blocks as the fit did.
    """
    n = config.n_neighbors
    if training:
        _, idx = table.neighbors(queries, n, config, device, exclude_self=True, rule="either")
    else:
        dist, idx = table.neighbors(queries, n + 1, config, device, exclude_self=False, rule="either")
        idx = np.where(dist[:, :1] == 0, idx[:, 1:], idx[:, :-1])
    return infer_missing(queries, table.blocks, torch.from_numpy(idx))


@dataclass(frozen=True, eq=False)
class SANetFit:
    """The learned state of one fit (one working size, one seed). The estimator keeps the fit its
    selection chose as attributes of the same names with a trailing `_` (`k` -> `k_`). Fits are
    compared by their cuts (eq=False: the fields hold tensors)."""

    working_size: tuple[int, int]  # the size images are resized to before the layers
    copy_of: torch.Tensor  # each training image's distinct image (its node in the graph)
    layers: list[SpectralLayer]
    blank_norm: float  # block norm below which a block is blank
    train_blocks: Blocks  # the distinct images' block table (erased blocks marked with 'inferred')
    projection: Projection  # the candidate-search axes
    train_coords: np.ndarray  # train_blocks on those axes
    graph_nnz: int
    graph_components: int
    k_selection: dict[str, Any]  # the eigenvalues --k auto chose k from; {} when k was given
    k: int
    eigenvalues: list[float]
    cut: float  # the partition's normalized cut
    train_labels: torch.Tensor  # each distinct image's cluster

    @property
    def table(self) -> TrainingTable:
        return TrainingTable(self.train_blocks, self.projection, self.train_coords)

    @property
    def relaxed_cut(self) -> float:
        """The mean of the image graph's first k Laplacian eigenvalues: how clear its k groups are."""
        return relaxed_cut(np.asarray(self.eigenvalues), self.k)


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
        sizes = working_sizes(images.size, cfg)
        if len(sizes) == 1 and cfg.restarts == 1:
            self._keep(self._fit_once(images, sizes[0], device, self.seed, self.k_), size_cuts={}, restart_cuts={})
            return
        first, _, _ = distinct_rows(images.pixels)  # the sample is drawn from distinct images: copies add nothing
        check_distinct(self.k_, len(first))
        generator = torch.Generator().manual_seed(self.seed)
        chosen = first[torch.randperm(len(first), generator=generator)[: cfg.subset_size].sort().values.numpy()]
        sample = images if len(chosen) == len(images) else images.subset(chosen)
        best, size_cuts = self._best_size(sample, sizes, device)
        seed, best, restart_cuts = self._best_restart(sample, best, device)
        # The winner's filters, which is what the restarts chose between; the rest on all images.
        if sample is not images:
            best = self._fit_once(images, best.working_size, device, seed, best.k, best.k_selection, layers=best.layers)
        self._keep(best, size_cuts, restart_cuts)

    def _keep(self, fit: SANetFit, size_cuts: dict[str, float], restart_cuts: dict[str, float]) -> None:
        """`fit` as the estimator's learned state: each field as the attribute of its name and `_`."""
        for field in fields(SANetFit):
            setattr(self, f"{field.name}_", getattr(fit, field.name))
        self.size_cuts_ = size_cuts  # relaxed cut per candidate size, when there were several
        self.restart_cuts_ = restart_cuts  # normalized cut per restart's seed, when there were several

    def fitted_state(self) -> SANetFit:
        """The learned state of the fitted (or loaded) estimator as a fit value."""
        self.check_fitted()
        return SANetFit(**{field.name: getattr(self, f"{field.name}_") for field in fields(SANetFit)})

    def _best_size(
        self, sample: ImageSet, sizes: list[tuple[int, int]], device: torch.device
    ) -> tuple[SANetFit, dict[str, float]]:
        """The fit (at the run's seed) at the candidate size whose image graph has the smallest relaxed
        cut, and each size's cut when there are several.

        Cuts are compared at one k: with --k auto, the one the eigengap picks at the input size (the
        first candidate); a mean over fewer eigenvalues is smaller, so each size's own k would favour
        whichever size's eigengap happens to pick a small k.
        """
        sizes = self._sizes_that_fit_k(sample, sizes)
        k, k_selection = self.k_, {}
        best, cuts = None, {}
        for size in sizes:
            fit = self._fit_once(sample, size, device, self.seed, k, k_selection)
            if len(sizes) == 1:
                return fit, cuts
            k, k_selection = fit.k, fit.k_selection  # --k auto: chosen at the first size, kept for the others
            cut = fit.relaxed_cut
            cuts[f"{size[0]}x{size[1]}"] = round(cut, 6)
            console.info(f"sanet: working size {size[0]}x{size[1]}: relaxed cut {cut:.4f} on {len(sample)} images")
            if best is None or cut < best.relaxed_cut:
                best = fit
        size = best.working_size
        console.info(f"sanet: working size {size[0]}x{size[1]} (smallest relaxed cut, {best.relaxed_cut:.4f})")
        return best, cuts

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
                console.info(
                    f"sanet: working size {size[0]}x{size[1]} skipped: the sample holds only "
                    f"{n_distinct} distinct images there, fewer than k = {self.k_}"
                )
        return kept

    def _best_restart(
        self, sample: ImageSet, first: SANetFit, device: torch.device
    ) -> tuple[int, SANetFit, dict[str, float]]:
        """(seed, fit) of the restart whose partition has the smallest normalized cut, `first` (the
        fit at the run's seed) being restart 0, and each restart's cut by its seed when there are several.

        Restarts differ in the units' random subsets and patches, hence in their filters and graph,
        and the partitions they give differ more than k-means restarts on one graph do. Their cuts are
        comparable: each graph is a self-tuning kNN graph of the same images with the same degree.
        """
        restarts = self.config.restarts
        if restarts == 1:
            return self.seed, first, {}
        best, cuts = None, {}
        for restart in range(restarts):
            seed = restart_seed(self.seed, restart)
            fit = (
                self._fit_once(sample, first.working_size, device, seed, first.k, first.k_selection)
                if restart
                else first
            )
            cuts[str(seed)] = round(fit.cut, 6)
            console.info(f"sanet: restart {restart + 1}/{restarts}: normalized cut {fit.cut:.4f}")
            if best is None or fit.cut < best[1].cut:
                best = (seed, fit)
        return *best, cuts

    def _fit_once(
        self,
        images: ImageSet,
        size: tuple[int, int],
        device: torch.device,
        seed: int,
        k: int | Literal["auto"],
        k_selection: dict[str, Any] | None = None,
        layers: list[SpectralLayer] | None = None,
    ) -> SANetFit:
        """The whole fit with the images resized to `size`, its random draws seeded by `seed`: layers
        (unless given), block table, graph, partition into `k` clusters. k='auto': the eigengap of this
        fit's graph picks k; a k picked so by an earlier fit comes with the eigenvalues it was picked
        from (`k_selection`), which this fit keeps."""
        cfg = self.config
        images = at_size(images, size)
        first, copy_of, counts = distinct_rows(images.pixels)
        check_distinct(k, len(first))
        if len(first) < len(images):
            console.info(
                f"sanet: {len(images) - len(first)} image(s) are exact copies of others; "
                "each distinct image is one node of the graph"
            )
            images = images.subset(first)
        if layers is None:
            layers = fit_layers(images.pixels, cfg, device, seed)
        console.info(f"sanet: describing {len(images)} images through {len(layers)} layer(s)")
        # A seeded random sample, not the first images: folders are read sorted by path, and
        # class-sorted folders would bias the blank threshold and the PCA axes towards a few classes.
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(images), generator=generator)[: cfg.subset_size].sort().values
        sample = torch.from_numpy(images.pixels[chosen.numpy()]).float() / 255.0
        blank_norm = blank_threshold(sample, cfg.grid)
        blocks = describe_images(images.pixels, layers, blank_norm, cfg, device, cfg.batch_size)
        projection = Projection.fit(Blocks(blocks.vectors[chosen], blocks.state[chosen]), cfg.candidate_dims)
        table = TrainingTable(blocks, projection, projection(blocks))
        if cfg.blank_blocks == "inferred":
            table = replace(table, blocks=with_missing(table.blocks, table, cfg, device, training=True))
        dist, idx = table.neighbors(table.blocks, cfg.n_neighbors, cfg, device, exclude_self=True)
        affinity = affinity_from_neighbors(dist, idx)
        from scipy.sparse.csgraph import connected_components

        components = int(connected_components(affinity, directed=False)[0])
        if components > (k if k != "auto" else cfg.k_max):
            console.warn(
                f"sanet: the image graph has {components} connected components, more than the clusters "
                "asked for; groups of near-duplicates larger than n_neighbors do this (raise n_neighbors)"
            )
        labels, chosen_k, values = spectral_partition(affinity, k, cfg.k_max, cfg.n_init, seed, weights=counts)
        if k == "auto":
            console.info(f"sanet: --k auto chose k={chosen_k} (eigengap)")
            k_selection = {"criterion": "eigengap", "eigenvalues": [float(v) for v in values]}
        labels = refine_cut(affinity, labels, chosen_k)
        return SANetFit(
            working_size=size,
            copy_of=torch.from_numpy(copy_of),
            layers=layers,
            blank_norm=blank_norm,
            train_blocks=table.blocks,
            projection=projection,
            train_coords=table.coords,
            graph_nnz=int(affinity.nnz),
            graph_components=components,
            k_selection=k_selection or {},
            k=chosen_k,
            eigenvalues=[float(v) for v in values],
            cut=normalized_cut(affinity, labels, chosen_k),
            train_labels=torch.from_numpy(labels),
        )

    # --- prediction -----------------------------------------------------------------------
    def _fitted_labels(self) -> np.ndarray:
        """Every training image's cluster: exact copies share their distinct image's node."""
        return self.train_labels_.numpy()[self.copy_of_.numpy()]

    def _predict_proba(self, images: ImageSet) -> np.ndarray:
        """Out-of-sample extension: new images through the fitted filters, then a vote of their
        robust-nearest training images (the same trimmed block distance as the training graph)."""
        cfg, fit = self.config, self.fitted_state()
        images = at_size(images, fit.working_size)
        device = resolve_device(self.device)
        queries = describe_images(images.pixels, fit.layers, fit.blank_norm, cfg, device, self.predict_batch_size)
        if cfg.blank_blocks == "inferred":
            queries = with_missing(queries, fit.table, cfg, device, training=False)
        dist, idx = fit.table.neighbors(queries, cfg.vote_neighbors, cfg, device, exclude_self=False)
        return neighbor_vote(dist, idx, fit.train_labels.numpy(), int(fit.k))

    def _embedding(self, images: ImageSet) -> np.ndarray:
        """The images' block descriptors through the fitted filters: what the image graph compares."""
        cfg, fit = self.config, self.fitted_state()
        images = at_size(images, fit.working_size)
        queries = describe_images(
            images.pixels, fit.layers, fit.blank_norm, cfg, resolve_device(self.device), self.predict_batch_size
        )
        return queries.vectors.reshape(len(images), -1).numpy().astype(np.float32)

    def fit_info(self) -> dict[str, Any]:
        info = {
            "layers_used": len(self.layers_),
            "eigenvalues": self.eigenvalues_,
            "graph_nnz": self.graph_nnz_,
            "graph_components": self.graph_components_,
            "working_size": list(self.working_size_),
            "working_size_cuts": self.size_cuts_,
            "normalized_cut": self.cut_,
            "restart_cuts": self.restart_cuts_,
        }
        if self.k_selection_:
            info["k_selection"] = self.k_selection_
        return info

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "layers": [{"filters": layer.filters, "pool": layer.pool} for layer in self.layers_],
            "train_blocks": self.train_blocks_.vectors,
            "train_blank": self.train_blocks_.state,  # block states (INK, BLANK, MISSING)
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
        """The saved fit; `k_` (saved beside the state) is already set."""
        train_blocks = Blocks(state["train_blocks"], state["train_blank"])
        projection = Projection(state["projection_mean"], state["projection_axes"])
        fit = SANetFit(
            working_size=tuple(state["working_size"]),
            copy_of=state["copy_of"],
            layers=_layers(state),
            blank_norm=float(state["blank_norm"]),
            train_blocks=train_blocks,
            projection=projection,
            train_coords=projection(train_blocks),
            graph_nnz=int(state["graph_nnz"]),
            graph_components=int(state["graph_components"]),
            k_selection=dict(state["k_selection"]),
            k=int(self.k_),
            eigenvalues=list(state["eigenvalues"]),
            cut=float(state["cut"]),
            train_labels=state["train_labels"],
        )
        self._keep(fit, dict(state["working_size_cuts"]), dict(state["restart_cuts"]))

    def _check_state(self) -> None:
        """Every distinct training image has a cluster below k, and every training image a node."""
        labels, n_nodes = self.train_labels_, len(self.train_blocks_)
        if len(labels) != n_nodes:
            raise ValueError(f"train_labels hold {len(labels)} clusters for {n_nodes} images")
        if n_nodes and not 0 <= int(labels.min()) <= int(labels.max()) < int(self.k_):
            raise ValueError(f"train_labels outside 0..{int(self.k_) - 1}")
        if len(self.copy_of_) and int(self.copy_of_.max()) >= n_nodes:
            raise ValueError("copy_of names images the training table does not hold")
