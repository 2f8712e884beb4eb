"""The in-memory sample sets methods consume, and the protocol they share.

A method declares the kinds of sample it takes (`ClusterMethod.input_kinds`); the data layer (or,
for features, `clusterkit.features`) hands it a set of one kind. Every kind holds its samples as one
array (`array`, N x sample_shape: uint8 pixels, float features, uint8 voxels of padded volumes) beside
their paths and optional ground truth, so the engine, checkpoints and outputs need no knowledge of what a sample is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

SampleKind = Literal["pixels", "features", "volumes"]
FileKind = Literal["image", "volume"]


class Samples(Protocol):
    """What the engine, the checkpoint and the outputs read of any sample set."""

    kind: ClassVar[SampleKind]
    paths: list[str]
    labels: list[str] | None
    skipped: list[tuple[str, str]]
    # What turned images into these samples (`clusterkit.features` identity: name, weights hash,
    # preprocessing); None for pixels. A model records it, so new samples are made the same way.
    backbone: dict[str, Any] | None

    def __len__(self) -> int: ...

    @property
    def array(self) -> np.ndarray:
        """The samples as one array, (N, *sample_shape): uint8 pixels, float features."""

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape: what a fitted model requires of new samples."""

    def flat(self) -> np.ndarray:
        """The samples as float32 vectors (N, D), for methods that see a sample as one vector."""

    def subset(self, index: np.ndarray | list[int]) -> Samples: ...


def _rows(index: np.ndarray | list[int]) -> np.ndarray:
    """`index` as integer positions; an empty one stays an integer index, where numpy would read
    `[]` as a float index and fail."""
    index = np.asarray(index)
    return np.zeros(0, dtype=np.intp) if index.size == 0 else index


def _check_rows(paths: list[str], rows: int, labels: list[str] | None, what: str) -> None:
    """One path, and one label where there are labels, per sample row."""
    if len(paths) != rows:
        raise ValueError(f"paths and {what} differ in length")
    if labels is not None and len(labels) != len(paths):
        raise ValueError("labels and paths differ in length")


@dataclass(frozen=True)
class ImageSet:
    """Decoded images of one source, all at one size and channel count.

    `pixels` is uint8 (N, C, H, W): four times smaller than float32, so 50k RGB images at 64 px
    still fit in memory; `as_float()` gives the [0, 1] float view methods compute on.
    `labels` holds ground truth where the source knows it (builtin sets, or `--labels`).
    Frozen: a changed set is a new one (`dataclasses.replace`), so no caller edits another's images.
    """

    kind: ClassVar[SampleKind] = "pixels"
    backbone: ClassVar[None] = None

    paths: list[str]
    pixels: np.ndarray
    labels: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.pixels.ndim != 4:
            raise ValueError(f"pixels must be (N, C, H, W), got shape {self.pixels.shape}")
        _check_rows(self.paths, len(self.pixels), self.labels, "pixels")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def array(self) -> np.ndarray:
        return self.pixels

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, *self.size)

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[2]), int(self.pixels.shape[3])

    def as_float(self) -> np.ndarray:
        """Pixels as float32 in [0, 1], shape (N, C, H, W)."""
        return self.pixels.astype(np.float32) / 255.0

    def flat(self) -> np.ndarray:
        """Pixels as float32 vectors (N, C*H*W) for methods that see an image as one vector."""
        return self.as_float().reshape(len(self), -1)

    def subset(self, index: np.ndarray | list[int]) -> ImageSet:
        """The images at `index` (integer positions); an empty index keeps the (0, C, H, W) shape."""
        index = _rows(index)
        return ImageSet(
            paths=[self.paths[i] for i in index],
            pixels=self.pixels[index],
            labels=None if self.labels is None else [self.labels[i] for i in index],
        )


