"""One shard of a source's images -> one shard of features, streamed in batches.

Images are decoded and preprocessed in threads one batch ahead of the network, so that only two
batches of 224-px tensors are ever in memory, whatever the number of images. Features are the
backbone's pooled penultimate output, L2-normalised (what k-means and kNN graphs compare) and
rounded to float16 (the cache's precision), so that a feature reads the same whether it was just
computed or came from the cache.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from clusterkit import console
from clusterkit.data.builtin import load_builtin
from clusterkit.data.decode import eight_bit, open_image, to_image
from clusterkit.data.samples import FeatureSet
from clusterkit.data.sources import BUILTIN_PREFIX, is_builtin, list_source
from clusterkit.errors import InputError
from clusterkit.features.backbones import Backbone, same_backbone
from clusterkit.features.cache import FeatureCache

if TYPE_CHECKING:
    import torch
    from PIL import Image

DECODE_THREADS = 4  # Pillow releases the GIL while decoding and resizing


@dataclass(frozen=True)
class ImageList:
    """A source's images, not decoded: `items` are file paths or (builtin sets) uint8 C x H x W
    arrays; `keys` identify each one's content for the cache (path, size, mtime_ns; a builtin
    image's bytes)."""

    names: list[str]
    items: list[Path | np.ndarray]
    keys: list[str]
    labels: list[str] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def shard(self, index: int, count: int) -> ImageList:
        """Shard `index` of `count` (0-based, as torchrun's RANK): a contiguous block, so that the
        shards joined in order are the whole list in order."""
        start, stop = len(self) * index // count, len(self) * (index + 1) // count
        return ImageList(
            self.names[start:stop],
            self.items[start:stop],
            self.keys[start:stop],
            None if self.labels is None else self.labels[start:stop],
        )


def list_images(source: str | os.PathLike, nul_separated: bool = False, stdin: TextIO | None = None) -> ImageList:
    """The images of a folder, a list, stdin or a builtin set, in the order `load_images` reads them."""
    source = os.fspath(source)
    if is_builtin(source):
        images = load_builtin(source[len(BUILTIN_PREFIX) :])
        keys = [f"{source}:{hashlib.sha256(px.tobytes()).hexdigest()}" for px in images.pixels]
        return ImageList(images.paths, list(images.pixels), keys, images.labels)
    files = list_source(source, nul_separated=nul_separated, stdin=stdin)
    return ImageList([f.name for f in files], [f.path for f in files], [_file_key(f.path) for f in files])


def _file_key(path: Path) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return f"unreadable:{path}"  # decoding reports it as skipped
    return f"{os.path.abspath(path)}|{info.st_size}|{info.st_mtime_ns}"


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), 0 <= I < N."""
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit() or int(count) < 1:
        raise InputError(f"--shard must be I/N with 0 <= I < N (0-based, as RANK), got {text!r}")
    if int(index) >= int(count):
        raise InputError(f"--shard {text}: I must be 0..{int(count) - 1} (0-based, as RANK/WORLD_SIZE)")
    return int(index), int(count)


def embed_images(
    images: ImageList,
    backbone: Backbone,
    device: torch.device,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
) -> FeatureSet:
    """Features of `images`: from `cache` where it has them, the rest embedded on `device`."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    if not len(images):  # a shard past the end of a short list: nothing to embed, still a shard to merge
        console.info(f"{backbone.name}: no images in this shard")
        return FeatureSet(paths=[], features=np.zeros((0, 0), np.float32), backbone=backbone.identity)
    found, dim = cache.lookup(images.keys) if cache is not None else ({}, None)
    todo = [i for i in range(len(images)) if i not in found]
    computed: dict[int, np.ndarray] = {}
    skipped: dict[int, str] = {}
    start = time.perf_counter()
    if todo:
        computed, skipped = _embed(images, todo, backbone, device, batch_size)
    seconds = time.perf_counter() - start
    rows = sorted({**found, **computed})
    if not rows:
        raise InputError(f"none of the {len(images)} images could be read ({_examples(images, skipped)})")
    made = len(next(iter(computed.values()))) if computed else dim
    if dim is not None and made != dim:  # before the rows meet in one array, or in the cache
        raise InputError(f"cached features of {backbone.name} are {dim}-D, the backbone gives {made}")
    if cache is not None and computed:
        kept = [i for i in todo if i in computed]
        cache.store([images.keys[i] for i in kept], np.stack([computed[i] for i in kept]))
    features = np.stack([found[i] if i in found else computed[i] for i in rows]).astype(np.float32)
    rate = f" in {seconds:.1f} s ({len(computed) / seconds:.1f} images/s)" if computed and seconds > 0 else ""
    cached = "cache off" if cache is None else f"{len(found)} of {len(images)} images from the cache ({cache.root})"
    console.info(f"{backbone.name}: {cached}, {len(computed)} embedded on {device}{rate}")
    for i, reason in skipped.items():
        console.warn(f"skipped {images.names[i]}: {reason}")
    return FeatureSet(
        paths=[images.names[i] for i in rows],
        features=features,
        backbone=backbone.identity,
        labels=None if images.labels is None else [images.labels[i] for i in rows],
        skipped=[(images.names[i], reason) for i, reason in skipped.items()],
    )


