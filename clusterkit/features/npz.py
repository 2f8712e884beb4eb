"""feats.npz: a FeatureSet as a file (`clusterkit embed --out`), readable with numpy alone.

Arrays: `features` (float16 N x D), `paths` (str), `labels` (str, where known), and JSON strings
`backbone` (the identity), `skipped` and `shard` ([I, N], or [0, 1] for a whole source), so that
`embed --merge` can check that it joins every shard of one backbone exactly once.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from clusterkit.data.samples import FeatureSet
from clusterkit.errors import InputError
from clusterkit.io import atomic_write

FEATURES_DTYPE = np.float16  # embed's own precision (see features/embed.py): nothing is lost


def save_features(path: str | Path, features: FeatureSet, shard: tuple[int, int] = (0, 1)) -> None:
    arrays = {
        "features": features.features.astype(FEATURES_DTYPE),
        "paths": np.array(features.paths, dtype=str),
        "backbone": np.array(json.dumps(features.backbone)),
        "skipped": np.array(json.dumps(features.skipped)),
        "shard": np.array(shard, dtype=np.int64),
    }
    if features.labels is not None:
        arrays["labels"] = np.array(features.labels, dtype=str)
    atomic_write(path, lambda fh: np.savez(fh, **arrays), binary=True)


def load_features(path: str | Path) -> tuple[FeatureSet, tuple[int, int]]:
    """The set in `path` and its shard (I, N)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"features file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            features = FeatureSet(
                paths=[str(p) for p in data["paths"]],
                features=data["features"].astype(np.float32),
                backbone=json.loads(str(data["backbone"])),
                labels=[str(x) for x in data["labels"]] if "labels" in data else None,
                skipped=[tuple(s) for s in json.loads(str(data["skipped"]))],
            )
            index, count = (int(v) for v in data["shard"])
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path} is not a clusterkit features file ({type(exc).__name__}: {exc})") from None
    return features, (index, count)


def check_complete(shards: list[tuple[int, int]], names: list[str]) -> None:
    """Refuse a merge that misses or repeats a shard, or mixes shardings."""
    if not shards:
        raise InputError("--merge needs the shard files to join")
    counts = {count for _, count in shards}
    if len(counts) > 1:
        raise InputError(f"these files come from different shardings (N = {sorted(counts)})")
    count = counts.pop()
    seen: dict[int, str] = {}
    for (index, _), name in zip(shards, names, strict=True):
        if index in seen:
            raise InputError(f"shard {index}/{count} given twice: {seen[index]} and {name}")
        seen[index] = name
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise InputError(f"shards {', '.join(f'{i}/{count}' for i in missing)} are missing from the merge")
