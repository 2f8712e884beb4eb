"""The feature cache: features already computed for a file (path, size, mtime_ns) by one backbone
identity (name, weights hash, preprocessing), so that fitting again with another method or k
neither decodes nor embeds again.

Layout: ROOT/<identity digest>/ holds identity.json and chunks, one per run that embedded anything:
`<id>.npy` (float16 N x D, read by memory map) and `<id>.keys.json` (the N keys, written last, so
a chunk counts only once complete). Chunks are never rewritten, so shards on many machines can share
one cache folder. A changed file has a new key and is embedded again; stale rows stay until the
folder is deleted.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from clusterkit import console
from clusterkit.features.backbones import IDENTITY_FIELDS
from clusterkit.io import atomic_write, atomic_write_text

CACHE_DTYPE = np.float16


def default_cache_dir() -> Path:
    """The user cache folder (platformdirs: ~/.cache/clusterkit/features on Linux, XDG_CACHE_HOME
    respected)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("clusterkit")) / "features"


def identity_digest(identity: dict[str, Any]) -> str:
    fields = {key: identity[key] for key in IDENTITY_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


class FeatureCache:
    """The cached features of one backbone identity under `root`."""

    def __init__(self, root: str | Path, identity: dict[str, Any]) -> None:
        self.root = Path(root).expanduser()
        self.folder = self.root / identity_digest(identity)
        self.identity = identity

    def lookup(self, keys: list[str]) -> tuple[dict[int, np.ndarray], int | None]:
        """Rows of `keys` found in the cache (position in `keys` -> float16 vector) and their
        length (None when nothing is cached)."""
        wanted = {key: i for i, key in enumerate(keys)}
        found: dict[int, np.ndarray] = {}
        dim = None
        for keys_file in sorted(self.folder.glob("*.keys.json")):
            array_file = keys_file.with_name(keys_file.name.removesuffix(".keys.json") + ".npy")
            try:
                chunk_keys = json.loads(keys_file.read_text(encoding="utf-8"))
                rows = np.load(array_file, mmap_mode="r")
            except (OSError, ValueError) as exc:
                console.warn(f"feature cache: ignored unreadable chunk {keys_file.name}: {exc}")
                continue
            if rows.ndim != 2 or len(rows) != len(chunk_keys) or (dim is not None and rows.shape[1] != dim):
                console.warn(f"feature cache: ignored chunk {keys_file.name} of another shape")
                continue
            for row, key in enumerate(chunk_keys):
                if key in wanted:
                    found[wanted[key]] = rows[row]
                    dim = rows.shape[1]
        return found, dim

    def store(self, keys: list[str], features: np.ndarray) -> None:
        """One new chunk; a cache folder that cannot be written is a warning, not a failed run."""
        if not keys:
            return
        name = uuid.uuid4().hex
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            identity_file = self.folder / "identity.json"
            if not identity_file.exists():
                atomic_write_text(identity_file, json.dumps(self.identity, indent=1))
            atomic_write(self.folder / f"{name}.npy", lambda fh: np.save(fh, features.astype(CACHE_DTYPE)), binary=True)
            atomic_write_text(self.folder / f"{name}.keys.json", json.dumps(keys))
        except Exception as exc:  # noqa: BLE001  # InputError or OSError: the features are still good
            console.warn(f"feature cache {self.root} not written: {exc}")
