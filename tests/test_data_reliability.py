"""The data layer on hostile or unusual input: pipes, huge sizes, high bit depths, path types,
symlink aliases, list entries, export targets. Each test failed before its fix."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clusterkit.data import decode, load_images, load_like
from clusterkit.data.sources import list_source
from clusterkit.errors import ClusterkitError, InputError


def save(path: Path, array, mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


def run_python(code: str, timeout: float = 120, memory_limit: int | None = None) -> dict:
    """Run `code` in a fresh interpreter (what it prints last is JSON): a hang or a memory blow-up of
    the code under test then fails this test instead of taking the test run or the machine down."""

    def limit() -> None:
        if memory_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


# D11: pipes and devices


def test_named_pipe_in_a_folder_or_a_list_is_skipped_not_waited_on(tmp_path):
    folder = tmp_path / "imgs"
    save(folder / "good.png", np.full((4, 4), 100))
    os.mkfifo(folder / "pipe.png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'good.png'}\n{folder / 'pipe.png'}\n")
    result = run_python(
        f"""
        import json
        from clusterkit.data import load_images
        out = {{}}
        for source in ({str(folder)!r}, {str(listing)!r}):
            images = load_images(source)
            out[source] = [images.paths, images.skipped]
        print(json.dumps(out))
        """,
        timeout=60,
    )
    paths, skipped = result[str(folder)]
    assert paths == ["good.png"] and skipped == [["pipe.png", "not a regular file"]]
    paths, skipped = result[str(listing)]
    assert paths == [str(folder / "good.png")] and skipped == [[str(folder / "pipe.png"), "not a regular file"]]


def test_a_pipe_is_refused_before_it_is_opened(tmp_path):
    os.mkfifo(tmp_path / "p.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "p.png")  # checked after following the link
    result = run_python(
        f"""
        import json
        from clusterkit.data.decode import open_image
        out = []
        for name in ("p.png", "link.png"):
            try:
                open_image({str(tmp_path)!r} + "/" + name)
            except OSError as exc:
                out.append(str(exc))
        print(json.dumps(out))
        """,
        timeout=60,
    )
    assert result == ["not a regular file", "not a regular file"]


# D2: memory


def test_a_size_that_cannot_fit_in_memory_is_refused_up_front(tmp_path):
    save(tmp_path / "imgs" / "a.png", np.zeros((4, 4)))
    save(tmp_path / "imgs" / "b.png", np.zeros((4, 4)))
    # 10^12 bytes an image: more than any machine has. The address-space limit only keeps the old
    # code, which tried, from eating the machine's memory.
    result = run_python(
        f"""
        import json
        from clusterkit.data import load_images
        from clusterkit.errors import InputError
        out = {{}}
        for source in ({str(tmp_path / "imgs")!r}, "builtin:digits"):
            try:
                load_images(source, image_size=1_000_000)
                out[source] = "loaded"
            except InputError as exc:
                out[source] = str(exc)
            except MemoryError:
                out[source] = "MemoryError"
        print(json.dumps(out))
        """,
        memory_limit=4 << 30,
    )
    folder_message, builtin_message = result[str(tmp_path / "imgs")], result["builtin:digits"]
    assert "2 images of 1 x 1000000 x 1000000 pixels need 1,862.6 GiB of memory" in folder_message
    assert "available" in folder_message and "image_size" in folder_message and "\n" not in folder_message
    assert "1797 images of 1 x 1000000 x 1000000 pixels need" in builtin_message


def test_running_out_of_memory_while_decoding_is_one_error_not_a_skip_per_file(tmp_path, monkeypatch, capsys):
    for name in ("a.png", "b.png", "c.png"):
        save(tmp_path / name, np.zeros((4, 4)))

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(decode, "to_array", no_memory)
    with pytest.raises(ClusterkitError, match="ran out of memory") as info:
        load_images(str(tmp_path), image_size=4, channels=1)
    assert not isinstance(info.value, InputError)  # not "none of the files could be read"
    assert "skipped" not in capsys.readouterr().err


# D7: high bit depths


def test_twelve_bit_data_in_a_sixteen_bit_png_keeps_its_contrast(tmp_path):
    data = np.random.default_rng(0).integers(0, 4096, (16, 16)).astype(np.uint16)
    data[0, :2] = (0, 4095)
    Image.fromarray(data).save(tmp_path / "a12.png")
    pixels = load_images(str(tmp_path)).pixels[0, 0].astype(int)
    assert pixels[0, 0] == 0 and pixels[0, 1] == 255
    assert np.abs(pixels - np.rint(data / 4095 * 255)).max() <= 1  # 12-bit read as 12-bit


def test_full_range_sixteen_bit_is_divided_by_257(tmp_path):
    data = np.array([[0, 257 * 10, 257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(data).save(tmp_path / "a.png")
    assert load_images(str(tmp_path)).pixels[0, 0, 0].tolist() == [0, 10, 128, 255]


@pytest.mark.parametrize("low, high", [(-1.0, 1.0), (0.0, 1000.0)])
def test_float_tiff_outside_zero_one_is_stretched_by_its_range(tmp_path, low, high):
    ramp = np.linspace(low, high, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    pixels = load_images(str(tmp_path)).pixels[0, 0].astype(int)
    expected = np.rint((ramp - low) / (high - low) * 255)
    assert np.abs(pixels - expected).max() <= 1  # neither black nor white: the whole ramp


# D8: path types, empty subsets


def test_path_objects_are_accepted_as_sources(tmp_path):
    save(tmp_path / "imgs" / "a.png", np.full((4, 4), 7))
    listing = tmp_path / "list.txt"
    listing.write_text(str(tmp_path / "imgs" / "a.png") + "\n")
    assert load_images(tmp_path / "imgs").paths == ["a.png"]
    assert load_images(listing).pixels[0, 0, 0, 0] == 7
    assert [f.name for f in list_source(tmp_path / "imgs")] == ["a.png"]
    assert load_like(tmp_path / "imgs", "pixels", (3, 2, 2)).pixels.shape == (1, 3, 2, 2)


def test_an_empty_subset_keeps_the_shape():
    images = load_images("builtin:digits")
    for index in ([], np.array([], dtype=int), range(0)):
        empty = images.subset(index)
        assert len(empty) == 0 and empty.pixels.shape == (0, 1, 8, 8) and empty.labels == []


# D12: symlink aliases


@pytest.mark.parametrize("order", ["listed", "reversed"])
def test_a_folder_reached_twice_is_named_by_its_sorted_first_alias(tmp_path, monkeypatch, order):
    save(tmp_path / "real_a" / "x.png", np.zeros((4, 4)))
    (tmp_path / "zlink_a").symlink_to("real_a")
    save(tmp_path / "zreal_b" / "y.png", np.zeros((4, 4)))
    (tmp_path / "alink_b").symlink_to("zreal_b")
    real_walk = os.walk

    def walk_in_order(top, **kwargs):
        """The file system's directory order is arbitrary: try it both ways."""
        for root, dirs, files in real_walk(top, **kwargs):
            if order == "reversed":
                dirs.reverse()  # in place, as os.walk's own list
            yield root, dirs, files

    monkeypatch.setattr(os, "walk", walk_in_order)
    assert [f.name for f in list_source(str(tmp_path))] == ["alink_b/y.png", "real_a/x.png"]


