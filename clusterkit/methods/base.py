"""The interface every method follows (scikit-learn's estimator conventions).

The constructor only stores hyper-parameters; `fit` learns and returns self; learned state lives in
attributes ending in `_`; `state_dict`/`load_state_dict` hold tensors and plain data only, so that
checkpoints load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..config import MethodConfig, build_config, config_to_dict
from ..data.images import ImageSet
from ..errors import InputError


@dataclass
class FitContext:
    """What a fit needs besides the images: where to keep checkpoints and whether to resume."""

    run_dir: Path | None = None
    resume: bool = False


class ClusterMethod(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    trainable: ClassVar[bool] = False
    supports_auto_k: ClassVar[bool] = False
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    predict_batch_size: int = 256  # images per forward pass when predicting (`assign --batch-size`)

    def __init__(self, k: int | str | None = 10, seed: int = 0, device: str = "auto", **options: Any) -> None:
        from ..engine.device import check_device  # here: the engine imports this module

        check_device(device)
        self.k = k
        self.seed = seed
        self.device = device
        self.config = build_config(self.Config, options, self.name)

    # --- learning -------------------------------------------------------------------------
    def fit(self, images: ImageSet, context: FitContext | None = None) -> "ClusterMethod":
        self.fitted_ = False  # until _fit returns: a fit that failed half-way leaves no usable model
        self.k_ = self.check_k(len(images))
        self.image_shape_ = (images.channels, *images.size)
        self._fit(images, context or FitContext())
        self.fitted_ = True
        return self

    @abstractmethod
    def _fit(self, images: ImageSet, context: FitContext) -> None:
        """Learn from `images`; `self.k_` is the number of clusters (resolved when k was 'auto')."""

    def predict_proba(self, images: ImageSet) -> np.ndarray:
        """(N, k) soft assignments; rows sum to one."""
        self.check_fitted()
        if not isinstance(images, ImageSet):
            raise InputError(f"predict takes an ImageSet (clusterkit.load_images), got {type(images).__name__}")
        self.check_shape(images)
        return self._predict_proba(images)

    @abstractmethod
    def _predict_proba(self, images: ImageSet) -> np.ndarray:
        """`predict_proba` of a fitted model on images shaped as in training."""

    def resume_fingerprint(self) -> dict[str, Any]:
        """What a resumed training run must share with the saved one; any `*epochs` budget may grow."""
        settings = {key: value for key, value in config_to_dict(self.config).items() if not key.endswith("epochs")}
        return {"method": self.name, "k": int(self.k_), "seed": self.seed, "shape": list(self.image_shape_),
                "config": settings}

    def check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise InputError(f"this {self.name} model is not fitted: call fit() first, or load a saved model")

    def check_shape(self, images: ImageSet) -> None:
        """Every model maps images shaped as in training (pixels, filters, convnets); `assign` loads
        them so, this guards calls from Python."""
        shape = (images.channels, *images.size)
        if shape != tuple(self.image_shape_):
            raise InputError(
                "images are {}x{}x{}, the model was fitted on {}x{}x{}".format(*shape, *self.image_shape_)
            )

    def predict(self, images: ImageSet) -> np.ndarray:
        return self.predict_proba(images).argmax(axis=1)

    def fit_predict(self, images: ImageSet, context: FitContext | None = None) -> np.ndarray:
        return self.fit(images, context).predict(images)

    @property
    def training_labels_(self) -> np.ndarray | None:
        """Assignments of the training images where the method computes them itself (e.g. spectral)."""
        return None

    def fit_info(self) -> dict[str, Any]:
        """Extra facts for metrics.json (e.g. how k was chosen)."""
        return {}

    def check_k(self, n_images: int) -> int | str:
        """The validated k for `n_images` ('auto' stays 'auto'); raises InputError when out of range."""
        k = self.k
        if k == "auto":
            if not self.supports_auto_k:
                raise InputError(f"--k auto is not supported by {self.name}; give an integer")
            return "auto"
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
            raise InputError(f"--k must be an integer >= 2 (or 'auto' where supported), got {k!r}")
        if k > n_images:
            raise InputError(f"--k {k} is larger than the number of images ({n_images})")
        return int(k)

    # --- persistence ----------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Learned state as tensors and plain Python data."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def save(self, path: str | Path) -> None:
        from ..checkpoint import save_model

        self.check_fitted()
        save_model(self, path)

    @staticmethod
    def load(path: str | Path) -> "ClusterMethod":
        from ..checkpoint import load_model

        return load_model(path)
