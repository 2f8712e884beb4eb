"""Sources and decoding: folder order, list files, EXIF orientation, channels, bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clusterkit.data import load_images
from clusterkit.data.builtin import load_builtin, occlude
from clusterkit.data.sources import list_source
from clusterkit.errors import InputError


def save(path, array, mode="L", **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path, **kwargs)


def test_folder_is_recursive_sorted_and_case_insensitive(tmp_path):
    img = np.zeros((4, 4))
    save(tmp_path / "b" / "x.PNG", img)
    save(tmp_path / "a.jpg", img)
    (tmp_path / "notes.txt").write_text("not an image")
    names = [f.name for f in list_source(str(tmp_path))]
    assert names == ["a.jpg", "b/x.PNG"]


def test_folder_follows_symlinked_folders_once_and_skips_hidden_entries(tmp_path):
    img = np.zeros((4, 4))
    save(tmp_path / "real" / "a.png", img)
    save(tmp_path / "top" / ".ipynb_checkpoints" / "a-checkpoint.png", img)
    save(tmp_path / "top" / "._b.png", img)
    save(tmp_path / "top" / "b.png", img)
    (tmp_path / "top" / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "top" / "loop").symlink_to(tmp_path / "top")
    (tmp_path / "top" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    names = [f.name for f in list_source(str(tmp_path / "top"))]
    assert names == ["b.png", "gone.png", "linked/a.png"]
    images = load_images(str(tmp_path / "top"))
    assert images.paths == ["b.png", "linked/a.png"] and [name for name, _ in images.skipped] == ["gone.png"]


def test_list_file_paths_are_kept_as_given(tmp_path, monkeypatch):
    save(tmp_path / "imgs" / "one.png", np.full((4, 4), 200))
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/one.png\n\n")
    monkeypatch.chdir(tmp_path)
    images = load_images(str(listing))
    assert images.paths == ["imgs/one.png"] and images.pixels[0, 0, 0, 0] == 200


def test_exif_orientation_is_applied(tmp_path):
    # A 2x4 (h x w) image whose EXIF says "rotate 90° clockwise" must load as 4x2.
    arr = np.zeros((2, 4, 3), dtype=np.uint8)
    arr[0, 0] = 255  # top-left marker
    img = Image.fromarray(arr, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.png", exif=exif.tobytes())
    images = load_images(str(tmp_path))
    assert images.pixels.shape == (1, 3, 4, 2)
    # rotating 90° clockwise moves the top-left corner to the top-right
    assert images.pixels[0, 0, 0, 1] > 128 and images.pixels[0, 0, 0, 0] < 128


def test_grayscale_stays_one_channel_and_colour_is_three(tmp_path):
    save(tmp_path / "g" / "a.png", np.full((5, 5), 10))
    save(tmp_path / "c" / "a.png", np.full((5, 5, 3), 10), mode="RGB")
    assert load_images(str(tmp_path / "g")).channels == 1
    assert load_images(str(tmp_path / "c")).channels == 3
    assert load_images(str(tmp_path / "g"), channels=3).channels == 3


def test_sixteen_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 1, 16).reshape(4, 4)
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "a16.png")
    Image.fromarray(ramp.astype(np.float32), mode="F").save(tmp_path / "b_float.tif")
    images = load_images(str(tmp_path))
    expected = np.rint(ramp * 255).astype(np.uint8)
    assert images.channels == 1
    assert np.abs(images.pixels[:, 0].astype(int) - expected).max() <= 1


def test_sizes_follow_first_image_capped(tmp_path):
    save(tmp_path / "a.png", np.zeros((100, 200)))
    save(tmp_path / "b.png", np.zeros((30, 30)))
    images = load_images(str(tmp_path), max_image_size=64)
    assert images.size == (32, 64)
    assert load_images(str(tmp_path), image_size=16).size == (16, 16)


def test_truncated_file_is_skipped(tmp_path):
    save(tmp_path / "good.png", np.zeros((4, 4)))
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(buffer, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[:200])
    images = load_images(str(tmp_path))
    assert images.paths == ["good.png"]
    assert [name for name, _ in images.skipped] == ["cut.jpg"]


def test_unknown_builtin():
    with pytest.raises(InputError, match="digits"):
        load_images("builtin:cifar")


def test_builtin_digits_and_resampling():
    images = load_images("builtin:digits")
    assert len(images) == 1797 and images.size == (8, 8) and images.labels[:3] == ["0", "1", "2"]
    big = load_images("builtin:digits", image_size=16, channels=3)
    assert big.pixels.shape == (1797, 3, 16, 16)


def test_occlusion_covers_a_quarter():
    pixels = np.full((50, 1, 8, 8), 255, dtype=np.uint8)
    occluded = occlude(pixels)
    black = (occluded == 0).reshape(50, -1).mean(axis=1)
    assert np.allclose(black, 16 / 64)
    # seeded: the same positions every time
    assert (occlude(pixels) == occluded).all()
    assert (load_builtin("digits-occluded").pixels <= load_builtin("digits").pixels).all()


def test_photo_crops_are_real_rgb_images_of_two_photos():
    crops = load_builtin("photo-crops")
    assert crops.pixels.shape == (300, 3, 64, 64) and crops.pixels.dtype == np.uint8
    assert sorted(set(crops.labels)) == ["china", "flower"] and crops.labels.count("china") == 150
    assert crops.pixels.reshape(300, -1).std(axis=1).min() > 0  # no blank crop
    assert (load_builtin("photo-crops").pixels == crops.pixels).all()  # seeded