def _embed(
    images: ImageList, todo: list[int], backbone: Backbone, device: torch.device, batch_size: int
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    import torch

    net = backbone.net.to(device)
    features: dict[int, np.ndarray] = {}
    skipped: dict[int, str] = {}
    with (
        ThreadPoolExecutor(DECODE_THREADS) as pool,
        console.progress(f"embedding ({backbone.name})", total=len(todo)) as bar,
        torch.inference_mode(),
    ):
        start = time.perf_counter()
        for batch, tensors in _prepared(images, todo, backbone, pool, batch_size):
            ok = [(i, t) for i, t in zip(batch, tensors, strict=True) if not isinstance(t, str)]
            skipped.update((i, t) for i, t in zip(batch, tensors, strict=True) if isinstance(t, str))
            if ok:
                x = torch.stack([t for _, t in ok]).to(device, non_blocking=True)
                out = torch.nn.functional.normalize(net(x).float().flatten(1), dim=1)
                for (i, _), row in zip(ok, out.half().cpu().numpy(), strict=True):
                    features[i] = row
            done = len(features) + len(skipped)
            bar.advance(len(batch), **{"images/s": done / max(time.perf_counter() - start, 1e-9)})
    return features, skipped


def _prepared(
    images: ImageList, todo: list[int], backbone: Backbone, pool: ThreadPoolExecutor, batch_size: int
) -> Iterator[tuple[list[int], list[torch.Tensor | str]]]:
    """Batches of preprocessed tensors (or the reason a file was skipped), the next one prepared in
    `pool` while the caller runs the network on this one."""
    batches = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)]

    def submit(batch: list[int]) -> list[Future]:
        return [pool.submit(_prepare, images.items[i], backbone) for i in batch]

    pending = submit(batches[0]) if batches else []
    for n, batch in enumerate(batches):
        current = pending
        pending = submit(batches[n + 1]) if n + 1 < len(batches) else []
        yield batch, [f.result() for f in current]


def _prepare(item: Path | np.ndarray, backbone: Backbone) -> torch.Tensor | str:
    try:
        return backbone.transform(_rgb(item))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001  # any decoder failure means "skip this file"
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror  # "No such file or directory", without the path the warning names
        return (str(exc).splitlines() or [""])[0] or type(exc).__name__


def _rgb(item: Path | np.ndarray) -> Image.Image:
    """The image as 8-bit RGB (high-bit-depth scaled as `data.decode` does; grayscale repeated)."""

    if isinstance(item, np.ndarray):
        return to_image(item).convert("RGB")
    return eight_bit(open_image(item)).convert("RGB")


def _examples(images: ImageList, skipped: dict[int, str], shown: int = 3) -> str:
    return "; ".join(f"{images.names[i]}: {reason}" for i, reason in list(skipped.items())[:shown])


def merge(parts: list[FeatureSet]) -> FeatureSet:
    """Shards of one backbone, in the order given, as one set."""
    if not parts:
        raise InputError("nothing to merge")
    first = parts[0].backbone
    for part in parts[1:]:
        if not same_backbone(first, part.backbone):
            raise InputError(
                f"cannot merge features of backbone {first.get('name')} with features of "
                f"{part.backbone.get('name')} (or of other weights or preprocessing)"
            )
    parts = [part for part in parts if len(part)] or parts[:1]  # an empty shard has no feature length
    dims = {part.sample_shape for part in parts}
    if len(dims) > 1:
        raise InputError(f"cannot merge features of different lengths: {sorted(d[0] for d in dims)}")
    labels = None if any(p.labels is None for p in parts) else [label for p in parts for label in p.labels]
    return FeatureSet(
        paths=[path for p in parts for path in p.paths],
        features=np.concatenate([p.features for p in parts]),
        backbone=first,
        labels=labels,
        skipped=[s for p in parts for s in p.skipped],
    )
