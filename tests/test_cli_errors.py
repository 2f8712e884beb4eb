"""Bad input: one clear line on stderr, exit code 2, nothing half-written left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

FAST_DEPICT = [
    "--set",
    "pretrain_epochs=1",
    "--set",
    "init_epochs=1",
    "--set",
    "epochs=1",
    "--set",
    "init=kmeans",
    "--set",
    "feature_maps=4",
    "--set",
    "kmeans_n_init=1",
]


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = [line for line in result.err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_source(cli, tmp_path):
    result = cli("fit", tmp_path / "nope", "--method", "kmeans", "--k", "3", "--out", tmp_path / "run")
    assert_one_line_error(result, "source not found")
    assert not (tmp_path / "run").exists()


def test_empty_folder(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("fit", tmp_path / "empty", "--method", "kmeans", "--k", "3", "--out", tmp_path / "run")
    assert_one_line_error(result, "no image or volume files")
    assert not (tmp_path / "run").exists()


def test_folder_of_only_corrupt_files(cli, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = cli("fit", folder, "--method", "kmeans", "--k", "2", "--out", tmp_path / "run")
    assert_one_line_error(result, "could be read")
    assert not (tmp_path / "run").exists()


def test_corrupt_files_are_skipped_and_counted(cli, tmp_path, digits_dir):
    folder = tmp_path / "mixed"
    shutil.copytree(digits_dir / "images", folder)
    (folder / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    long_name = "zz-text-" + "x" * 100 + ".jpg"
    (folder / long_name).write_text("hello")
    result = cli("fit", folder, "--method", "kmeans", "--k", "10", "--out", tmp_path / "run", "--quiet")
    assert result.code == 0, result.err
    assert "skipped zz-broken.png" in result.err
    assert any(line.startswith("warning: skipped " + long_name) for line in result.err.splitlines())  # one line each
    assert "2 of 1799 files skipped" in result.err
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_images"] == 1797 and metrics["n_skipped"] == 2


def test_unknown_method(cli, tmp_path):
    result = cli("fit", "builtin:digits", "--method", "nosuch", "--k", "3", "--out", tmp_path / "run")
    assert_one_line_error(result, "unknown method 'nosuch'", "kmeans")


@pytest.mark.parametrize("k, fragment", [("1", ">= 2"), ("5000", "larger than the number of images"), ("x", "integer")])
def test_k_out_of_range(cli, tmp_path, k, fragment):
    result = cli("fit", "builtin:digits", "--method", "kmeans", "--k", k, "--out", tmp_path / "run")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_unknown_option_names_valid_ones(cli, tmp_path):
    result = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--set", "n_neighbours=4")
    assert_one_line_error(result, "unknown option", "n_neighbours", "valid:", "n_init")


def test_epochs_on_a_method_that_does_not_train(cli, tmp_path):
    result = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--epochs", "3")
    assert_one_line_error(result, "--epochs does not apply to kmeans")
    result = cli("fit", "builtin:digits", "--method", "sanet", "--k", "3", "--set", "epochs=3")
    assert_one_line_error(result, "unknown option(s) for sanet: epochs")


def test_labels_file_without_columns(cli, tmp_path, digits_dir):
    bad = tmp_path / "labels.csv"
    bad.write_text("file,class\nimages/00000.png,0\n")
    result = cli("fit", digits_dir, "--method", "kmeans", "--k", "3", "--labels", bad, "--out", tmp_path / "run")
    assert_one_line_error(result, "needs columns path,label")
    assert not (tmp_path / "run").exists()
    assignments = tmp_path / "a.csv"
    assignments.write_text("path,cluster,confidence\nimages/00000.png,1,1.0\n")
    assert_one_line_error(cli("evaluate", assignments, "--labels", bad), "needs columns path,label")


def test_labels_that_do_not_match(cli, tmp_path, digits_dir):
    wrong = tmp_path / "labels.csv"
    wrong.write_text("path,label\n00000.png,0\n00001.png,1\n")
    result = cli("fit", digits_dir, "--method", "kmeans", "--k", "3", "--labels", wrong, "--out", tmp_path / "run")
    assert_one_line_error(result, "have no label")
    assert not (tmp_path / "run").exists()
    assignments = tmp_path / "a.csv"
    assignments.write_text("path,cluster,confidence\nimages/00000.png,1,1.0\nimages/00001.png,0,1.0\n")
    result = cli("evaluate", assignments, "--labels", wrong)
    assert_one_line_error(result, "2 assigned paths have no label")


def test_checkpoint_missing_corrupt_or_other_version(cli, tmp_path, digits_dir):
    result = cli("assign", digits_dir, "--model", tmp_path / "nope")
    assert_one_line_error(result, "checkpoint not found")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    assert_one_line_error(cli("assign", digits_dir, "--model", corrupt), "not a clusterkit model")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert_one_line_error(cli("assign", digits_dir, "--model", foreign), "not a clusterkit model")
    old = tmp_path / "old.ckpt"
    torch.save({"format": "clusterkit-model", "format_version": 999}, old)
    assert_one_line_error(cli("assign", digits_dir, "--model", old), "format version 999")


def test_output_folder_that_is_not_a_run(cli, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--out", out)
    assert_one_line_error(result, "exists and is not empty", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    forced = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--out", out, "--force", "--quiet")
    assert forced.code == 0, forced.err
    assert (out / "model.ckpt").is_file() and (out / "precious.txt").is_file()


def test_previous_run_is_not_overwritten_silently(cli, tmp_path):
    out = tmp_path / "run"
    assert cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--out", out, "--quiet").code == 0
    result = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--out", out)
    assert_one_line_error(result, "previous run", "--resume")


def test_resume_needs_a_previous_run(cli, tmp_path):
    result = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--out", tmp_path / "x", "--resume")
    assert_one_line_error(result, "not a previous run")


def test_refused_resume_leaves_the_run_config_alone(cli, tmp_path):
    out = tmp_path / "run"
    fast = FAST_DEPICT
    assert cli("fit", "builtin:digits", "--method", "depict", "--k", "3", "--out", out, "--quiet", *fast).code == 0
    config = (out / "config.yaml").read_text()
    assert_one_line_error(
        cli("fit", "builtin:digits", "--method", "depict", "--k", "5", "--out", out, "--resume", *fast),
        "settings differ",
    )
    assert (out / "config.yaml").read_text() == config


def test_no_temporary_files_left(cli, tmp_path):
    out = tmp_path / "run"
    assert cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--out", out, "--quiet").code == 0
    assert not [p for p in Path(out).iterdir() if p.name.startswith(".")]


def test_labels_row_without_a_label_field(cli, tmp_path, digits_dir):
    short = tmp_path / "labels.csv"
    short.write_text("path,label\nimages/00000.png,0\nimages/00001.png\n")
    result = cli("fit", digits_dir, "--method", "kmeans", "--k", "3", "--labels", short, "--out", tmp_path / "run")
    assert_one_line_error(result, "line 3", "no label field")
    assignments = tmp_path / "a.csv"
    assignments.write_text("path,cluster,confidence\nimages/00000.png,1,1.0\n")
    assert_one_line_error(cli("evaluate", assignments, "--labels", short), "line 3")


def test_labels_file_with_a_byte_order_mark(cli, tmp_path):
    assignments, labels = tmp_path / "a.csv", tmp_path / "labels.csv"
    assignments.write_text("path,cluster\na.png,0\nb.png,1\n")
    labels.write_text("path,label\na.png,x\nb.png,y\n", encoding="utf-8-sig")
    result = cli("evaluate", assignments, "--labels", labels, "--json")
    assert result.code == 0, result.err


def test_a_fit_that_fails_leaves_no_run_folder_behind(cli, tmp_path, digits_dir):
    few = tmp_path / "few"
    few.mkdir()
    for name in sorted((digits_dir / "images").iterdir())[:3]:
        shutil.copy(name, few / name.name)
    out = tmp_path / "run"
    result = cli("fit", few, "--method", "spectral", "--k", "auto", "--out", out)
    assert_one_line_error(result, "--k auto needs at least 4 images")
    assert not out.exists()
    retry = cli("fit", few, "--method", "spectral", "--k", "2", "--out", out, "--quiet")
    assert retry.code == 0, retry.err


def test_force_replaces_a_previous_runs_files(cli, tmp_path):
    out = tmp_path / "run"
    assert (
        cli("fit", "builtin:digits", "--method", "depict", "--k", "3", "--out", out, "--quiet", *FAST_DEPICT).code == 0
    )
    assert (out / "history.jsonl").is_file() and (out / "train_state.ckpt").is_file()
    forced = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--out", out, "--force", "--quiet")
    assert forced.code == 0, forced.err
    assert not (out / "history.jsonl").exists() and not (out / "train_state.ckpt").exists()
    assert_one_line_error(
        cli("fit", "builtin:digits", "--method", "depict", "--k", "3", "--out", out, "--resume"), "is a kmeans run"
    )


@pytest.mark.parametrize(
    "setting, fragment",
    [
        ("k=[1, 2]", "--k must be an integer"),
        ("image_size=0", "kmeans: option image_size must be >= 1, got 0"),
        ("channels=2", "kmeans: option channels must be one of 1, 3 or null, got 2"),
        ("max_image_size=0", "kmeans: option max_image_size must be >= 1, got 0"),
    ],
)
def test_bad_values_in_a_config_file(cli, tmp_path, setting, fragment):
    config = tmp_path / "config.yaml"
    key, value = setting.split("=", 1)
    config.write_text(f"method: kmeans\nk: 3\n{key}: {value}\n")
    result = cli("fit", "builtin:digits", "--config", config, "--out", tmp_path / "run")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_config_file_that_is_not_text_and_a_nan_option(cli, tmp_path):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"\xff\xfe\x00k: 3")
    result = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--config", binary)
    assert_one_line_error(result, "not UTF-8")
    result = cli("fit", "builtin:digits", "--method", "depict", "--k", "3", "--set", "lr=nan")
    assert_one_line_error(result, "depict: option lr must be a finite number")


def test_damaged_checkpoint_and_bad_batch_size(cli, tmp_path, digits_dir):
    out = tmp_path / "run"
    assert cli("fit", digits_dir, "--method", "kmeans", "--k", "3", "--out", out, "--quiet").code == 0
    assert_one_line_error(
        cli("assign", digits_dir, "--model", out, "--batch-size", "0"), "--batch-size must be at least 1"
    )
    payload = torch.load(out / "model.ckpt", weights_only=True)
    del payload["state"]
    torch.save(payload, tmp_path / "damaged.ckpt")
    assert_one_line_error(cli("assign", digits_dir, "--model", tmp_path / "damaged.ckpt"), "damaged")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_a_gpu_by_any_method(cli, tmp_path, digits_dir):
    result = cli("fit", digits_dir, "--method", "kmeans", "--k", "3", "--device", "cuda", "--out", tmp_path / "run")
    assert_one_line_error(result, "sees no CUDA GPU")
    assert not (tmp_path / "run").exists()
    assert cli("fit", digits_dir, "--method", "kmeans", "--k", "3", "--out", tmp_path / "run", "--quiet").code == 0
    assert_one_line_error(
        cli("assign", digits_dir, "--model", tmp_path / "run", "--device", "cuda"), "sees no CUDA GPU"
    )


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_k_auto_on_identical_images(cli, tmp_path, digits_dir, method):
    folder = tmp_path / "same"
    folder.mkdir()
    for i in range(6):
        shutil.copy(digits_dir / "images" / "00000.png", folder / f"{i}.png")
    result = cli("fit", folder, "--method", method, "--k", "auto", "--out", tmp_path / "run")
    assert_one_line_error(result, "all alike")
    assert "Warning" not in result.err


def test_depict_on_long_thin_images_says_which_option_keeps_them_larger(cli, tmp_path, digits_dir):
    from PIL import Image

    thin = tmp_path / "thin"
    thin.mkdir()
    for name in sorted((digits_dir / "images").iterdir())[:12]:
        Image.open(name).resize((200, 8)).save(thin / name.name)
    result = cli("fit", thin, "--method", "depict", "--k", "2", "--out", tmp_path / "run")
    assert_one_line_error(result, "too small for this encoder", "max_image_size")