@dataclass(frozen=True)
class FeatureSet:
    """Feature vectors of images (a pretrained backbone's, `clusterkit.features`), one row each.

    `features` is float (N, D); `backbone` is the identity of what made them (name, weights hash,
    preprocessing), which a fitted model records so that `assign` embeds new images the same way
    and refuses features of another backbone. Frozen, as ImageSet.
    """

    kind: ClassVar[SampleKind] = "features"

    paths: list[str]
    features: np.ndarray
    backbone: dict[str, Any]
    labels: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or not np.issubdtype(self.features.dtype, np.floating):
            raise ValueError(f"features must be float (N, D), got {self.features.dtype} {self.features.shape}")
        _check_rows(self.paths, len(self.features), self.labels, "features")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def array(self) -> np.ndarray:
        return self.features

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (int(self.features.shape[1]),)

    def flat(self) -> np.ndarray:
        return self.features.astype(np.float32, copy=False)

    def subset(self, index: np.ndarray | list[int]) -> FeatureSet:
        index = _rows(index)
        return FeatureSet(
            paths=[self.paths[i] for i in index],
            features=self.features[index],
            backbone=self.backbone,
            labels=None if self.labels is None else [self.labels[i] for i in index],
        )


@dataclass(frozen=True)
class VolumeSet:
    """Volumes (3-D scans, stacks of slices) of one source, every slice at one size and channel count;
    in a folder that mixes them, 2-D images too, as volumes of one slice (`file_kinds` says which).

    `voxels` is uint8 (N, D, C, H, W): each volume's slices first, zeros past its own depth
    (`depths`), so that volumes of different depth share one array and the engine batches them as it
    batches images; a model masks the padding. `sample_shape` is (D, C, H, W): new volumes are padded
    (or resampled) to the same D. The array may be a disk-backed `numpy.memmap` where the decoded set
    does not fit in memory (`data.volumes`): batches then read only their own rows.
    Intensities are uint8 as pixels are (a volume's float values are windowed to 0..255 when read).
    """

    kind: ClassVar[SampleKind] = "volumes"
    backbone: ClassVar[None] = None

    paths: list[str]
    voxels: np.ndarray
    depths: np.ndarray
    file_kinds: list[FileKind]
    labels: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.voxels.ndim != 5 or self.voxels.dtype != np.uint8:
            raise ValueError(f"voxels must be uint8 (N, D, C, H, W), got {self.voxels.dtype} {self.voxels.shape}")
        _check_rows(self.paths, len(self.voxels), self.labels, "voxels")
        if len(self.depths) != len(self.paths) or len(self.file_kinds) != len(self.paths):
            raise ValueError("depths, file kinds and paths differ in length")
        if len(self.depths) and not (int(np.min(self.depths)) >= 1 and int(np.max(self.depths)) <= self.max_depth):
            raise ValueError(f"depths must lie in [1, {self.max_depth}]")

    @classmethod
    def from_images(cls, images: ImageSet) -> VolumeSet:
        """Images as volumes of one slice: how a method that reads volumes takes a set of images."""
        return cls(
            paths=images.paths,
            voxels=images.pixels[:, None],
            depths=np.ones(len(images), dtype=np.int64),
            file_kinds=["image"] * len(images),
            labels=images.labels,
            skipped=images.skipped,
        )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def array(self) -> np.ndarray:
        return self.voxels

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.voxels.shape[1:])

    @property
    def max_depth(self) -> int:
        return int(self.voxels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.voxels.shape[2])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.voxels.shape[3]), int(self.voxels.shape[4])

    def flat(self) -> np.ndarray:
        """Each padded volume as one float32 vector (N, D*C*H*W): what a method that sees a sample as
        one vector (k-means, spectral) clusters."""
        return (self.voxels.reshape(len(self), -1).astype(np.float32)) / 255.0

    def subset(self, index: np.ndarray | list[int]) -> VolumeSet:
        index = _rows(index)
        return VolumeSet(
            paths=[self.paths[i] for i in index],
            voxels=np.asarray(self.voxels[index]),
            depths=np.asarray(self.depths)[index],
            file_kinds=[self.file_kinds[i] for i in index],
            labels=None if self.labels is None else [self.labels[i] for i in index],
        )
