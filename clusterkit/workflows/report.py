"""`report` as a library verb: gather what a person checks a clustering by (sizes, a map, the most
and least confident images of each cluster, the scores where ground truth is known, the training
curves) from a finished run folder, and write one self-contained HTML page.

The run's own files carry everything but the pictures: the soft assignments (`proba.npy`), the
history, the metrics and where the images came from. Only the images that the page shows (a few
per cluster, and the map's sample) are read again, so a run of 50,000 images gives a page of
bounded size in seconds.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clusterkit import console
from clusterkit.data.decode import open_image, to_image
from clusterkit.data.labels import match_labels, read_labels
from clusterkit.data.loading import load_source
from clusterkit.data.samples import Samples, VolumeSet
from clusterkit.data.sources import is_builtin, is_volume_file, source_root
from clusterkit.data.volumes import middle_slice, open_volume
from clusterkit.errors import InputError
from clusterkit.io import atomic_write_text
from clusterkit.methods.base import ClusterMethod
from clusterkit.methods.factory import load_model
from clusterkit.metrics import cluster_sizes, collapse_warning, confusion, giant_cluster, label_scores
from clusterkit.outputs import figures
from clusterkit.outputs.report import ClusterSection, ReportContent, Thumb, render
from clusterkit.outputs.run import REPORT_NAME, RunFolder
from clusterkit.workflows.assign import load_samples

THUMB_SIZE = 64  # px, the longer side of a thumbnail; the page shows them at 64 px
PER_ROW = 8  # images per row of a cluster's section
MAP_POINTS = 1500  # t-SNE's cost grows with the points: 1,500 take a few seconds on 2 cores
MAP_SEED = 0


@dataclass(frozen=True)
class RunTable:
    """The training images' assignments as `fit` wrote them, in row order."""

    paths: list[str]
    clusters: np.ndarray
    confidence: np.ndarray
    proba: np.ndarray

    @property
    def ranked(self) -> bool:
        """Whether the confidences rank anything: spectral clustering and SA-Net give each training
        image its own cluster with probability 1 (a vote that includes the image itself)."""
        return bool(len(self.confidence)) and float(np.ptp(self.confidence)) > 1e-6

    def second_choice(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's best other cluster and its probability."""
        others = self.proba.copy()
        others[np.arange(len(others)), self.clusters] = -np.inf
        second = others.argmax(axis=1)
        return second, self.proba[np.arange(len(others)), second]


@dataclass(frozen=True)
class ReportResult:
    path: Path
    clusters: int
    images: int
    seconds: float


class ImageSource:
    """Opens the run's images by name: the files under the run's source folder, or a built-in
    set's pixels (whose images are not files). A file that cannot be opened any more (moved,
    deleted) becomes a grey tile, counted, rather than failing the report."""

    def __init__(self, source: str, root: Path | None) -> None:
        self.source = source
        self.root = root
        self.builtin = load_source(source) if is_builtin(source) else None
        self._index = {p: i for i, p in enumerate(self.builtin.paths)} if self.builtin is not None else {}
        self.missing: set[str] = set()

    def path(self, name: str) -> Path:
        return Path(name) if self.root is None else self.root / name

    def thumbnail(self, name: str) -> bytes:
        try:
            img = self._open(name)
        except (OSError, KeyError, ValueError):
            self.missing.add(name)
            img = Image.new("L", (THUMB_SIZE, THUMB_SIZE), 128)
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buffer = io.BytesIO()
        img.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()

    def _open(self, name: str) -> Image.Image:
        """The image, or a volume's middle slice."""
        if isinstance(self.builtin, VolumeSet):
            row = self._index[name]
            return to_image(self.builtin.voxels[row, int(self.builtin.depths[row]) // 2])
        if self.builtin is not None:
            return to_image(self.builtin.pixels[self._index[name]])
        if is_volume_file(name):
            return to_image(middle_slice(open_volume(self.path(name))))
        img = open_image(self.path(name))
        return img if img.mode in ("L", "RGB") else img.convert("RGB")

    def samples(self, model: ClusterMethod, names: list[str], device: str) -> tuple[Samples | None, list[str]]:
        """The named images as the model reads them, and the names that could be read (those
        whose files are gone are left out first, so they are counted once, not warned of each)."""
        if self.builtin is not None:
            samples = load_samples(model, self.source, device=device)
            return samples.subset([self._index[n] for n in names]), names
        present = [n for n in names if self.path(n).exists()]
        if not present:
            return None, []
        listing = io.StringIO("\0".join(os.fspath(self.path(n)) for n in present))
        samples = load_samples(model, "-", nul_separated=True, stdin=listing, device=device)
        by_path = {os.fspath(self.path(n)): n for n in present}
        return samples, [by_path[p] for p in samples.paths]


def read_table(run: RunFolder) -> RunTable:
    from clusterkit.data.labels import read_path_table

    rows = read_path_table(run.assignments, ("path", "cluster", "confidence"), "assignments")
    proba = run.read_proba(len(rows))
    try:
        clusters = np.array([int(row["cluster"]) for row in rows.values()], dtype=np.int64)
        confidence = np.array([float(row["confidence"]) for row in rows.values()])
    except ValueError as exc:
        raise InputError(f"{run.assignments} is damaged: {exc}") from None
    if len(clusters) and (clusters.min() < 0 or clusters.max() >= proba.shape[1]):
        raise InputError(f"{run.assignments} names clusters that {run.proba.name} does not have")
    return RunTable(list(rows), clusters, confidence, proba)


def _truth(run: RunFolder, table: RunTable, images: ImageSource, labels: Path | None) -> list[str | None] | None:
    """Ground truth by path: --labels, else the labels file the fit was given, else a built-in's."""
    recorded = run.read_metrics().get("labels_file")
    if labels is None and recorded:
        labels = Path(recorded)
        if not labels.is_file():
            console.warn(f"the fit's labels file {labels} is gone: the report has no scores (give --labels)")
            return None
    if labels is not None:  # a --labels that does not exist is read_labels' one-line error
        return match_labels(
            table.paths, read_labels(labels), allow_missing=True, root=images.root, labels_dir=Path(labels).parent
        )
    if images.builtin is not None:
        by_path = dict(zip(images.builtin.paths, images.builtin.labels or [], strict=False))
        return [by_path.get(p) for p in table.paths]
    return None


def _map(
    table: RunTable, images: ImageSource, model: ClusterMethod | None, points: int, device: str
) -> tuple[bytes | None, str]:
    """t-SNE of the model's embedding (or, for a method without one, of its input) on a seeded
    sample of the images; the sample keeps the page and the time bounded."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(MAP_SEED)
    chosen = np.sort(rng.choice(len(table.paths), size=min(points, len(table.paths)), replace=False))
    names = [table.paths[i] for i in chosen]
    samples, read = None, []
    if model is not None:
        try:
            samples, read = images.samples(model, names, device)
        except InputError as exc:  # e.g. a backbone's weights that moved since the fit
            console.warn(f"the map falls back to the soft assignments: {exc}")
    if model is not None and samples is not None and len(read) >= 5:
        vectors, space = model.embedding(samples), f"the space {model.name} clusters in"
    else:  # no model.ckpt, or the images are gone: the soft assignments still place each image
        vectors, read, space = table.proba[chosen], names, "the soft assignments"
    if len(read) < 5:
        return None, "too few images for a map"
    index = {name: i for i, name in enumerate(table.paths)}
    clusters = table.clusters[[index[n] for n in read]]
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[1] > 50 and len(vectors) > 50:  # PCA's components are at most its rows
        vectors = PCA(50, random_state=MAP_SEED).fit_transform(vectors)
    xy = TSNE(2, init="pca", random_state=MAP_SEED, perplexity=min(30.0, (len(read) - 1) / 3)).fit_transform(vectors)
    note = f"t-SNE of {space}, {len(read)} of {len(table.paths)} images (a seeded sample), coloured by cluster."
    return figures.scatter_map(xy, clusters, table.proba.shape[1]), note


def _sections(
    table: RunTable, images: ImageSource, truth: list[str | None] | None, flagged: set[int]
) -> list[ClusterSection]:
    k = table.proba.shape[1]
    colours = figures.cluster_colours(k)
    second, second_p = table.second_choice()
    margin = table.confidence - second_p
    rng = np.random.default_rng(MAP_SEED)
    sections = []
    for c in range(k):
        members = np.flatnonzero(table.clusters == c)
        if not table.ranked:  # nothing to rank by: a seeded sample of the cluster, and no doubtful rows
            shown = np.sort(rng.choice(members, size=min(PER_ROW, len(members)), replace=False))
            confident, doubtful, close = shown, members[:0], members[:0]
        else:
            by_confidence = members[np.argsort(-table.confidence[members], kind="stable")]
            confident = by_confidence[:PER_ROW]
            doubtful = by_confidence[PER_ROW:][-PER_ROW:][::-1]  # the least confident first, none shown twice
            close = members[np.argsort(margin[members], kind="stable")][:PER_ROW]
            close = close[margin[close] < 0.5 * table.confidence[close]]  # only choices that were close

        def thumbs(rows: np.ndarray, caption) -> list[Thumb]:
            return [Thumb(images.thumbnail(table.paths[i]), table.paths[i], caption(i)) for i in rows]

        notes = []
        if c in flagged:
            notes.append("empty" if len(members) == 0 else "giant")
        if truth is not None and len(members):
            known = [truth[i] for i in members if truth[i] is not None]
            if known:
                values, counts = np.unique(known, return_counts=True)
                notes.append(f"mostly {values[counts.argmax()]} ({counts.max() / len(known):.0%})")
        sections.append(
            ClusterSection(
                cluster=c,
                size=len(members),
                share=len(members) / max(len(table.paths), 1),
                colour=colours[c],
                notes=notes,
                ranked=table.ranked,
                confident=thumbs(confident, lambda i: f"{table.confidence[i]:.2f}"),
                doubtful=thumbs(doubtful, lambda i: f"{table.confidence[i]:.2f}"),
                close=thumbs(close, lambda i: f"or {second[i]} ({second_p[i]:.2f})"),
            )
        )
    return sections


def _facts(run: RunFolder, metrics: dict, n_missing_labels: int | None) -> list[tuple[str, str]]:
    written = dt.datetime.fromtimestamp(run.metrics.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    facts = [
        ("run", str(run.path)),
        ("method", str(metrics.get("method"))),
        ("k", str(metrics.get("k"))),
        ("input", f"features of {metrics['backbone']}" if metrics.get("backbone") else "pixels"),
        ("images", str(metrics.get("n_images"))),
        ("skipped files", str(metrics.get("n_skipped", 0))),
        ("fit time", f"{metrics.get('seconds', 0):.1f} s on {metrics.get('device', 'cpu')}"),
        ("seed", str(metrics.get("seed"))),
        ("source", str(metrics.get("source"))),
        ("written", written),
    ]
    if n_missing_labels:
        facts.append(("images without a label", str(n_missing_labels)))
    return facts


def build_report(
    run_dir: str | Path,
    output: str | Path | None = None,
    labels: Path | None = None,
    source: str | None = None,
    device: str = "auto",
    map_points: int = MAP_POINTS,
) -> ReportResult:
    """Write RUN/report.html (or `output`) for a finished run; `source` replaces the run's recorded
    source when the images have moved since the fit."""
    start = time.perf_counter()
    run = RunFolder(Path(run_dir))
    options = run.read_config()
    metrics = run.read_metrics()
    table = read_table(run)
    root = run.source_root()
    given = source or str(metrics["source"])
    if source is not None:
        if not is_builtin(source) and not Path(source).exists():
            raise InputError(f"--source {source} does not exist")
        root = source_root(source)
    images = ImageSource(given, root)
    model = load_model(run.path, device=device) if run.checkpoint.is_file() else None

    k = table.proba.shape[1]
    sizes = cluster_sizes(table.clusters, k)
    warning = collapse_warning(sizes)
    flagged = {c for c in range(k) if sizes[c] == 0} | (
        {giant} if (giant := giant_cluster(sizes)) is not None else set()
    )
    truth = _truth(run, table, images, labels)
    figs: dict[str, bytes] = {"sizes": figures.sizes_chart(sizes, flagged)}
    scores, missing_labels = None, None
    if truth is not None:
        known = [i for i, t in enumerate(truth) if t is not None]
        missing_labels = len(truth) - len(known)
        if known:
            y_true, y_pred = [truth[i] for i in known], table.clusters[known]
            scores = label_scores(y_true, y_pred)
            figs["confusion"] = figures.confusion_heatmap(*confusion(y_true, y_pred))
    figs["map"], map_note = _map(table, images, model, map_points, device)
    history = run.read_history()
    if history and (curves := figures.curves_chart(history)) is not None:
        figs["curves"] = curves
    sections = _sections(table, images, truth, flagged)
    warnings = [f"possible collapse: {warning}"] if warning else []
    if not table.ranked:
        warnings.append(
            f"{metrics.get('method')} gives every training image its cluster with confidence "
            f"{table.confidence[0]:.2f}, so each cluster shows a sample, not its doubtful images; "
            "`clusterkit assign NEW --model RUN --probs` grades new images"
        )
    if images.missing:
        warnings.append(
            f"{len(images.missing)} images could not be opened from {root} (moved or deleted?); give --source"
        )
    content = ReportContent(
        title=f"{metrics.get('method')} · k={k} · {run.path.name}",
        facts=_facts(run, metrics, missing_labels),
        options=options,
        scores=scores,
        warnings=warnings,
        clusters=sections,
        figures={name: png for name, png in figs.items() if png},
        map_note=map_note,
    )
    path = Path(output) if output is not None else run.path / REPORT_NAME
    atomic_write_text(path, render(content))
    return ReportResult(path, k, len(table.paths), time.perf_counter() - start)
