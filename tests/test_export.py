"""`clusterkit export`: every image lands once in DEST/<cluster>/, byte for byte; nothing is overwritten;
a dry run touches nothing; a --move killed at any step loses nothing and finishes when run again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clusterkit.outputs import export as exporting
from clusterkit.outputs.export import JOURNAL_NAME, TEMP_SUFFIX


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = [line for line in result.err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- runs to export ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory, digits_dir) -> tuple[Path, Path]:
    """A k-means run (k=10) fit on the first 120 exported digits in subfolders a/ and b/ (with a
    name in both, so that collisions occur): (run folder, image folder)."""
    from clusterkit.workflows.fit import FitRequest, run_fit

    base = tmp_path_factory.mktemp("fitted")
    images = base / "images"
    for i in range(120):
        sub = images / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(digits_dir / "images" / f"{i:05d}.png", sub / f"{i // 2:05d}.png")  # a/00000 and b/00000 ...
    run_fit(FitRequest(source=str(images), method="kmeans", k="10", out=base / "run"))
    return base / "run", images


def clone_run(run: Path, images: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The run and its images copied under tmp_path, the run pointing at the copy: a run to move."""
    new_images, new_run = tmp_path / "images", tmp_path / "run"
    shutil.copytree(images, new_images)
    shutil.copytree(run, new_run)
    metrics = json.loads((new_run / "metrics.json").read_text())
    metrics["source_root"] = str(new_images.resolve())
    (new_run / "metrics.json").write_text(json.dumps(metrics))
    return new_run, new_images


def hand_run(tmp_path: Path, root: Path, rows: dict[str, str], name: str = "run") -> Path:
    """A run folder written by hand: its images are `root`/PATH, assigned to the given clusters."""
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text("method: kmeans\nk: 2\n")
    metrics = {"method": "kmeans", "source": str(root), "source_root": str(root.resolve()), "labels_file": None}
    (run / "metrics.json").write_text(json.dumps(metrics))
    lines = ["path,cluster,confidence"] + [f"{path},{cluster},1.0" for path, cluster in rows.items()]
    (run / "assignments.csv").write_text("\n".join(lines) + "\n")
    return run


def png(digits_dir: Path, i: int) -> bytes:
    return (digits_dir / "images" / f"{i:05d}.png").read_bytes()


def contents(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file below `folder` (symlinks read through), the journal aside."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != JOURNAL_NAME
    }


def assignments(run: Path) -> dict[str, str]:
    lines = (run / "assignments.csv").read_text().splitlines()[1:]
    return {line.split(",")[0]: line.split(",")[1] for line in lines}


def assert_exported_once(dest: Path, originals: dict[str, bytes], clusters: dict[str, str]) -> None:
    """Each original file is in DEST exactly once, in its cluster's folder, byte for byte, and DEST
    holds nothing else (no temporary file)."""
    exported = contents(dest)
    assert len(exported) == len(originals), sorted(set(exported))[:5]
    assert not [p for p in dest.rglob(f"*{TEMP_SUFFIX}")]
    by_cluster: dict[str, list[bytes]] = {}
    for target, data in exported.items():
        by_cluster.setdefault(target.split("/")[0], []).append(data)
    for path, data in originals.items():
        assert data in by_cluster[clusters[path]], path
    assert sorted(exported.values()) == sorted(originals.values())


