"""The shell workflow end to end on real images: export, fit, assign, evaluate."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def kmeans_run(tmp_path_factory, digits_dir):
    """One k-means fit on the exported digits folder, shared by the tests that read its outputs."""
    from clusterkit.workflows.fit import FitRequest, run_fit

    out = tmp_path_factory.mktemp("runs") / "kmeans"
    run_fit(FitRequest(source=str(digits_dir), method="kmeans", k="10", out=out, labels=digits_dir / "labels.csv"))
    return out


def test_fit_writes_the_run_folder(kmeans_run):
    assert {p.name for p in kmeans_run.iterdir()} >= {"model.ckpt", "assignments.csv", "metrics.json", "config.yaml"}
    metrics = json.loads((kmeans_run / "metrics.json").read_text())
    for key in ("method", "k", "n_images", "n_skipped", "cluster_sizes", "seconds", "device", "acc", "nmi", "ari"):
        assert key in metrics
    assert metrics["n_images"] == 1797 and sum(metrics["cluster_sizes"]) == 1797
    # scikit-learn's KMeans on the same pixels gets ACC 0.79
    assert 0.76 <= metrics["acc"] <= 0.82


def test_odd_file_names_round_trip_through_fit_assign_and_evaluate(cli, tmp_path, digits_dir):
    """Names with edge spaces, a comma, a quote, a carriage return, or bytes that are not UTF-8."""
    import os
    import shutil

    folder = tmp_path / "odd"
    folder.mkdir()
    odd = [" lead.png", "trail .png", 'co,mma "q".png', "cr\rret.png", os.fsdecode(b"\xff\xfe.png")]
    sources = sorted((digits_dir / "images").iterdir())[:12]
    names = odd + [f"plain{i}.png" for i in range(len(sources) - len(odd))]
    for name, source in zip(names, sources, strict=True):
        shutil.copy(source, folder / name)
    labels = tmp_path / "labels.csv"
    with labels.open("w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(
            [("path", "label"), *((n, n[0]) for n in names)]
        )
    out = tmp_path / "run"
    fitted = cli("fit", folder, "--method", "kmeans", "--k", "3", "--labels", labels, "--out", out, "--quiet")
    assert fitted.code == 0, fitted.err
    with (out / "assignments.csv").open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        assert sorted(row["path"] for row in csv.DictReader(fh)) == sorted(names)
    assert cli("evaluate", out / "assignments.csv", "--labels", labels, "--json").code == 0
    again = cli("assign", folder, "--model", out, "--output", tmp_path / "again.csv")
    assert again.code == 0, again.err
    assert (tmp_path / "again.csv").read_bytes() == (out / "assignments.csv").read_bytes()


def test_fit_prints_run_folder_last(cli, tmp_path):
    result = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "10", "--out", tmp_path / "r", "--quiet")
    assert result.code == 0
    assert result.out.strip().splitlines()[-1] == str(tmp_path / "r")


def test_assign_reproduces_training_and_evaluate_agrees(cli, kmeans_run, digits_dir):
    result = cli("assign", digits_dir, "--model", kmeans_run)
    assert result.code == 0, result.err
    assigned = rows(result.out)
    trained = rows((kmeans_run / "assignments.csv").read_text())
    assert [(r["path"], r["cluster"]) for r in assigned] == [(r["path"], r["cluster"]) for r in trained]
    evaluated = cli("evaluate", kmeans_run / "assignments.csv", "--labels", digits_dir / "labels.csv", "--json")
    scores = json.loads(evaluated.out)
    metrics = json.loads((kmeans_run / "metrics.json").read_text())
    for key in ("acc", "nmi", "ari"):
        assert scores[key] == pytest.approx(metrics[key])
    assert scores["n"] == 1797 and scores["k_true"] == 10


def test_spectral_beats_kmeans_and_assign_reproduces_it(cli, tmp_path, digits_dir):
    out = tmp_path / "spectral"
    result = cli(
        "fit",
        digits_dir,
        "--method",
        "spectral",
        "--k",
        "10",
        "--labels",
        digits_dir / "labels.csv",
        "--out",
        out,
        "--quiet",
    )
    assert result.code == 0, result.err
    assert json.loads((out / "metrics.json").read_text())["acc"] >= 0.80
    assigned = rows(cli("assign", digits_dir, "--model", out / "model.ckpt").out)
    trained = rows((out / "assignments.csv").read_text())
    assert [r["cluster"] for r in assigned] == [r["cluster"] for r in trained]


def test_stdin_list_gives_one_row_per_path(cli, kmeans_run, digits_dir):
    paths = sorted((digits_dir / "images").glob("*.png"))[:50]
    result = cli("assign", "-", "--model", kmeans_run, stdin="\n".join(map(str, paths)) + "\n")
    assert result.code == 0, result.err
    assert len(rows(result.out)) == 50
    nul = cli("assign", "-", "--null", "--model", kmeans_run, "--format", "jsonl", stdin="\0".join(map(str, paths)))
    assert len(nul.out.strip().splitlines()) == 50


def test_assign_formats_and_probs(cli, kmeans_run, tmp_path):
    result = cli("assign", "builtin:digits", "--model", kmeans_run, "--probs")
    table = rows(result.out)
    assert list(table[0]) == ["path", "cluster", "confidence"] + [f"p{j}" for j in range(10)]
    first = table[0]
    assert sum(float(first[f"p{j}"]) for j in range(10)) == pytest.approx(1.0, abs=1e-4)
    as_json = json.loads(cli("assign", "builtin:digits", "--model", kmeans_run, "--format", "json").out)
    assert len(as_json) == 1797 and set(as_json[0]) == {"path", "cluster", "confidence"}
    target = tmp_path / "out.csv"
    assert cli("assign", "builtin:digits", "--model", kmeans_run, "--output", target).code == 0
    assert len(rows(target.read_text())) == 1797


def test_same_seed_same_assignments(tmp_path):
    from clusterkit import get_method, load_images

    images = load_images("builtin:digits")
    for name in ("kmeans", "spectral", "gmm"):
        options = {"features": "pca", "pca_components": 16, "n_init": 2}
        first = get_method(name, k=10, seed=3, **options).fit_predict(images)
        second = get_method(name, k=10, seed=3, **options).fit_predict(images)
        assert (first == second).all(), name


def test_config_file_repeats_a_run(cli, tmp_path, kmeans_run):
    out = tmp_path / "again"
    result = cli("fit", "builtin:digits", "--config", kmeans_run / "config.yaml", "--out", out, "--quiet")
    assert result.code == 0, result.err
    assert (out / "config.yaml").read_text() == (kmeans_run / "config.yaml").read_text()


def test_set_overrides_are_typed(cli, tmp_path):
    out = tmp_path / "pca"
    result = cli(
        "fit",
        "builtin:digits",
        "--method",
        "kmeans",
        "--k",
        "10",
        "--set",
        "features=pca",
        "--set",
        "pca_components=20",
        "--out",
        out,
        "--quiet",
    )
    assert result.code == 0, result.err
    import yaml

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["features"] == "pca" and config["pca_components"] == 20


@pytest.mark.parametrize("method", ["kmeans", "spectral"])
def test_k_auto_is_reported(cli, tmp_path, method):
    out = tmp_path / method
    result = cli(
        "fit",
        "builtin:digits",
        "--method",
        method,
        "--k",
        "auto",
        "--set",
        "k_max=8",
        "--set",
        "features=pca",
        "--out",
        out,
        "--quiet",
    )
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert 2 <= metrics["k"] <= 8
    assert metrics["k_selection"]["criterion"] in ("silhouette", "eigengap")


def test_sanet_k_auto_is_reported(cli, tmp_path):
    out = tmp_path / "sanet"
    options = ["--set", "k_max=8", "--set", "units=2", "--set", "subset_size=600"]
    result = cli("fit", "builtin:digits", "--method", "sanet", "--k", "auto", *options, "--out", out, "--quiet")
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["k_selection"]["criterion"] == "eigengap"
    assert metrics["k"] == 2 + int(np.argmax(np.diff(metrics["k_selection"]["eigenvalues"])[1:8]))
    from clusterkit.methods.factory import load_model

    assert load_model(out / "model.ckpt").fit_info()["k_selection"] == metrics["k_selection"]


def test_collapse_warning_flags_empty_and_giant_clusters():
    from clusterkit.metrics import collapse_warning

    assert "empty" in collapse_warning([10, 0, 5])
    assert "90%" in collapse_warning([90, 5, 5])
    assert collapse_warning([30, 35, 35]) is None
    # With two clusters one always holds half: 72% is an uneven split, 95% a collapse.
    assert collapse_warning([72, 28]) is None
    assert "95%" in collapse_warning([95, 5])


def test_collapse_is_warned(cli, tmp_path, digits_dir):
    """A real fit that collapses: k-means with k=2 on 19 zeros and one white square puts the square
    alone, so one cluster holds 95% of the images; the CLI says so on stderr, even with --quiet, and
    the run is still written."""
    import shutil

    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    zeros = [row["path"] for row in rows((digits_dir / "labels.csv").read_text()) if row["label"] == "0"][:19]
    assert len(zeros) == 19
    for path in zeros:
        shutil.copy(digits_dir / path, folder / Path(path).name)
    Image.fromarray(np.full((8, 8), 255, np.uint8), mode="L").save(folder / "white.png")
    out = tmp_path / "run"
    result = cli("fit", folder, "--method", "kmeans", "--k", "2", "--set", "n_init=2", "--out", out, "--quiet")
    assert result.code == 0, result.err
    assert "possible collapse: one cluster holds 95% of the images (sizes" in result.err
    assert "possible collapse" not in result.out
    assert sorted(json.loads((out / "metrics.json").read_text())["cluster_sizes"]) == [1, 19]


def test_a_fit_that_does_not_collapse_is_not_warned(cli, tmp_path):
    result = cli(
        "fit",
        "builtin:digits",
        "--method",
        "kmeans",
        "--k",
        "10",
        "--set",
        "n_init=2",
        "--out",
        tmp_path / "r",
        "--quiet",
    )
    assert result.code == 0, result.err
    assert "collapse" not in result.err


def test_methods_lists_registry(cli):
    from clusterkit.methods.registry import list_methods

    listed = json.loads(cli("methods", "--json").out)
    names = [m["name"] for m in listed]
    assert len(names) == len(set(names))
    assert set(names) == set(list_methods())
    assert all({"name", "description", "uses_engine", "auto_k", "defaults"} <= set(m) for m in listed)
    text = cli("methods")
    assert text.code == 0
    assert {line.split()[0] for line in text.out.splitlines() if line and not line.startswith(" ")} == set(
        list_methods()
    )


def test_version(cli):
    import importlib.metadata
    import re

    import torch

    from clusterkit._version import __version__

    result = cli("--version")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert lines[0] == f"clusterkit {__version__}"
    torch_version = importlib.metadata.version("torch")
    assert f"torch {torch_version}" in lines and torch.__version__.startswith(torch_version)
    (cuda,) = [line for line in lines if line.startswith("cuda ")]
    assert re.fullmatch(r"cuda (available \(\d+ devices?\)|not available \(.+\))", cuda), cuda
    if torch.cuda.is_available():
        assert cuda.startswith("cuda available")


def test_datasets_export_occluded(cli, tmp_path):
    result = cli("datasets", "export", "digits-occluded", tmp_path / "occ")
    assert result.code == 0
    assert len(list((tmp_path / "occ" / "images").glob("*.png"))) == 1797


def test_datasets_export_keeps_colour(cli, tmp_path):
    from clusterkit import load_images

    assert cli("datasets", "export", "photo-crops", tmp_path / "photos").code == 0
    exported = load_images(str(tmp_path / "photos" / "images"))
    builtin = load_images("builtin:photo-crops")
    assert exported.channels == 3
    assert (exported.pixels == builtin.pixels).all()


def _clusterkit(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clusterkit.cli", *args], capture_output=True, text=True, check=False, **kwargs
    )


def test_help_does_not_import_torch():
    code = "import sys; sys.argv=['clusterkit','--help']\nfrom clusterkit.cli.main import run\ntry: run()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_closing_stdout_early_is_quiet(kmeans_run):
    proc = subprocess.Popen(
        [sys.executable, "-m", "clusterkit.cli", "assign", "builtin:digits", "--model", str(kmeans_run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 1  # click's and Python's convention for a closed pipe
    assert err == ""


def test_labels_file_scores_the_training_history(tmp_path, digits_dir):
    """Ground truth from --labels, not only a built-in set's, reaches the per-epoch history."""
    from clusterkit.workflows.fit import FitRequest, run_fit

    options = ["pretrain_epochs=1", "init_epochs=1", "epochs=1", "feature_maps=8", "init=kmeans", "kmeans_n_init=1"]
    run_fit(
        FitRequest(
            source=str(digits_dir),
            method="depict",
            k="10",
            out=tmp_path / "r",
            labels=digits_dir / "labels.csv",
            overrides=options,
        )
    )
    records = [json.loads(line) for line in (tmp_path / "r" / "history.jsonl").read_text().splitlines()]
    assert all("acc" in r for r in records if r["phase"] != "pretrain")
