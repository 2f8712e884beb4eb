"""The report's figures as PNG bytes, drawn with matplotlib's headless Agg backend.

Each function takes plain arrays and returns the encoded image, so the page needs no plotting
library in the browser and the figures can be tested without one.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

# tab20's colours, cycled: neighbouring cluster numbers get distinct hues.
_PALETTE = "tab20"


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def _figure(width: float, height: float, panels: int = 1) -> tuple[Any, Any]:
    """A figure and its axes (one, or a row of `panels`)."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display, no GUI toolkit: the same on a server and in CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width, height), squeeze=False)
    return fig, axes[0] if panels > 1 else axes[0, 0]


def cluster_colours(k: int) -> list[str]:
    """One hex colour per cluster, the same in every figure and on the page."""
    import matplotlib

    cmap = matplotlib.colormaps[_PALETTE]
    return [matplotlib.colors.to_hex(cmap(i % cmap.N)) for i in range(k)]


def sizes_chart(sizes: Sequence[int], flagged: set[int]) -> bytes:
    """Cluster sizes as bars; empty or giant clusters (`flagged`) drawn in red."""
    k = len(sizes)
    fig, ax = _figure(min(12.0, 2.0 + 0.35 * k), 2.6)
    colours = ["#d62728" if c in flagged else "#4c72b0" for c in range(k)]
    ax.bar(range(k), sizes, color=colours)
    ax.axhline(sum(sizes) / max(k, 1), color="#888888", linestyle="--", linewidth=1, label="fair share (N/k)")
    ax.set_xlabel("cluster")
    ax.set_ylabel("images")
    ax.set_xticks(range(k) if k <= 40 else np.linspace(0, k - 1, 20, dtype=int))
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def matched_order(table: np.ndarray) -> np.ndarray:
    """Rows (clusters) in the order of the classes they are matched to (Hungarian, as ACC
    matches them), unmatched clusters last: a good clustering reads as a dark diagonal."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-table)
    matched = rows[np.argsort(cols)]
    return np.concatenate([matched, np.setdiff1d(np.arange(len(table)), matched)])


def confusion_heatmap(table: np.ndarray, clusters: Sequence[Any], classes: Sequence[Any]) -> bytes:
    """Counts, clusters (rows, in matched order) x classes (columns), each row's share coloured so
    that a pure cluster is one dark cell whatever its size; the counts are written in the cells."""
    order = matched_order(table)
    table, clusters = table[order], [clusters[i] for i in order]
    rows, cols = table.shape
    fig, ax = _figure(min(14.0, 1.5 + 0.55 * cols), min(14.0, 1.0 + 0.45 * rows))
    share = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    if rows * cols <= 900:
        for i in range(rows):
            for j in range(cols):
                if table[i, j]:
                    colour = "white" if share[i, j] > 0.6 else "black"
                    ax.text(j, i, str(table[i, j]), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(cols), [str(c) for c in classes], rotation=90 if cols > 12 else 0)
    ax.set_yticks(range(rows), [str(c) for c in clusters])
    ax.set_xlabel("true label")
    ax.set_ylabel("cluster")
    return _png(fig)


def scatter_map(points: np.ndarray, clusters: np.ndarray, k: int) -> bytes:
    """The 2-D map: one dot per image, coloured by cluster, the cluster number at its median."""
    fig, ax = _figure(7.5, 6.0)
    colours = np.array(cluster_colours(k))
    ax.scatter(points[:, 0], points[:, 1], c=colours[clusters], s=9, linewidths=0, alpha=0.8)
    for c in np.unique(clusters):
        x, y = np.median(points[clusters == c], axis=0)
        ax.text(
            x,
            y,
            str(c),
            fontsize=11,
            weight="bold",
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": colours[c], "alpha": 0.85},
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)
    return _png(fig)


def curves_chart(history: list[dict[str, Any]]) -> bytes | None:
    """Loss terms per epoch, one panel per phase; ACC on a second axis where it was recorded."""
    phases = list(dict.fromkeys(record.get("phase", "train") for record in history))
    if not phases:
        return None
    fig, axes = _figure(min(14.0, 5.0 * len(phases)), 3.2, panels=len(phases))
    skip = {"phase", "epoch", "images_per_s", "acc", "nmi", "ari"}
    for ax, phase in zip(np.atleast_1d(axes), phases, strict=True):
        records = [r for r in history if r.get("phase", "train") == phase]
        epochs = [r["epoch"] for r in records]
        terms = [key for key in records[0] if key not in skip and isinstance(records[0][key], (int, float))]
        for term in terms:
            ax.plot(epochs, [r.get(term, np.nan) for r in records], label=term, linewidth=1.5)
        ax.set_title(phase)
        ax.set_xlabel("epoch")
        ax.spines[["top"]].set_visible(False)
        handles = ax.get_lines()
        if "acc" in records[0]:
            twin = ax.twinx()
            handles += twin.plot(epochs, [r.get("acc", np.nan) for r in records], "k:", label="ACC (labels)")
            twin.set_ylim(0.0, 1.0)
            twin.set_ylabel("ACC")
        if handles:  # below the plot, where no curve runs
            ax.legend(
                handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=7, frameon=False
            )
    return _png(fig)