# --- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["link", "copy", "move"])
def test_round_trip_keeps_every_file_byte_for_byte(cli, tmp_path, fitted, mode):
    run, images = clone_run(*fitted, tmp_path)
    originals, clusters = contents(images), assignments(run)
    result = cli("export", run, tmp_path / "dest", f"--{mode}", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["counts"] == {mode: 120} and summary["problems"] == []
    assert f"exported 120 images into {tmp_path / 'dest'}" in result.err
    dest = tmp_path / "dest"
    assert_exported_once(dest, originals, clusters)
    # names kept, subfolders flattened; of two same names in one cluster, the later (b/, sorted) numbered
    shared = [
        name for name in (f"{i:05d}" for i in range(60)) if clusters[f"a/{name}.png"] == clusters[f"b/{name}.png"]
    ]
    assert shared
    for name in shared:
        folder = dest / clusters[f"a/{name}.png"]
        assert (folder / f"{name}.png").read_bytes() == originals[f"a/{name}.png"]
        assert (folder / f"{name}-2.png").read_bytes() == originals[f"b/{name}.png"]
    targets = [p for p in dest.rglob("*.png")]
    if mode == "link":
        assert all(p.is_symlink() and os.path.isabs(os.readlink(p)) for p in targets)
        assert contents(images) == originals
    elif mode == "copy":
        assert not any(p.is_symlink() for p in targets) and contents(images) == originals
    else:
        assert contents(images) == {}
    again = cli("export", run, dest, f"--{mode}", "--json")  # a finished export run again changes nothing
    assert again.code == 0 and json.loads(again.out)["counts"] == {"done": 120}, again.err
    assert_exported_once(dest, originals, clusters)


def test_the_default_is_link_and_modes_exclude_each_other(cli, tmp_path, fitted):
    run, _ = fitted
    result = cli("export", run, tmp_path / "dest", "--dry-run", "--json")
    assert json.loads(result.out)["mode"] == "link"
    assert_one_line_error(cli("export", run, tmp_path / "dest", "--copy", "--move"), "choose one of")


def test_collisions_never_overwrite_and_are_numbered_deterministically(cli, tmp_path, digits_dir):
    src = tmp_path / "src"
    names = ["a/x.png", "b/x.png", "c/Z.png", "d/z.png", "x-2.png", "y.png"]
    for i, name in enumerate(names):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(png(digits_dir, i))
    run = hand_run(tmp_path, src, {name: "1" if name == "y.png" else "0" for name in names})
    dest = tmp_path / "dest"
    (dest / "0").mkdir(parents=True)
    (dest / "0" / "x.png").write_bytes(b"someone else's file")
    (dest / "1").mkdir()
    (dest / "1" / "y.png").write_bytes(png(digits_dir, 5))  # already this image's copy: kept as its export

    plan = cli("export", run, dest, "--copy", "--dry-run", "--json")
    targets = {
        Path(row["source"]).relative_to(src.resolve()).as_posix(): row["target"] for row in json.loads(plan.out)["plan"]
    }
    assert targets == {
        "a/x.png": str(dest / "0/x-2.png"),  # x.png is another file's
        "b/x.png": str(dest / "0/x-3.png"),
        "c/Z.png": str(dest / "0/Z.png"),
        "d/z.png": str(dest / "0/z-2.png"),  # Z.png and z.png are one name on a case-insensitive disk
        "x-2.png": str(dest / "0/x-2-2.png"),
        "y.png": str(dest / "1/y.png"),
    }
    result = cli("export", run, dest, "--copy", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["counts"] == {"copy": 5, "done": 1}
    assert (dest / "0" / "x.png").read_bytes() == b"someone else's file"
    for source, target in targets.items():
        assert Path(target).read_bytes() == (src / source).read_bytes()


def test_a_file_in_the_way_after_planning_is_a_conflict_not_overwritten(cli, tmp_path, digits_dir):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(png(digits_dir, 0))
    (src / "b.png").write_bytes(png(digits_dir, 1))
    run = hand_run(tmp_path, src, {"a.png": "0", "b.png": "0"})
    dest = tmp_path / "dest"
    plan = exporting.plan_export(run, dest, "move")
    (dest / "0").mkdir(parents=True)
    (dest / "0" / "a.png").write_bytes(b"appeared meanwhile")
    summary = exporting.execute(plan)
    assert summary.counts == {"conflict": 1, "move": 1}
    assert (dest / "0" / "a.png").read_bytes() == b"appeared meanwhile"
    assert (src / "a.png").read_bytes() == png(digits_dir, 0)


def test_dest_inside_the_source_folder_never_removes_a_file(cli, tmp_path, digits_dir):
    src = tmp_path / "src"
    (src / "0").mkdir(parents=True)
    (src / "0" / "x.png").write_bytes(png(digits_dir, 0))
    run = hand_run(tmp_path, src, {"0/x.png": "0"})
    result = cli("export", run, src, "--move", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["counts"] == {"done": 1}
    assert (src / "0" / "x.png").read_bytes() == png(digits_dir, 0)


def test_a_look_alike_already_in_dest_does_not_count_as_a_moved_file(cli, tmp_path, digits_dir):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.png").write_bytes(png(digits_dir, 0))
    run = hand_run(tmp_path, src, {"x.png": "0"})
    (tmp_path / "dest" / "0").mkdir(parents=True)
    (tmp_path / "dest" / "0" / "x.png").write_bytes(png(digits_dir, 0))  # the same bytes, not put there by export
    result = cli("export", run, tmp_path / "dest", "--move")
    assert result.code == 0, result.err
    assert contents(tmp_path / "dest") == {"0/x-2.png": png(digits_dir, 0), "0/x.png": png(digits_dir, 0)}


# --- dry run -------------------------------------------------------------------------------------
def tree(folder: Path) -> dict[str, tuple]:
    return {
        p.relative_to(folder).as_posix(): (p.is_symlink(), p.lstat().st_mtime_ns, p.lstat().st_size)
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("mode", ["link", "copy", "move"])
def test_dry_run_prints_the_plan_and_touches_nothing(cli, tmp_path, fitted, mode):
    run, images = clone_run(*fitted, tmp_path)
    before = tree(tmp_path)
    result = cli("export", run, tmp_path / "dest", f"--{mode}", "--dry-run")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 120 and all(line.startswith(f"{mode} ") and " -> " in line for line in lines)
    assert str(images.resolve() / "a" / "00000.png") in result.out
    assert "dry run, nothing changed" in result.err
    assert tree(tmp_path) == before and not (tmp_path / "dest").exists()
    as_json = json.loads(cli("export", run, tmp_path / "dest", f"--{mode}", "--dry-run", "--json").out)
    assert as_json["dry_run"] and len(as_json["plan"]) == 120 and as_json["counts"] == {mode: 120}
    assert tree(tmp_path) == before


def test_dry_run_of_an_interrupted_move_shows_what_is_left(cli, tmp_path, fitted):
    run, _ = clone_run(*fitted, tmp_path)
    dest = tmp_path / "dest"
    plan = exporting.plan_export(run, dest, "move")
    exporting.execute(exporting.Plan(plan.dest, plan.mode, plan.run, plan.assignments_sha256, plan.entries[:30]))
    exporting._write_journal(plan)  # as if killed after 30 files of the whole plan
    before = tree(tmp_path)
    result = cli("export", run, dest, "--move", "--dry-run", "--json")
    assert json.loads(result.out)["counts"] == {"done": 30, "move": 90}
    assert tree(tmp_path) == before


# --- --move killed and run again ------------------------------------------------------------------
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from clusterkit.outputs import export as ex
    from clusterkit.cli.main import run

    owner, name, nth, when, across = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
    if across:
        ex._same_filesystem = lambda path, folder: False
    target = os if owner == "os" else ex
    real, calls = getattr(target, name), [0]

    def hooked(*args, **kwargs):
        calls[0] += 1
        if when == "before" and calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if when == "after" and calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        if when == "slow":
            import time; time.sleep(0.01)
        return result

    setattr(target, name, hooked)
    sys.argv = ["clusterkit", "export", *sys.argv[6:]]
    run()
    """
)


def export_killed(run: Path, dest: Path, hook: tuple[str, str, int, str], across: bool) -> subprocess.Popen:
    owner, name, nth, when = hook
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLER,
            owner,
            name,
            str(nth),
            when,
            "1" if across else "0",
            str(run),
            str(dest),
            "--move",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_nothing_lost(images: Path, dest: Path, originals: dict[str, bytes]) -> None:
    """Every original content is still somewhere: at its source, or in DEST (a target or a temporary)."""
    everywhere = sorted(contents(images).values()) + sorted(
        p.read_bytes() for p in dest.rglob("*") if p.is_file() and p.name != JOURNAL_NAME
    )
    for path, data in originals.items():
        assert data in everywhere, path


KILL_POINTS = [  # (where the export is killed, across file systems, then: finished moves, temporaries removed)
    # same file system: the export stops ...
    (("os", "replace", 1, "before"), False, 0, 0),  # ... while saving the plan: nothing moved, a temporary plan left
    (("os", "link", 40, "after"), False, 1, 0),  # ... with a file under both names (linked, source not unlinked)
    (("ex", "_place", 40, "after"), False, 0, 0),  # ... between two files
    # across file systems: ...
    (("ex", "_copy_to_temp", 40, "after"), True, 0, 1),  # ... with a temporary copy not yet in place
    (("os", "link", 40, "after"), True, 1, 1),  # ... with the copy in place and still under its temporary name
    (("ex", "_remove_source", 40, "before"), True, 1, 0),  # ... with the copy in place, the source not removed
    (("ex", "_remove_source", 40, "after"), True, 0, 0),  # ... just after a source was removed
]


@pytest.mark.parametrize(
    ("hook", "across", "finished", "temps"),
    KILL_POINTS,
    ids=[f"{h[1]}-{h[3]}-{'across' if a else 'same'}" for h, a, *_ in KILL_POINTS],
)
def test_a_move_killed_midway_loses_nothing_and_finishes_when_run_again(
    cli, tmp_path, fitted, monkeypatch, hook, across, finished, temps
):
    run, images = clone_run(*fitted, tmp_path)
    originals, clusters = contents(images), assignments(run)
    dest = tmp_path / "dest"
    proc = export_killed(run, dest, hook, across)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert_nothing_lost(images, dest, originals)
    if across:
        monkeypatch.setattr(exporting, "_same_filesystem", lambda path, folder: False)
    result = cli("export", run, dest, "--move", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    counts = summary["counts"]
    assert sum(counts.values()) == 120 and set(counts) <= {"move", "done", "finish"}, counts
    assert counts.get("finish", 0) == finished and summary["temps_removed"] == temps, summary
    assert_exported_once(dest, originals, clusters)
    assert contents(images) == {}


def test_a_move_killed_at_a_random_moment_loses_nothing(cli, tmp_path, fitted):
    run, images = clone_run(*fitted, tmp_path)
    originals, clusters = contents(images), assignments(run)
    dest = tmp_path / "dest"
    proc = export_killed(run, dest, ("ex", "_place", 0, "slow"), across=False)
    deadline = time.monotonic() + 120
    while len(list(dest.rglob("*.png"))) < 20:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.kill()
    proc.communicate(timeout=60)
    assert_nothing_lost(images, dest, originals)
    result = cli("export", run, dest, "--move")
    assert result.code == 0, result.err
    assert_exported_once(dest, originals, clusters)


def test_a_move_across_file_systems_copies_verifies_then_removes(cli, tmp_path, fitted, monkeypatch):
    run, images = clone_run(*fitted, tmp_path)
    originals, clusters = contents(images), assignments(run)
    monkeypatch.setattr(exporting, "_same_filesystem", lambda path, folder: False)
    placed, real_place = [], exporting._place
    monkeypatch.setattr(exporting, "_place", lambda path, target: placed.append(path) or real_place(path, target))
    dest = tmp_path / "dest"
    result = cli("export", run, dest, "--move", "--json")
    assert result.code == 0 and json.loads(result.out)["counts"] == {"move": 120}, result.err
    assert_exported_once(dest, originals, clusters)
    assert len(placed) == 120 and all(p.name.endswith(TEMP_SUFFIX) for p in placed)  # copies, not renames
    journal = json.loads((dest / JOURNAL_NAME).read_text())
    assert all(len(entry["sha256"]) == 64 for entry in journal["entries"])


def test_a_copy_that_does_not_verify_keeps_the_source(cli, tmp_path, digits_dir, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(png(digits_dir, 0))
    run = hand_run(tmp_path, src, {"a.png": "0"})
    monkeypatch.setattr(exporting, "_same_filesystem", lambda path, folder: False)
    real = exporting._copy_to_temp

    def corrupting(source, target, durable):
        tmp = real(source, target, durable)
        tmp.write_bytes(tmp.read_bytes()[:-1] + b"!")
        return tmp

    monkeypatch.setattr(exporting, "_copy_to_temp", corrupting)
    result = cli("export", run, tmp_path / "dest", "--move")
    assert_one_line_error(result, "1 of 1 images were not exported", "1 failed")
    assert "the copy differs from the source" in result.err
    assert (src / "a.png").read_bytes() == png(digits_dir, 0)
    assert contents(tmp_path / "dest") == {}


def test_a_symlinked_source_is_not_moved(cli, tmp_path, digits_dir):
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "real.png").write_bytes(png(digits_dir, 0))
    (src / "a.png").symlink_to(tmp_path / "real.png")
    run = hand_run(tmp_path, src, {"a.png": "0"})
    result = cli("export", run, tmp_path / "dest", "--move")
    assert_one_line_error(result, "1 not moved (not a regular file)")
    assert (src / "a.png").is_symlink() and (tmp_path / "real.png").read_bytes() == png(digits_dir, 0)


# --- bad input -------------------------------------------------------------------------------------
def test_a_missing_source_is_reported_and_the_others_exported(cli, tmp_path, fitted):
    run, images = clone_run(*fitted, tmp_path)
    (images / "a" / "00007.png").unlink()
    result = cli("export", run, tmp_path / "dest", "--copy", "--json")
    assert_one_line_error(result, "1 of 120 images were not exported", "1 missing")
    summary = json.loads(result.out)
    assert summary["counts"] == {"copy": 119, "missing": 1}
    assert summary["problems"][0]["source"] == str(images.resolve() / "a" / "00007.png")
    assert "00007.png" in result.err and "source file not found" in result.err
    assert len(contents(tmp_path / "dest")) == 119


def test_not_a_run(cli, tmp_path):
    assert_one_line_error(cli("export", tmp_path, tmp_path / "dest"), "is not a clusterkit run")
    assert not (tmp_path / "dest").exists()


def test_a_builtin_run_names_datasets_export(cli, tmp_path):
    from clusterkit.workflows.fit import FitRequest, run_fit

    run_fit(FitRequest(source="builtin:digits", method="kmeans", k="2", overrides=["n_init=1"], out=tmp_path / "run"))
    result = cli("export", tmp_path / "run", tmp_path / "dest")
    assert_one_line_error(result, "builtin:digits", "clusterkit datasets export digits DIR")
    assert not (tmp_path / "dest").exists()


def test_dest_is_a_file(cli, tmp_path, fitted):
    (tmp_path / "dest").write_text("a file")
    assert_one_line_error(cli("export", fitted[0], tmp_path / "dest"), "it is a file, not a folder")
    (tmp_path / "dest").unlink()
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / assignments(fitted[0])["a/00000.png"]).write_text("a file")
    assert_one_line_error(cli("export", fitted[0], tmp_path / "dest"), "it is a file, not a folder")


def test_an_export_of_another_mode_or_other_assignments_is_not_taken_over(cli, tmp_path, fitted):
    run, _ = clone_run(*fitted, tmp_path)
    assert cli("export", run, tmp_path / "dest", "--link").code == 0
    assert_one_line_error(cli("export", run, tmp_path / "dest", "--copy"), "made with --link", "--link")
    with (run / "assignments.csv").open("a") as fh:
        fh.write("extra.png,0,1.0\n")
    assert_one_line_error(cli("export", run, tmp_path / "dest", "--link"), "other assignments")


def test_a_run_from_before_sources_were_recorded(cli, tmp_path, fitted):
    run, _ = clone_run(*fitted, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["source"], metrics["source_root"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert_one_line_error(cli("export", run, tmp_path / "dest"), "fit it again")
