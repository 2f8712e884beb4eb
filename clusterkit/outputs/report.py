"""`report.html`: one self-contained page (figures and thumbnails embedded as data URIs, no
scripts, no network) that shows a run at a glance. This module only lays the page out: what goes
on it is gathered by `workflows/report.py`."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Thumb:
    """One image on the page: its PNG, the path it came from (shown on hover) and a caption."""

    png: bytes
    path: str
    caption: str


@dataclass(frozen=True)
class ClusterSection:
    cluster: int
    size: int
    share: float
    colour: str
    notes: list[str]
    ranked: bool  # False: the images are a sample (the method gave no confidence to rank them by)
    confident: list[Thumb]
    doubtful: list[Thumb]
    close: list[Thumb]


@dataclass(frozen=True)
class ReportContent:
    title: str
    facts: list[tuple[str, str]]
    options: dict[str, Any]
    scores: dict[str, float] | None
    warnings: list[str]
    clusters: list[ClusterSection]
    figures: dict[str, bytes] = field(default_factory=dict)  # sizes, confusion, map, curves
    map_note: str = ""


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2937;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:2px 0 0;color:#cbd5e1}
main{padding:8px 24px 40px;max-width:1400px}
h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:15px;margin:0 0 6px}
.grid{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.card{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:10px 14px}
table.facts td{padding:1px 10px 1px 0;vertical-align:top}table.facts td:first-child{color:#666}
.score{font-size:26px;font-weight:600;margin-right:18px}.score small{font-size:12px;color:#666;font-weight:400}
.warn{background:#fff4e5;border:1px solid #f0b35b;border-radius:6px;padding:6px 12px;margin:6px 0}
nav.clusters a{display:inline-block;margin:2px 3px;padding:1px 7px;border-radius:10px;color:#fff;
text-decoration:none;font-size:12px}
section.cluster{background:#fff;border:1px solid #e2e2e2;border-left:6px solid var(--c);border-radius:6px;
padding:8px 14px;margin:12px 0}
.note{color:#555;font-size:12px;max-width:720px}
.row{display:flex;align-items:flex-start;gap:6px;margin:4px 0}.row>span{width:120px;flex:none;color:#666;
font-size:12px;padding-top:4px}
figure{margin:0;display:inline-block;text-align:center}
figure img{image-rendering:pixelated;width:64px;height:64px;object-fit:contain;background:#000;border-radius:3px}
figcaption{font-size:10px;color:#555;max-width:70px;overflow:hidden;white-space:nowrap}
img.fig{max-width:100%}
details pre{font-size:12px;background:#f3f3f3;padding:6px}
"""


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _figure(content: ReportContent, name: str, alt: str) -> str:
    png = content.figures.get(name)
    return f'<img class="fig" id="fig-{name}" alt="{_esc(alt)}" src="{_uri(png)}">' if png else ""


def _thumbs(label: str, thumbs: list[Thumb]) -> str:
    if not thumbs:
        return ""
    figures = "".join(
        f'<figure title="{_esc(t.path)}"><img alt="{_esc(t.path)}" src="{_uri(t.png)}">'
        f"<figcaption>{_esc(t.caption)}</figcaption></figure>"
        for t in thumbs
    )
    return f'<div class="row"><span>{_esc(label)}</span><div class="grid" style="gap:4px">{figures}</div></div>'


def _cluster(section: ClusterSection) -> str:
    notes = "".join(f" · {_esc(note)}" for note in section.notes)
    body = (
        _thumbs("most confident" if section.ranked else "a sample", section.confident)
        + _thumbs("least confident", section.doubtful)
        + _thumbs("close second choice", section.close)
    ) or "<p>No images.</p>"
    return (
        f'<section class="cluster" id="cluster-{section.cluster}" style="--c:{section.colour}">'
        f"<h3>Cluster {section.cluster} · {section.size} images ({section.share:.1%}){notes}</h3>{body}</section>"
    )


def _scores(scores: dict[str, float] | None) -> str:
    if not scores:
        return ""
    cells = "".join(
        f'<span class="score">{scores[key]:.3f} <small>{key.upper()}</small></span>'
        for key in ("acc", "nmi", "ari")
        if key in scores
    )
    return f'<div class="card" style="margin-bottom:12px"><h3>Against the ground truth</h3>{cells}</div>'


def render(content: ReportContent) -> str:
    """The page as one HTML string."""
    facts = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in content.facts)
    warnings = "".join(f'<div class="warn">{_esc(w)}</div>' for w in content.warnings)
    nav = "".join(
        f'<a href="#cluster-{c.cluster}" style="background:{c.colour}">{c.cluster} ({c.size})</a>'
        for c in content.clusters
    )
    options = _esc(json.dumps(content.options, indent=1, default=str))
    confusion = _figure(content, "confusion", "confusion matrix")
    curves = _figure(content, "curves", "training curves")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(content.title)}</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>{_esc(content.title)}</h1><p>clusterkit report</p></header><main>",
        warnings,
        '<h2 id="summary">Summary</h2><div class="grid">',
        f'<div class="card"><table class="facts">{facts}</table>',
        f"<details><summary>options</summary><pre>{options}</pre></details></div>",
        f'<div>{_scores(content.scores)}<div class="card" id="sizes"><h3>Cluster sizes</h3>',
        _figure(content, "sizes", "cluster sizes"),
        "</div></div></div>",
        f'<h2 id="curves">Training curves</h2>{curves}' if curves else "",
        '<div class="grid"><div><h2 id="map">Map of the images</h2>',
        f'<p class="note">{_esc(content.map_note)}</p>',
        _figure(content, "map", "2-D map of the images"),
        "</div>",
        f'<div><h2 id="confusion">Clusters against the true labels</h2>{confusion}</div>' if confusion else "",
        "</div>",
    ]
    parts += [
        '<h2 id="clusters">Clusters</h2>',
        f'<nav class="clusters">{nav}</nav>',
        *(_cluster(section) for section in content.clusters),
        "</main></body></html>",
    ]
    return "\n".join(part for part in parts if part)
