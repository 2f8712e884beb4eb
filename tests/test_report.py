"""`clusterkit report`: the page holds what a reviewer needs, stays self-contained and bounded,
and renders in a real browser (headless Chromium, where installed)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clusterkit.outputs.run import RunFolder
from clusterkit.workflows.fit import FitRequest, run_fit
from clusterkit.workflows.report import MAP_POINTS, PER_ROW, build_report

DATA_URI = re.compile(r'src="data:image/png;base64,([^"]+)"')


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, digits_dir) -> Path:
    out = tmp_path_factory.mktemp("report") / "kmeans"
    run_fit(FitRequest(source=str(digits_dir), method="kmeans", k="10", out=out, labels=digits_dir / "labels.csv"))
    return out


@pytest.fixture(scope="module")
def digits_page(digits_run) -> str:
    build_report(digits_run, device="cpu")
    return (digits_run / "report.html").read_text(encoding="utf-8")


def test_page_has_every_cluster_the_map_the_scores_and_the_confusion(digits_page, digits_run):
    metrics = json.loads((digits_run / "metrics.json").read_text())
    for c in range(10):
        assert f'id="cluster-{c}"' in digits_page
    for figure in ("fig-sizes", "fig-map", "fig-confusion"):
        assert f'id="{figure}"' in digits_page
    assert f"{metrics['acc']:.3f}" in digits_page  # the same ACC as the fit measured
    assert "fig-curves" not in digits_page  # k-means has no epochs


def test_page_is_self_contained_and_every_picture_decodes(digits_page):
    assert "<script" not in digits_page
    assert not re.search(r'(src|href)="(https?:)?//', digits_page)
    images = DATA_URI.findall(digits_page)
    assert len(images) <= 4 + 10 * 3 * PER_ROW  # figures + at most three rows per cluster
    for encoded in images:
        Image.open(io.BytesIO(base64.b64decode(encoded))).verify()


def test_least_confident_images_are_the_clusters_least_confident(digits_page, digits_run):
    """The doubtful row of a cluster shows its lowest-confidence images, lowest first."""
    import csv

    with (digits_run / "assignments.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["cluster"] == "0"]
    lowest = sorted(rows, key=lambda r: float(r["confidence"]))[:PER_ROW]
    section = digits_page.split('id="cluster-0"')[1].split("</section>")[0]
    doubtful = section.split("least confident")[1].split("close second choice")[0]
    shown = re.findall(r'<figure title="([^"]+)"', doubtful)
    assert shown == [r["path"] for r in lowest]


def test_trained_method_gets_its_loss_curves(tmp_path, digits_dir):
    out = tmp_path / "gat"
    fast = ["epochs=2", "big_batch=120", "batch_size=32", "repeats=1", "width=8", "convs_per_block=1", "flip=0.0"]
    run_fit(FitRequest(source="builtin:digits", method="gatcluster", k="10", out=out, overrides=fast, device="cpu"))
    build_report(out, device="cpu")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="fig-curves"' in page and 'id="fig-confusion"' in page  # built-in labels are ground truth
    assert 'id="cluster-9"' in page


def test_moved_images_are_counted_and_found_again_with_source(tmp_path, digits_dir, digits_run):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["source_root"] = str(tmp_path / "gone")
    (run / "metrics.json").write_text(json.dumps(metrics))
    build_report(run, device="cpu", map_points=50)
    assert "could not be opened" in (run / "report.html").read_text()
    build_report(run, device="cpu", map_points=50, source=str(digits_dir))
    assert "could not be opened" not in (run / "report.html").read_text()


def test_a_large_run_gives_a_bounded_page(tmp_path, digits_dir):
    """20,000 rows (each digit file named ~11 times through symlinks): the page holds the same
    number of pictures as for the digits, and the map samples."""
    images = tmp_path / "images"
    images.mkdir()
    files = sorted((digits_dir / "images").glob("*.png"))
    n = 20_000
    names = [f"{i:05d}.png" for i in range(n)]
    for i, name in enumerate(names):
        (images / name).symlink_to(files[i % len(files)])
    run = RunFolder(tmp_path / "run")
    run.prepare(resume=False, force=False)
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(10), size=n).astype(np.float32)
    run.write_config({"method": "kmeans", "k": 10, "seed": 0})
    metrics = {"method": "kmeans", "k": 10, "n_images": n, "seconds": 1.0, "seed": 0, "source": str(images)}
    run.write_outputs(names, proba, proba.argmax(1), metrics | {"source_root": str(images), "labels_file": None})
    result = build_report(run.path, device="cpu")  # no model.ckpt: the map is drawn from the soft assignments
    page = result.path.read_text(encoding="utf-8")
    assert len(DATA_URI.findall(page)) <= 3 + 10 * 3 * PER_ROW
    assert f"{MAP_POINTS} of {n} images" in page
    assert len(page) < 3_000_000


def test_report_refuses_a_folder_that_is_not_a_run(cli, tmp_path):
    result = cli("report", tmp_path)
    assert result.code == 2
    assert "is not a clusterkit run" in result.err and "Traceback" not in result.err


def test_report_refuses_a_run_without_soft_assignments(cli, tmp_path, digits_run):
    run = tmp_path / "old"
    shutil.copytree(digits_run, run)
    (run / "proba.npy").unlink()
    result = cli("report", run)
    assert result.code == 2 and "proba.npy" in result.err and len(result.err.strip().splitlines()) == 1


def test_cli_prints_the_page_path(cli, tmp_path, digits_run):
    out = tmp_path / "page.html"
    result = cli("report", digits_run, "--out", out, "--json", "--quiet")
    assert result.code == 0
    assert json.loads(result.out)["report"] == str(out) and out.is_file()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={user_data}",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt install chromium)")
def test_page_renders_in_chromium(digits_page, digits_run, tmp_path):
    """The browser's own DOM holds every cluster's section and the map, and the screenshot shows
    the figures and thumbnails drawn (the clusters' colours, the thumbnails' black tiles)."""
    page = (digits_run / "report.html").as_uri()
    dom = _chromium("--dump-dom", page, user_data=tmp_path / "profile").stdout
    for c in range(10):
        assert f'id="cluster-{c}"' in dom
    assert 'id="fig-map"' in dom
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1400,1800", page, user_data=tmp_path / "profile")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1800, 1400)
    blue = np.abs(pixels - [31, 119, 180]).sum(axis=2) < 30  # tab20's first colour: cluster 0's dots and tag
    black = pixels.sum(axis=2) < 30  # thumbnails' backgrounds
    assert blue.mean() > 0.001 and black.mean() > 0.005


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory, digits_dir) -> Path:
    """30 digits: fewer images than the 50 PCA components the map projects wider vectors to."""
    folder = tmp_path_factory.mktemp("small")
    for path in sorted((digits_dir / "images").glob("*.png"))[:30]:
        shutil.copy(path, folder / path.name)
    return folder


def test_a_run_of_fewer_images_than_pca_components_gets_its_map(tmp_path, small_dir):
    out = tmp_path / "small"
    run_fit(FitRequest(source=str(small_dir), method="kmeans", k="3", out=out))
    page = build_report(out, device="cpu").path.read_text(encoding="utf-8")
    assert 'id="fig-map"' in page and "30 of 30 images" in page


def test_a_method_without_training_confidences_shows_a_sample_and_says_so(tmp_path, digits_dir):
    """Spectral clustering gives each training image its cluster with probability 1: there is no
    "least confident" to show, and the page must not pretend there is."""
    out = tmp_path / "spectral"
    run_fit(FitRequest(source=str(digits_dir), method="spectral", k="10", out=out))
    page = build_report(out, device="cpu", map_points=200).path.read_text(encoding="utf-8")
    assert "least confident" not in page and "a sample" in page
    assert "shows a sample, not its doubtful images" in page


def test_a_source_or_labels_given_and_missing_is_an_error(cli, tmp_path, digits_run):
    for option in ("--source", "--labels"):
        result = cli("report", digits_run, option, tmp_path / "nowhere.csv", "--out", tmp_path / "p.html")
        assert result.code == 2 and "Traceback" not in result.err
        assert len(result.err.strip().splitlines()) == 1


def test_a_damaged_history_line_ends_the_curves_there(tmp_path):
    from clusterkit.outputs.run import RunFolder

    run = RunFolder(tmp_path)
    run.history.write_text('{"phase": "train", "epoch": 1, "loss": 1.0}\n{"phase": "train", "epo', encoding="utf-8")
    assert run.read_history() == [{"phase": "train", "epoch": 1, "loss": 1.0}]
