"""Run folders and outputs under signals, races, debris and odd targets; fuzzed config and labels."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterkit.errors import InputError

KMEANS = ["--method", "kmeans", "--k", "3", "--quiet"]


def assert_one_line_error(result, *fragments: str, code: int = 2) -> None:
    assert result.code == code, (result.code, result.err)
    lines = [line for line in result.err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory, digits_dir) -> Path:
    """The first 120 exported digits as an export: small/images/*.png and small/labels.csv."""
    folder = tmp_path_factory.mktemp("small")
    (folder / "images").mkdir()
    lines = (digits_dir / "labels.csv").read_text().splitlines()[:121]
    for line in lines[1:]:
        shutil.copy(digits_dir / line.split(",")[0], folder / line.split(",")[0])
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, small) -> Path:
    from clusterkit.workflows.fit import FitRequest, run_fit

    out = tmp_path_factory.mktemp("runs") / "kmeans"
    run_fit(FitRequest(source=str(small), method="kmeans", k="3", out=out))
    return out


def _clusterkit(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "clusterkit.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


# --- D3a: SIGTERM -----------------------------------------------------------------------------
def test_sigterm_cleans_up_like_ctrl_c_and_the_same_command_runs_again(tmp_path, small):
    out = tmp_path / "run"
    command = ("fit", small / "images", "--method", "sanet", "--k", "10", "--out", out)
    for _ in range(2):  # the second time: the same command is not refused as a previous run
        proc = _clusterkit(*command)
        _wait_for(out / "config.yaml", proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err
        assert "error: terminated" in err and "Traceback" not in err
        assert not out.exists()


def test_sigterm_becomes_a_keyboard_interrupt_for_the_cleanup(cli, tmp_path, monkeypatch, small):
    """In process: the handler raises KeyboardInterrupt inside the fit, so a run that saved nothing
    is removed, and the exit code is 143."""
    from clusterkit.methods.classical import KMeansMethod

    def killed(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(KMeansMethod, "fit", killed)
    result = cli("fit", small, *KMEANS, "--out", tmp_path / "run")
    assert result.code == 143 and "terminated" in result.err
    assert not (tmp_path / "run").exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


# --- D3b: default run folders ---------------------------------------------------------------
def test_default_run_folders_of_the_same_second_do_not_collide(cli, tmp_path, monkeypatch, small):
    import clusterkit.outputs.run as run_module
    import clusterkit.workflows.fit as fit_module

    monkeypatch.chdir(tmp_path)
    fixed = lambda method: Path("runs") / f"{method}-20260101-000000"  # noqa: E731
    monkeypatch.setattr(run_module, "default_run_dir", fixed)
    monkeypatch.setattr(fit_module, "default_run_dir", fixed, raising=False)
    printed = []
    for _ in range(3):
        result = cli("fit", small, *KMEANS)
        assert result.code == 0, result.err
        printed.append(result.out.strip().splitlines()[-1])
    assert printed == ["runs/kmeans-20260101-000000", "runs/kmeans-20260101-000000-2", "runs/kmeans-20260101-000000-3"]
    assert all((tmp_path / p / "model.ckpt").is_file() for p in printed)


def test_resume_without_out_is_refused(cli, small):
    assert_one_line_error(cli("fit", small, *KMEANS, "--resume"), "--resume needs --out")


# --- D17: debris of a kill -9 -----------------------------------------------------------------
def test_stray_temp_files_of_a_killed_write_do_not_block_and_are_removed(cli, tmp_path, small):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".model.ckpt.q_y_9_e_.tmp").write_bytes(b"half")
    result = cli("fit", small, *KMEANS, "--out", out)
    assert result.code == 0, result.err
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    (out / ".config.yaml.abcd1234.tmp").write_text("half")
    assert cli("fit", small, *KMEANS, "--out", out, "--force").code == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    other = tmp_path / "other"
    other.mkdir()
    (other / ".notes.txt.abcd1234.tmp").write_text("mine")  # not a run file's temporary: the user's
    assert_one_line_error(cli("fit", small, *KMEANS, "--out", other), "not empty")


# --- D19 / D20: the user's folders and files ----------------------------------------------------
def _failing_fit(cli, small, out, *extra):
    """spectral --k auto on 3 images: refused after the run folder is prepared."""
    few = out.parent / "few"
    few.mkdir(exist_ok=True)
    for name in sorted((small / "images").iterdir())[:3]:
        shutil.copy(name, few / name.name)
    result = cli("fit", few, "--method", "spectral", "--k", "auto", "--out", out, *extra)
    assert_one_line_error(result, "--k auto needs at least 4 images")


def test_a_failed_fit_keeps_a_folder_the_user_made(cli, tmp_path, small):
    out = tmp_path / "mine"
    out.mkdir()
    _failing_fit(cli, small, out)
    assert out.is_dir() and not any(out.iterdir())


def test_force_outside_a_run_removes_none_of_the_users_files(cli, tmp_path, small):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "history.jsonl").write_text("my log\n")
    (out / "train_state.ckpt").write_text("mine")
    _failing_fit(cli, small, out, "--force")
    assert sorted(p.name for p in out.iterdir()) == ["history.jsonl", "train_state.ckpt"]
    result = cli("fit", small, *KMEANS, "--out", out, "--force")
    assert result.code == 0, result.err
    assert (out / "history.jsonl").read_text() == "my log\n" and (out / "train_state.ckpt").read_text() == "mine"
    assert (out / "model.ckpt").is_file()


# --- D14 / D15: outputs ---------------------------------------------------------------------------
def test_assign_with_stdout_closed_is_one_line(small, small_run):
    proc = subprocess.run(
        f'exec "{sys.executable}" -m clusterkit.cli assign "{small}" --model "{small_run}" >&-',
        shell=True,
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: standard output is closed: give --output FILE, or leave stdout open"
    ]


@pytest.mark.parametrize("target", ["folder", "", "/proc/nope/x"])
def test_assign_output_that_cannot_be_a_file(cli, tmp_path, small, small_run, target):
    if target == "folder":
        target = str(tmp_path / "asg")
        Path(target).mkdir()
    result = cli("assign", small, "--model", small_run, "--output", target)
    assert_one_line_error(result, "--output" if not target.startswith("/proc") else target)
    assert ".tmp" not in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["asg"] if target.endswith("asg") else [])


# --- D16: resume with fewer epochs ---------------------------------------------------------------
def test_resume_with_fewer_epochs_than_done_is_refused(cli, tmp_path, small):
    fast = ["pretrain_epochs=1", "init_epochs=1", "init=kmeans", "feature_maps=4", "kmeans_n_init=1"]
    options = [item for option in fast for item in ("--set", option)]
    out = tmp_path / "run"
    done = cli("fit", small, "--method", "depict", "--k", "3", "--epochs", "2", "--out", out, "-q", *options)
    assert done.code == 0, done.err
    config = (out / "config.yaml").read_text()
    result = cli("fit", small, "--out", out, "--resume", "--epochs", "1", "-q", *options)
    assert_one_line_error(result, "--resume", "trained 2 epochs", "give at least 2")
    assert (out / "config.yaml").read_text() == config


# --- fuzzed config and labels ----------------------------------------------------------------------
def test_deeply_nested_config_and_set_value(cli, tmp_path):
    config = tmp_path / "deep.yaml"
    config.write_text("[" * 5000)
    assert_one_line_error(cli("fit", "builtin:digits", "--config", config), "nested too deeply")
    result = cli("fit", "builtin:digits", *KMEANS, "--set", "n_init=" + "[" * 5000)
    assert_one_line_error(result, "nested too deeply")


@pytest.mark.parametrize("seed", ["-1", "1" * 30])
def test_seed_out_of_range(cli, tmp_path, seed):
    result = cli("fit", "builtin:digits", *KMEANS, "--seed", seed, "--out", tmp_path / "a")
    assert_one_line_error(result, "--seed", "in [0, 4294967295]")
    config = tmp_path / "config.yaml"
    config.write_text(f"method: kmeans\nk: 3\nseed: {seed}\n")
    assert_one_line_error(cli("fit", "builtin:digits", "--config", config), "--seed", "4294967295")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("header", [b"PK\x03\x04\x00\x00\x1b[31m\r\n", b'"pa\nth",label\n'])
def test_labels_file_with_a_bad_header_is_quoted_on_one_line(cli, tmp_path, header):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(header + b"images/00000.png,0\n")
    assignments = tmp_path / "a.csv"
    assignments.write_text("path,cluster\nimages/00000.png,1\n")
    result = cli("evaluate", assignments, "--labels", labels)
    assert_one_line_error(result, "needs columns path,label; found '")
    assert not any(ord(c) < 32 for c in result.err.strip())


# --- labels join the folder pointed at ----------------------------------------------------------------
def test_labels_of_an_export_join_its_images_folder(cli, tmp_path, small, monkeypatch):
    whole = cli("fit", small, *KMEANS, "--labels", small / "labels.csv", "--out", tmp_path / "whole")
    inner = cli("fit", small / "images", *KMEANS, "--labels", small / "labels.csv", "--out", tmp_path / "inner")
    assert whole.code == 0 and inner.code == 0, (whole.err, inner.err)
    import json

    scores = [json.loads((tmp_path / r / "metrics.json").read_text())["acc"] for r in ("whole", "inner")]
    assert scores[0] == scores[1]
    monkeypatch.chdir(small)  # relative paths, from the export's own folder
    relative = cli("fit", "images", *KMEANS, "--labels", "labels.csv", "--out", tmp_path / "rel")
    assert relative.code == 0, relative.err


def test_a_label_that_matches_two_images_is_an_error(tmp_path):
    from clusterkit.data.labels import match_labels

    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="matches several images"):
        match_labels(["a.png", "sub/a.png"], {"a.png": "x"}, root=tmp_path, labels_dir=tmp_path / "sub")
    assert match_labels(["sub/a.png"], {"a.png": "x"}, root=tmp_path, labels_dir=tmp_path / "sub") == ["x"]
    with pytest.raises(InputError, match="have no label"):  # without the folders: paths as written only
        match_labels(["sub/a.png"], {"a.png": "x"})
