"""Classical baselines on raw pixels, their PCA, or a pretrained backbone's features (`--backbone`):
k-means, spectral clustering, Gaussian mixture.

Every deep method must beat these on the benchmarks, so they are honest, well-configured baselines
(scikit-learn's estimators, k-means++ with 10 restarts, a sparse self-tuning kNN graph).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from clusterkit import console
from clusterkit.algorithms.neighbors import knn_query
from clusterkit.algorithms.spectral import (
    check_distinct,
    distinct_rows,
    knn_affinity,
    neighbor_vote,
    spectral_partition,
)
from clusterkit.config import MethodConfig, option
from clusterkit.data.samples import Samples
from clusterkit.engine.context import FitContext
from clusterkit.errors import InputError
from clusterkit.methods.base import ClusterMethod
from clusterkit.methods.registry import register

PROBA_CHUNK = 1 << 23  # floats in one k-means scoring temporary (32 MB in float32; two at a time)
AUTO_K_SAMPLE = 3000  # images used to score each candidate k: keeps `--k auto` fast on large sets


@dataclass
class ClassicalConfig(MethodConfig):
    """Defaults are scikit-learn's usual ones (k-means++ with 10 restarts) unless docs/methods.md says otherwise."""

    features: Literal["pixels", "pca"] = option(
        "pixels",
        "'pixels' (the flattened image; with --backbone, its features as they are) or 'pca' (their first pca_components)",
    )
    pca_components: int = option(50, "principal components kept with features=pca", low=1)
    k_max: int = option(20, "largest k tried by --k auto", low=2)
    n_init: int = option(10, "k-means restarts, the best one kept (gmm: EM restarts, a fifth of it)", low=1)


