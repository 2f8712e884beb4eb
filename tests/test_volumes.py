"""Volumes as input: .npy and NIfTI files, folders that mix them with images, the built-in
digit-volumes, and the one-line errors around them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from clusterkit.data.builtin import load_builtin
from clusterkit.data.builtin_export import export_builtin
from clusterkit.data.loading import load_images, load_like, load_source
from clusterkit.data.samples import ImageSet, VolumeSet
from clusterkit.data.volumes import depth_index, to_uint8
from clusterkit.errors import InputError

nibabel = pytest.importorskip("nibabel")
SHIPPED_SCAN = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.fixture(scope="module")
def volumes_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("digit-volumes")
    export_builtin("digit-volumes", folder)
    return folder


def _rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_digit_volumes_are_real_digits_of_one_class_per_volume():
    volumes = load_builtin("digit-volumes")
    assert isinstance(volumes, VolumeSet) and len(volumes) == 300
    assert volumes.sample_shape == (12, 1, 10, 10)
    assert sorted(set(volumes.labels)) == [str(d) for d in range(10)]
    assert volumes.depths.min() >= 6 and volumes.depths.max() == 12
    first = volumes.voxels[0]
    assert first[: volumes.depths[0]].reshape(volumes.depths[0], -1).max(axis=1).min() > 100  # every slice has a digit
    assert not first[volumes.depths[0] :].any()  # padding is zeros
    again = load_builtin("digit-volumes")
    assert np.array_equal(again.voxels, volumes.voxels)  # seeded


def test_export_round_trips_through_npy_files(volumes_dir):
    built = load_builtin("digit-volumes")
    loaded = load_source(volumes_dir)
    assert isinstance(loaded, VolumeSet)
    assert loaded.paths == built.paths and loaded.file_kinds == ["volume"] * 300
    assert np.array_equal(loaded.depths, built.depths)
    assert np.array_equal(loaded.voxels, built.voxels)
    assert np.load(volumes_dir / built.paths[0]).shape == (built.depths[0], 10, 10)


def test_a_mixed_folder_gives_one_row_per_file_with_its_kind(tmp_path, digits_dir, volumes_dir):
    for name in ("00000.npy", "00001.npy"):
        (tmp_path / name).write_bytes((volumes_dir / "volumes" / name).read_bytes())
    for name in ("00000.png", "00001.png", "00002.png"):
        (tmp_path / name).write_bytes((digits_dir / "images" / name).read_bytes())
    mixed = load_source(tmp_path)
    assert mixed.paths == ["00000.npy", "00000.png", "00001.npy", "00001.png", "00002.png"]
    assert mixed.file_kinds == ["volume", "image", "volume", "image", "image"]
    assert mixed.sample_shape[2:] == (10, 10)  # the first file (a volume of 10x10 slices) sets the size
    assert list(mixed.depths) == [
        load_builtin("digit-volumes").depths[0],
        1,
        load_builtin("digit-volumes").depths[1],
        1,
        1,
    ]
    images_only = load_images(tmp_path)  # a method that reads images leaves the volumes out
    assert images_only.paths == ["00000.png", "00001.png", "00002.png"]
    with pytest.raises(InputError, match="2 volume files"):
        load_like(tmp_path, "pixels", (1, 8, 8))  # a model fitted on images refuses them


def test_nibabel_ships_a_real_scan_that_loads(tmp_path):
    (tmp_path / "scan.nii").write_bytes(SHIPPED_SCAN.read_bytes())
    scan = load_source(tmp_path)
    depth = nibabel.load(SHIPPED_SCAN).shape[2]
    assert scan.file_kinds == ["volume"] and int(scan.depths[0]) == depth
    assert scan.voxels.dtype == np.uint8 and scan.voxels.max() == 255 and scan.voxels.min() == 0  # windowed


def test_nifti_round_trip_keeps_slices_along_z(tmp_path):
    volume = np.random.default_rng(0).integers(0, 256, size=(12, 10, 7), dtype=np.uint8)  # x, y, z
    nibabel.save(nibabel.Nifti1Image(volume, affine=np.eye(4)), tmp_path / "a.nii.gz")
    loaded = load_source(tmp_path, image_size=(12, 10))
    assert loaded.paths == ["a.nii.gz"] and int(loaded.depths[0]) == 7
    assert np.array_equal(loaded.voxels[0, :, 0], np.moveaxis(volume, 2, 0))  # uint8 kept as it is


def test_volumes_deeper_than_max_depth_keep_evenly_spaced_slices(tmp_path):
    volume = np.repeat(np.arange(20, dtype=np.uint8)[:, None, None] * 10, 4, axis=1).repeat(4, axis=2)
    np.save(tmp_path / "deep.npy", volume)
    loaded = load_source(tmp_path, max_depth=5)
    assert int(loaded.depths[0]) == 5
    assert list(loaded.voxels[0, :, 0, 0, 0]) == [0, 50, 100, 140, 190]
    assert list(depth_index(3, 5)) == [0, 1, 2]


def test_float_volumes_are_windowed_and_non_finite_voxels_do_not_break_it():
    values = np.linspace(-1000.0, 3000.0, 1000).reshape(10, 10, 10)
    values[0, 0, 0] = np.nan
    values[0, 0, 1] = 1e9  # a hot voxel above the 99.5th percentile
    eight = to_uint8(values)
    assert eight.dtype == np.uint8 and eight[0, 0, 1] == 255 and eight[0, 0, 0] == 0
    assert 100 < np.median(eight) < 155  # the hot voxel does not darken the rest


def test_new_volumes_take_the_fitted_depth(volumes_dir):
    new = load_like(volumes_dir, "volumes", (16, 1, 10, 10))
    assert new.sample_shape == (16, 1, 10, 10) and int(new.depths.max()) == 12


def test_images_only_stay_an_image_set():
    assert isinstance(load_source("builtin:digits"), ImageSet)
    with pytest.raises(InputError, match="holds volumes"):
        load_images("builtin:digit-volumes")


def test_bad_volume_files_are_skipped_and_counted(tmp_path, volumes_dir):
    (tmp_path / "good.npy").write_bytes((volumes_dir / "volumes" / "00000.npy").read_bytes())
    (tmp_path / "broken.npy").write_bytes(b"not an array")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))  # 2-D: not a volume
    (tmp_path / "broken.nii.gz").write_bytes(b"not a scan")
    loaded = load_source(tmp_path)
    assert loaded.paths == ["good.npy"]
    assert sorted(name for name, _ in loaded.skipped) == ["broken.nii.gz", "broken.npy", "flat.npy"]


def test_missing_nibabel_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import sys

    (tmp_path / "scan.nii").write_bytes(SHIPPED_SCAN.read_bytes())
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel now raises ImportError
    with pytest.raises(InputError, match=r"pip install 'clusterkit\[medical\]'"):
        load_source(tmp_path)


def test_volumes_that_do_not_fit_in_memory_are_decoded_to_disk(volumes_dir, monkeypatch):
    from clusterkit.data import loading

    monkeypatch.setattr(loading, "available_memory", lambda: 100_000)  # less than twice the 0.36 MB set
    loaded = load_source(volumes_dir)
    assert isinstance(loaded.voxels, np.memmap)
    assert np.array_equal(np.asarray(loaded.voxels), load_builtin("digit-volumes").voxels)


def test_cli_fits_the_baselines_on_flattened_volumes_and_refuses_image_methods(cli, tmp_path, volumes_dir, digits_dir):
    run = tmp_path / "run"
    result = cli("fit", volumes_dir, "--method", "kmeans", "--k", "10", "--out", run, "--quiet")
    assert result.code == 0, result.err
    rows = _rows(run / "assignments.csv")
    assert len(rows) == 300 and {row["kind"] for row in rows} == {"volume"}
    again = cli("assign", volumes_dir, "--model", run)
    assert again.code == 0 and again.out.splitlines()[0] == "path,cluster,confidence,kind"
    images = cli("assign", digits_dir, "--model", run)  # the checkpoint says it saw volumes only
    assert images.code == 2 and "fitted on volumes only and cannot assign images" in images.err
    report = cli("report", run, "--quiet")  # thumbnails: each volume's middle slice
    assert report.code == 0, report.err
    assert "could not be opened" not in report.err
    refused = cli("fit", volumes_dir, "--method", "depict", "--k", "10", "--out", tmp_path / "d")
    assert refused.code != 0 and len(refused.err.strip().splitlines()) == 1 and "volume files" in refused.err
