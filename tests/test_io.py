"""Atomic writes: all or nothing, and the permissions of an ordinary file."""

from __future__ import annotations

import os
import stat

import pytest

from clusterkit.io import atomic_write, atomic_write_text


def test_atomic_write_gives_the_umask_mode_not_a_private_one(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "out.csv", "a,b\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")

    def fail(fh):
        fh.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_named_pipe_is_written_into_not_replaced(tmp_path):
    """`assign --output /dev/null` renamed a temp file onto /dev/null, which as root replaces the
    device with a regular file. A pipe shows the same: the reader gets the text, the pipe stays."""
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    atomic_write_text(fifo, "path,cluster\n")
    reader.join(timeout=10)
    assert received == ["path,cluster\n"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temp file left beside it


def test_a_folder_or_impossible_target_is_an_input_error_naming_it(tmp_path):
    from clusterkit.errors import InputError
    from clusterkit.io import is_atomic_temp

    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match=f"cannot write {tmp_path / 'out'}: it is a folder"):
        atomic_write_text(tmp_path / "out", "x")
    with pytest.raises(InputError, match="cannot write /proc/nope/x"):
        atomic_write_text("/proc/nope/x", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert is_atomic_temp(".model.ckpt.q_y_9_e_.tmp", "model.ckpt")
    assert not is_atomic_temp(".model.ckpt.tmp", "model.ckpt") and not is_atomic_temp("model.ckpt", "model.ckpt")
