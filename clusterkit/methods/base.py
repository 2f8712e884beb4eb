"""The interface every method follows (scikit-learn's estimator conventions).

The constructor only stores hyper-parameters; `fit` learns and returns self; learned state lives in
attributes ending in `_` (`labels_`: the training samples' clusters, as scikit-learn's);
`state_dict`/`load_state_dict` hold tensors and plain data only, so that checkpoints load with
`torch.load(weights_only=True)`. Public methods validate, private ones (`_fit`, `_predict_proba`)
compute.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from clusterkit.algorithms.spectral import check_distinct, distinct_rows
from clusterkit.config import MethodConfig, build_config, config_to_dict
from clusterkit.data.samples import SampleKind, Samples
from clusterkit.engine.context import FitContext
from clusterkit.engine.device import check_device
from clusterkit.errors import InputError
from clusterkit.features.backbones import check_same_backbone

# Where each kind of samples comes from, for the error that names what a model takes.
_LOADERS = {
    "pixels": "clusterkit.load_images",
    "features": "clusterkit.features",
    "volumes": "clusterkit.data.loading.load_source",
}
SEED_MAX = 2**32 - 1  # scikit-learn's random_state range, [0, 2**32 - 1]


def check_seed(seed: Any) -> int:
    """The seed as an int; InputError unless it is an integer in [0, 2**32 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
        raise InputError(f"--seed must be an integer in [0, {SEED_MAX}], got {repr(seed)[:40]}")
    return int(seed)


def net_state(net: Any) -> dict[str, Any]:
    """A network's weights as the checkpoint's `state`: CPU tensors under "net"."""
    return {"net": {key: value.detach().cpu() for key, value in net.state_dict().items()}}


def load_net(net: Any, state: dict[str, Any]) -> Any:
    """`net` with the weights of `net_state`, strictly (another shape is refused), in eval mode."""
    net.load_state_dict(state["net"])
    return net.eval()


class ClusterMethod(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    # The kinds of samples `fit` takes (pixels; features of a pretrained backbone for the methods
    # that cluster vectors); `predict_proba` takes the kind, and backbone, it was fitted on.
    input_kinds: ClassVar[tuple[SampleKind, ...]] = ("pixels",)
    uses_engine: ClassVar[bool] = False  # trains in epochs through the engine: history.jsonl, --resume
    supports_auto_k: ClassVar[bool] = False
    Config: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, k: int | str | None = 10, seed: int = 0, device: str = "auto", **options: Any) -> None:
        check_device(device)
        self.k = k
        self.seed = check_seed(seed)
        self.device = device
        self.config = build_config(self.Config, options, self.name)
        self.predict_batch_size = 256  # samples per forward pass when predicting (`assign --batch-size`)

    # --- learning -------------------------------------------------------------------------
    def fit(self, samples: Samples, context: FitContext | None = None) -> ClusterMethod:
        self.fitted_ = False  # until _fit returns: a fit that failed half-way leaves no usable model
        if getattr(samples, "kind", None) not in self.input_kinds:
            got = getattr(samples, "kind", type(samples).__name__)
            raise InputError(f"{self.name} takes {' or '.join(self.input_kinds)} samples, got {got}")
        self.input_kind_: SampleKind = samples.kind
        self.backbone_: dict[str, Any] | None = getattr(samples, "backbone", None)  # None: made of no backbone
        self.k_ = self.check_k(len(samples))
        if self.k_ != "auto":  # more clusters than distinct samples (the pixels, not features) could only be empty
            check_distinct(self.k_, len(distinct_rows(samples.array)[0]))
        self.input_shape_ = tuple(samples.sample_shape)
        # Which files a volume model saw (images, volumes or both): a path it never trained is refused.
        self.file_kinds_: list[str] | None = sorted(set(samples.file_kinds)) if samples.kind == "volumes" else None
        self._fit(samples, context or FitContext())
        self.fitted_ = True
        fixed = self._fitted_labels()
        self.labels_ = self._predict_proba(samples).argmax(axis=1) if fixed is None else np.asarray(fixed)
        return self

    @abstractmethod
    def _fit(self, samples: Samples, context: FitContext) -> None:
        """Learn from `samples`; `self.k_` is the number of clusters (resolved when k was 'auto')."""

    def _fitted_labels(self) -> np.ndarray | None:
        """The training samples' clusters where the fit computes them itself (spectral, SA-Net);
        None: the argmax of the fitted model's `predict_proba`."""
        return None

    def predict_proba(self, samples: Samples) -> np.ndarray:
        """(N, k) soft assignments; rows sum to one."""
        self.check_fitted()
        self._check_kind(samples)
        self.check_shape(samples)
        return self._predict_proba(samples)

    @abstractmethod
    def _predict_proba(self, samples: Samples) -> np.ndarray:
        """`predict_proba` of a fitted model on samples shaped as in training."""

    def embedding(self, samples: Samples) -> np.ndarray:
        """(N, D) vectors of the space the method clusters in: what `report` maps in 2-D."""
        self.check_fitted()
        self._check_kind(samples)
        self.check_shape(samples)
        return self._embedding(samples)

    def _embedding(self, samples: Samples) -> np.ndarray:
        """The samples themselves as vectors; a method that learns or derives a space overrides this."""
        return samples.array.reshape(len(samples), -1).astype(np.float32)

    def predict(self, samples: Samples) -> np.ndarray:
        return self.predict_proba(samples).argmax(axis=1)

    def fit_predict(self, samples: Samples, context: FitContext | None = None) -> np.ndarray:
        return self.fit(samples, context).labels_

    def fit_info(self) -> dict[str, Any]:
        """Extra facts for metrics.json (e.g. how k was chosen)."""
        return {}

    def resume_fingerprint(self) -> dict[str, Any]:
        """What a resumed training run must share with the saved one; any `*epochs` budget may grow."""
        settings = {key: value for key, value in config_to_dict(self.config).items() if not key.endswith("epochs")}
        return {
            "method": self.name,
            "k": int(self.k_),
            "seed": self.seed,
            "shape": list(self.input_shape_),
            "config": settings,
        }

    # --- checks ---------------------------------------------------------------------------
    def check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise InputError(f"this {self.name} model is not fitted: call fit() first, or load a saved model")

    def _check_kind(self, samples: Samples) -> None:
        """New samples are of the kind, and from the backbone, that the model was fitted on."""
        if getattr(samples, "kind", None) != self.input_kind_:
            got = getattr(samples, "kind", type(samples).__name__)
            loader = _LOADERS[self.input_kind_]
            raise InputError(f"this {self.name} model takes {self.input_kind_} samples ({loader}), got {got}")
        if self.backbone_ is not None:
            check_same_backbone(self.backbone_, samples.backbone, f"this {self.name} model")
        fitted_kinds = getattr(self, "file_kinds_", None)
        if fitted_kinds is not None:
            unseen = sorted(set(samples.file_kinds) - set(fitted_kinds))
            if unseen:
                trained = " and ".join(f"{kind}s" for kind in fitted_kinds)
                raise InputError(
                    f"this {self.name} model was fitted on {trained} only and cannot assign "
                    f"{' or '.join(kind + 's' for kind in unseen)}; fit it on a source that holds them"
                )

    def check_shape(self, samples: Samples) -> None:
        """Every model maps samples shaped as in training (pixels, filters, convnets); `assign` loads
        them so, this guards calls from Python."""
        shape = tuple(samples.sample_shape)
        if shape != tuple(self.input_shape_):
            seen, fitted = "x".join(map(str, shape)), "x".join(map(str, self.input_shape_))
            raise InputError(f"{samples.kind} samples are {seen}, the model was fitted on {fitted}")

    def check_k(self, n_samples: int) -> int | str:
        """The validated k for `n_samples` ('auto' stays 'auto'); raises InputError when out of range."""
        k = self.k
        if k == "auto":
            if not self.supports_auto_k:
                raise InputError(f"--k auto is not supported by {self.name}; give an integer")
            return "auto"
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
            raise InputError(f"--k must be an integer >= 2 (or 'auto' where supported), got {k!r}")
        if k > n_samples:
            raise InputError(f"--k {k} is larger than the number of images ({n_samples})")
        return int(k)

    def _check_state(self) -> None:  # noqa: B027  # a hook: most methods check nothing more
        """Raise ValueError where the state just loaded (`load_state_dict`) disagrees with `k_` or
        `input_shape_`, as in a hand-edited or foreign checkpoint; `load_model` calls it. Nets need
        nothing more: their strict `load_state_dict` refuses another head size or input shape."""

    # --- persistence ----------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Learned state as tensors and plain Python data."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def save(self, path: str | Path) -> None:
        """The fitted model as a checkpoint (`outputs/checkpoint.py`) that `clusterkit.load_model` reads."""
        from clusterkit.outputs.checkpoint import write_checkpoint

        self.check_fitted()
        write_checkpoint(
            path,
            {
                "method": self.name,
                "k": int(self.k_),
                "seed": int(self.seed),
                "config": config_to_dict(self.config),
                "input": self.input_header(),
                "state": self.state_dict(),
            },
        )

    def input_header(self) -> dict[str, Any]:
        """What the model takes, as the checkpoint records it: kind, shape, and the backbone's
        identity for features."""
        header: dict[str, Any] = {"kind": self.input_kind_, "shape": [int(s) for s in self.input_shape_]}
        if self.backbone_ is not None:
            header["backbone"] = dict(self.backbone_)
        if getattr(self, "file_kinds_", None) is not None:
            header["file_kinds"] = list(self.file_kinds_)
        return header

    @staticmethod
    def load(path: str | Path) -> ClusterMethod:
        from clusterkit.methods.factory import load_model

        return load_model(path)
