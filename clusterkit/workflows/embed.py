"""`embed` as a library verb: a source's images (or one shard of them) -> a backbone's features,
through the feature cache; and the merge of shards. `fit --backbone` and `assign` of a model fitted
on features embed through `embed_source` too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from clusterkit.data.samples import FeatureSet
from clusterkit.engine.device import resolve_device
from clusterkit.features.backbones import Backbone, check_same_backbone, load_backbone
from clusterkit.features.cache import FeatureCache, default_cache_dir
from clusterkit.features.embed import embed_images, list_images, merge, parse_shard
from clusterkit.features.npz import check_complete, load_features, save_features

DEFAULT_BATCH_SIZE = 64


@dataclass
class EmbedRequest:
    source: str
    backbone: str
    weights: str | None = None
    cache: Path | None = None  # None: the user cache folder
    use_cache: bool = True
    device: str = "auto"
    batch_size: int | None = None
    shard: str | None = None  # "I/N"
    nul_separated: bool = False
    stdin: TextIO | None = None  # the list, where `source` is "-" (None: sys.stdin)


def embed_source(request: EmbedRequest, fitted: dict[str, Any] | None = None) -> FeatureSet:
    """The features of `request.source` (its shard, where given). With `fitted` (the identity a
    model recorded), a backbone that would make other features is refused before any image is read."""
    device = resolve_device(request.device)  # before the backbone: a bad --device is the first error
    backbone = load_backbone(request.backbone, request.weights)
    if fitted is not None:
        check_same_backbone(fitted, backbone.identity, "the model")
    images = list_images(request.source, nul_separated=request.nul_separated, stdin=request.stdin)
    if request.shard is not None:
        images = images.shard(*parse_shard(request.shard))
    return embed_images(
        images, backbone, device, cache=_cache(request, backbone), batch_size=request.batch_size or DEFAULT_BATCH_SIZE
    )


def _cache(request: EmbedRequest, backbone: Backbone) -> FeatureCache | None:
    if not request.use_cache:
        return None
    return FeatureCache(request.cache or default_cache_dir(), backbone.identity)


def run_embed(request: EmbedRequest, out: Path) -> FeatureSet:
    """`clusterkit embed SOURCE --out FILE`: embed, and write the npz (with its shard number)."""
    shard = parse_shard(request.shard) if request.shard is not None else (0, 1)
    features = embed_source(request)
    save_features(out, features, shard)
    return features


def merge_files(paths: list[Path], out: Path) -> FeatureSet:
    """`clusterkit embed --merge`: every shard of one sharding, joined in shard order (whatever
    order the shell's glob gave them in: shard10 sorts before shard2)."""
    loaded = [load_features(path) for path in paths]
    check_complete([shard for _, shard in loaded], [str(p) for p in paths])
    merged = merge([features for features, _ in sorted(loaded, key=lambda item: item[1][0])])
    save_features(out, merged)
    return merged