class _VectorFeatures:
    """Samples as vectors (flattened pixels, or a backbone's features), optionally projected on
    principal components learned at fit time."""

    def __init__(self, config: ClassicalConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None

    def fit_transform(self, samples: Samples) -> np.ndarray:
        x = samples.flat()
        if self.config.features == "pca":
            from sklearn.decomposition import PCA

            n = min(self.config.pca_components, x.shape[0], x.shape[1])
            with np.errstate(invalid="ignore", divide="ignore"):  # identical images: variance ratios 0/0, unused
                pca = PCA(n_components=n, random_state=self.seed).fit(x)
            self.mean_, self.components_ = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
        return self.transform_flat(x)

    def transform(self, samples: Samples) -> np.ndarray:
        return self.transform_flat(samples.flat())

    def transform_flat(self, x: np.ndarray) -> np.ndarray:
        if self.components_ is None:
            return x
        return (x - self.mean_) @ self.components_.T

    def state(self) -> dict[str, Any]:
        if self.components_ is None:
            return {}
        return {"pca_mean": torch.from_numpy(self.mean_), "pca_components": torch.from_numpy(self.components_)}

    def load(self, state: dict[str, Any]) -> None:
        if "pca_components" in state:
            self.mean_ = state["pca_mean"].numpy()
            self.components_ = state["pca_components"].numpy()


class _ClassicalMethod(ClusterMethod):
    """Shared plumbing: features, `--k auto` bookkeeping, persistence of the feature map."""

    Config = ClassicalConfig
    input_kinds = ("pixels", "features", "volumes")
    config: ClassicalConfig

    def __init__(self, k: int | str | None = 10, seed: int = 0, device: str = "auto", **options: Any) -> None:
        super().__init__(k=k, seed=seed, device=device, **options)
        self.features_ = _VectorFeatures(self.config, seed)
        self.k_selection_: dict[str, Any] = {}

    def _fit(self, samples: Samples, context: FitContext) -> None:
        x = self.features_.fit_transform(samples)
        # Distinct on the samples, not their PCA: projections of identical images can differ in
        # float noise. `ClusterMethod.fit` has refused a k beyond the distinct samples already.
        self._fit_features(x, distinct_rows(samples.array))

    def _embedding(self, samples: Samples) -> np.ndarray:
        """The vectors the method clusters: the samples after its scaling and PCA, if any."""
        return self.features_.transform(samples)

    def _set_auto_k(self, k: int, selection: dict[str, Any]) -> None:
        self.k_, self.k_selection_ = k, selection
        console.info(f"{self.name}: --k auto chose k={k} ({selection['criterion']})")

    def _candidate_ks(self, n: int, distinct: int) -> range:
        """k = 2 .. k_max for a sample of `n` images of which `distinct` differ, and no more than the
        distinct images: more clusters than distinct points can only be empty (and make every
        criterion, and scikit-learn, complain)."""
        k_max = min(self.config.k_max, n - 1)
        if k_max < 2:
            raise InputError(f"--k auto needs at least 3 images, got {n}")
        if distinct < 2:
            raise InputError("--k auto: the images are all alike, so there is no k to choose; give --k")
        return range(2, min(k_max, distinct) + 1)

    @abstractmethod
    def _fit_features(self, x: np.ndarray, distinct: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Fit on the feature matrix; resolves `self.k_` first when it is 'auto'. `distinct` is
        `distinct_rows(x)`, for the methods that cluster distinct points."""

    def _predict_proba(self, images: Samples) -> np.ndarray:
        """Scored once per distinct image and copied to its duplicates: byte-identical images get the
        same row (their PCA projections can differ in float noise, depending on their position)."""
        first, copy_of, _ = distinct_rows(images.array)
        if len(first) == len(images):  # no duplicates: `first` is every row in order
            return self._proba_features(self.features_.transform(images))
        return self._proba_features(self.features_.transform(images.subset(first)))[copy_of]

    @abstractmethod
    def _proba_features(self, x: np.ndarray) -> np.ndarray: ...

    def fit_info(self) -> dict[str, Any]:
        return {"k_selection": self.k_selection_} if self.k_selection_ else {}

    def state_dict(self) -> dict[str, Any]:
        return {"features": self.features_.state(), "k_selection": self.k_selection_, **self._model_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.features_.load(state["features"])
        self.k_selection_ = state.get("k_selection", {})
        self._load_model_state(state)

    def _feature_dim(self) -> int:
        """The feature length that the recorded input shape implies (checking the PCA's own shapes)."""
        pixels = int(np.prod(self.input_shape_))
        components, mean = self.features_.components_, self.features_.mean_
        if components is None:
            return pixels
        if components.ndim != 2 or components.shape[1] != pixels or mean.shape != (pixels,):
            raise ValueError(f"PCA of shape {tuple(components.shape)} for inputs of {pixels} values")
        return components.shape[0]

    def _check_shape_of(self, what: str, array: Any, shape: tuple[int, ...]) -> None:
        if tuple(array.shape) != shape:
            raise ValueError(f"{what} of shape {tuple(array.shape)}, expected {shape} (k {self.k_})")

    @abstractmethod
    def _model_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load_model_state(self, state: dict[str, Any]) -> None: ...

    def _auto_k_sample(self, x: np.ndarray, copy_of: np.ndarray) -> tuple[np.ndarray, range]:
        """The features `--k auto` scores its candidates on (all, or a seeded AUTO_K_SAMPLE of them)
        and the candidate ks, bounded by the distinct images among them, counted on the pixels
        (`copy_of`: each image's distinct image), as PCA noise makes copies look distinct."""
        rows = np.arange(len(x))
        if len(x) > AUTO_K_SAMPLE:
            rows = np.random.default_rng(self.seed).choice(len(x), AUTO_K_SAMPLE, replace=False)
        return x[rows], self._candidate_ks(len(rows), len(np.unique(copy_of[rows])))


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@register
class KMeansMethod(_ClassicalMethod):
    name = "kmeans"
    description = "k-means (k-means++, 10 restarts) on pixels, PCA or --backbone features; --k auto by silhouette"
    supports_auto_k = True

    def _choose_k(self, x: np.ndarray, copy_of: np.ndarray) -> tuple[int, dict[str, Any]]:
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        sample, candidates = self._auto_k_sample(x, copy_of)
        scores = {}
        for k in candidates:
            labels = KMeans(k, n_init=3, random_state=self.seed).fit_predict(sample)
            scores[k] = float(silhouette_score(sample, labels, random_state=self.seed))
        best = max(scores, key=scores.get)
        return best, {"criterion": "silhouette", "scores": {str(k): s for k, s in scores.items()}}

    def _fit_features(self, x: np.ndarray, distinct: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        from sklearn.cluster import KMeans

        if self.k_ == "auto":
            self._set_auto_k(*self._choose_k(x, distinct[1]))
        km = KMeans(self.k_, n_init=self.config.n_init, random_state=self.seed).fit(x)
        self.centers_ = km.cluster_centers_.astype(np.float32)
        # Temperature of the soft assignment: the mean squared distance to the own centre.
        self.temperature_ = float(max(km.inertia_ / len(x), 1e-12))

    def _proba_features(self, x: np.ndarray) -> np.ndarray:
        k, dim = self.centers_.shape
        # Rows per chunk: each (rows, k, D) temporary (differences, then squares) stays within
        # PROBA_CHUNK floats, whatever N, k and D; chunking by rows leaves every row's sum as it was.
        rows = max(1, PROBA_CHUNK // max(1, k * dim))
        direct = len(x) * k < 1e7  # the direct differences (exact for near points); else the expansion
        d2 = np.empty((len(x), k), dtype=np.result_type(x, self.centers_))
        center_norms = None if direct else (self.centers_**2).sum(1)[None]
        for start in range(0, len(x), rows):
            block = x[start : start + rows]
            if direct:
                d2[start : start + rows] = ((block[:, None, :] - self.centers_[None]) ** 2).sum(-1)
            else:
                d2[start : start + rows] = (block**2).sum(1)[:, None] - 2 * block @ self.centers_.T + center_norms
        return _softmax(-d2 / self.temperature_)

    def _check_state(self) -> None:
        self._check_shape_of("centers", self.centers_, (int(self.k_), self._feature_dim()))

    def _model_state(self) -> dict[str, Any]:
        return {"centers": torch.from_numpy(self.centers_), "temperature": self.temperature_}

    def _load_model_state(self, state: dict[str, Any]) -> None:
        self.centers_ = state["centers"].numpy()
        self.temperature_ = state["temperature"]


@dataclass
class SpectralConfig(ClassicalConfig):
    """A sparse self-tuning kNN graph; 10 neighbours is the usual choice for a few thousand images."""

    n_neighbors: int = option(10, "size of the kNN graph", low=1)
    vote_neighbors: int = option(10, "training neighbours that vote on the cluster of a new image", low=1)


@register
class SpectralMethod(_ClassicalMethod):
    name = "spectral"
    description = "spectral clustering on a sparse self-tuning kNN graph; --k auto by eigengap"
    supports_auto_k = True
    Config = SpectralConfig
    config: SpectralConfig

    def _fit_features(self, x: np.ndarray, distinct: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        first, copy_of, counts = distinct
        if self.k_ == "auto":  # the eigengap needs 4 distinct images (a given k: checked by `fit`)
            check_distinct(self.k_, len(first))
        affinity = knn_affinity(x[first], min(self.config.n_neighbors, len(first) - 1))
        labels, k, values = spectral_partition(
            affinity, self.k_, self.config.k_max, self.config.n_init, self.seed, weights=counts
        )
        if self.k_ == "auto":
            self._set_auto_k(k, {"criterion": "eigengap", "eigenvalues": [float(v) for v in values]})
        self.train_features_ = x.astype(np.float32)
        self.train_labels_ = labels[copy_of]

    def _fitted_labels(self) -> np.ndarray:
        return self.train_labels_

    def _proba_features(self, x: np.ndarray) -> np.ndarray:
        """Out-of-sample extension: a Gaussian-weighted vote of the nearest training images.

        An image identical to a training image (distance 0) takes that image's cluster, so assigning
        the training set reproduces the fitted partition exactly.
        """
        dist, idx = knn_query(self.train_features_, x, self.config.vote_neighbors)
        return neighbor_vote(dist, idx, self.train_labels_, self.k_)

    def _model_state(self) -> dict[str, Any]:
        return {
            "train_features": torch.from_numpy(self.train_features_),
            "train_labels": torch.from_numpy(self.train_labels_),
        }

    def _load_model_state(self, state: dict[str, Any]) -> None:
        self.train_features_ = state["train_features"].numpy()
        self.train_labels_ = state["train_labels"].numpy()

    def _check_state(self) -> None:
        n = len(self.train_features_)
        self._check_shape_of("train_features", self.train_features_, (n, self._feature_dim()))
        self._check_shape_of("train_labels", self.train_labels_, (n,))
        if n and not 0 <= self.train_labels_.min() <= self.train_labels_.max() < int(self.k_):
            raise ValueError(f"train_labels outside 0..{int(self.k_) - 1}")


@dataclass
class GMMConfig(ClassicalConfig):
    """A full-covariance mixture needs far fewer dimensions than pixels: PCA by default."""

    features: Literal["pixels", "pca"] = option(
        "pca",
        "'pixels' (the flattened image; with --backbone, its features as they are) or 'pca' (their first pca_components)",
    )
    covariance_type: Literal["full", "diag", "tied", "spherical"] = option(
        "full", "scikit-learn's covariance_type of each component"
    )


@register
class GMMMethod(_ClassicalMethod):
    name = "gmm"
    description = "Gaussian mixture (EM) on PCA of the pixels or --backbone features; --k auto by BIC"
    supports_auto_k = True
    Config = GMMConfig
    config: GMMConfig

    def _mixture(self, k: int, n_init: int):
        from sklearn.mixture import GaussianMixture

        return GaussianMixture(
            k, covariance_type=self.config.covariance_type, n_init=n_init, reg_covar=1e-4, random_state=self.seed
        )

    def _choose_k(self, x: np.ndarray, copy_of: np.ndarray) -> tuple[int, dict[str, Any]]:
        sample, candidates = self._auto_k_sample(x, copy_of)
        scores = {k: float(self._mixture(k, 1).fit(sample).bic(sample)) for k in candidates}
        best = min(scores, key=scores.get)
        return best, {"criterion": "bic", "scores": {str(k): s for k, s in scores.items()}}

    def _fit_features(self, x: np.ndarray, distinct: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        if self.k_ == "auto":
            self._set_auto_k(*self._choose_k(x, distinct[1]))
        self.gmm_ = self._mixture(self.k_, max(1, self.config.n_init // 5)).fit(x)

    def _proba_features(self, x: np.ndarray) -> np.ndarray:
        return self.gmm_.predict_proba(x).astype(np.float32)

    _GMM_FIELDS = ("weights_", "means_", "covariances_", "precisions_cholesky_")

    def _model_state(self) -> dict[str, Any]:
        return {f: torch.from_numpy(np.asarray(getattr(self.gmm_, f))) for f in self._GMM_FIELDS}

    def _load_model_state(self, state: dict[str, Any]) -> None:
        self.gmm_ = self._mixture(self.k_, 1)
        for f in self._GMM_FIELDS:
            setattr(self.gmm_, f, state[f].numpy())
        self.gmm_.precisions_ = None  # not used by predict_proba

    def _check_state(self) -> None:
        k, dim = int(self.k_), self._feature_dim()
        self._check_shape_of("weights", self.gmm_.weights_, (k,))
        self._check_shape_of("means", self.gmm_.means_, (k, dim))