# D13: list entries


def test_a_backslash_list_entry_opens_the_file_it_is_named_as(tmp_path, monkeypatch):
    save(tmp_path / "good" / "g0.png", np.full((4, 4), 50))
    monkeypatch.chdir(tmp_path)
    images = load_images("-", stdin=io.StringIO("good\\g0.png\n"))
    assert images.paths == ["good/g0.png"] and images.skipped == [] and images.pixels[0, 0, 0, 0] == 50


def test_skip_reasons_hold_no_path_and_no_stray_quote(tmp_path, monkeypatch):
    save(tmp_path / "good.png", np.zeros((4, 4)))
    (tmp_path / "text.png").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    names = "good.png\nmissing\\x.png\nnon-utf8-\udcff.png\ntext.png\n"
    images = load_images("-", stdin=io.StringIO(names))
    assert dict(images.skipped) == {
        "missing/x.png": "No such file or directory",
        "non-utf8-\udcff.png": "No such file or directory",
        "text.png": "cannot identify image file",
    }


# Minor: reasons when nothing is readable


def test_a_source_with_nothing_readable_names_the_reasons(cli, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    (folder / "b.jpg").write_text("hello")
    result = cli("fit", folder, "--method", "kmeans", "--k", "2", "--out", tmp_path / "run")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "none of the 2 files" in result.err
    assert "a.png: cannot identify image file; b.jpg: cannot identify image file" in result.err
    with pytest.raises(
        InputError, match=r"\(a.png: No such file or directory; .*; c.png: No such file or directory; and 2 more\)$"
    ):
        load_images("-", stdin=io.StringIO("a.png\nb.png\nc.png\nd.png\ne.png\n"))


# D10: export targets


def test_export_into_a_non_empty_folder_or_a_file_is_refused_and_writes_nothing(cli, tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep")
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    for target in (folder, a_file, a_file / "below"):
        result = cli("datasets", "export", "digits", target)
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
        assert result.err.startswith("error: cannot ") and result.out == ""
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"] and a_file.read_text() == "keep"
    assert cli("datasets", "export", "digits", tmp_path / "new" / "deeper").code == 0
