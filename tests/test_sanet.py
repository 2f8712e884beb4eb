"""SA-Net: learns on digits, persists, extends to unseen images, deterministic, sparse, robust blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clusterkit.data.builtin import load_builtin
from clusterkit.data.loading import resample
from clusterkit.data.samples import ImageSet
from clusterkit.errors import InputError
from clusterkit.methods.base import ClusterMethod
from clusterkit.methods.registry import get_method_class
from clusterkit.methods.sanet import describe_images, with_missing, working_sizes
from clusterkit.methods.sanet.blocks import (
    BLANK,
    INK,
    MISSING,
    TIE_BREAK,
    Blocks,
    Projection,
    describe,
    infer_missing,
    robust_distances,
    robust_neighbors,
    split_blocks,
)
from clusterkit.methods.sanet.layers import SpectralLayer
from clusterkit.methods.sanet.units import sample_patches, spectral_filters
from clusterkit.metrics import cluster_acc

# Small but real: 3 units of 8 filters, fitted once (no restarts) on 1,200 digits, in a few seconds on one core.
FAST = {"subset_size": 600, "patches_per_unit": 3000, "units": 3, "restarts": 1}
N_TRAIN = 1200


@pytest.fixture(scope="module")
def digits():
    return load_builtin("digits")


@pytest.fixture(scope="module")
def fitted(digits):
    return get_method_class("sanet")(k=10, seed=0, device="cpu", **FAST).fit(digits.subset(range(N_TRAIN)))


def test_learns_digits_well_above_chance(fitted, digits):
    acc = cluster_acc(digits.labels[:N_TRAIN], fitted.labels_)
    assert acc > 0.7, acc


def test_separates_the_two_photos_crops_where_kmeans_does_not():
    """Crops of two photographs (64 x 64 RGB), which colour alone separates: k-means on pixels gets
    ACC 0.74 here. A check that SA-Net runs on colour images, not evidence on real photo sets."""
    crops = load_builtin("photo-crops")
    model = get_method_class("sanet")(k=2, seed=0, device="cpu", **FAST).fit(crops)
    assert cluster_acc(crops.labels, model.labels_) > 0.9


def test_restarts_are_judged_on_a_sample_and_the_winners_filters_describe_all_images(digits):
    images, options = digits.subset(range(600)), {**FAST, "subset_size": 300}
    model = get_method_class("sanet")(k=10, seed=0, device="cpu", **{**options, "restarts": 3}).fit(images)
    cuts = model.fit_info()["restart_cuts"]
    assert len(cuts) == 3 and "0" in cuts  # restart 0 keeps the run's seed
    winner = min(cuts, key=cuts.get)
    sample = torch.randperm(600, generator=torch.Generator().manual_seed(0))[:300].sort().values.numpy()
    on_sample = get_method_class("sanet")(k=10, seed=int(winner), device="cpu", **options).fit(images.subset(sample))
    assert on_sample.cut_ == pytest.approx(cuts[winner], abs=1e-6)
    assert all(torch.equal(a.filters, b.filters) for a, b in zip(model.layers_, on_sample.layers_, strict=True))
    assert len(model.labels_) == 600 and len(model.train_blocks_) == 600


def same_state(a: dict, b: dict) -> bool:
    """Equal state dicts: tensors element for element, lists and dicts item by item."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same_state, a, b))
    return a == b


def test_the_selection_leaves_the_winners_state_on_the_estimator(digits):
    """Judged on all images (subset_size >= N), the restart of smallest cut is kept as it was fitted:
    its state equals that of a single fit at the winning seed and size."""
    images, options = digits.subset(range(300)), {**FAST, "subset_size": 300}
    model = get_method_class("sanet")(k=10, seed=0, device="cpu", **{**options, "restarts": 2}).fit(images)
    cuts = model.restart_cuts_
    winner = min(cuts, key=cuts.get)
    assert model.cut_ == pytest.approx(cuts[winner], abs=1e-6) == pytest.approx(min(cuts.values()), abs=1e-6)
    size = model.working_size_[0]
    single = get_method_class("sanet")(k=10, seed=int(winner), device="cpu", working_size=size, **options).fit(images)
    state, expected = model.state_dict(), single.state_dict()
    assert state.pop("restart_cuts") == cuts and expected.pop("restart_cuts") == {}
    assert same_state(state, expected)
    assert np.array_equal(model.labels_, single.labels_)


def test_sample_is_drawn_from_distinct_images():
    """Restarts are judged on a sample of `subset_size` images: drawn from all 200 (20 images ten
    times each), 30 held about 15 distinct ones and refused k = 18, which the 20 can fill."""
    index = list(range(20)) * 10
    images = load_builtin("digits").subset(index)
    model = get_method_class("sanet")(k=18, seed=0, device="cpu", subset_size=30, restarts=2).fit(images)
    labels = model.labels_
    assert len(set(labels.tolist())) == 18
    for image in range(20):
        assert len(set(labels[np.asarray(index) == image])) == 1


def test_skips_a_working_size_at_which_the_sample_falls_below_k_distinct_images():
    """200 images (20 digits at 16 px, ten one-pixel variants each) are 39 distinct at 8 px: the
    candidate 8 px size must be skipped, not refuse the k = 18 that the 16 px images fill."""
    pixels = np.repeat(resample(load_builtin("digits").subset(range(20)), 16).pixels, 10, axis=0)
    for i in range(len(pixels)):
        if i % 10:
            pixels[i, 0, i % 10, 0] += 1  # the digits' left column is blank: 0 -> 1
    images = ImageSet(paths=[f"{i}.png" for i in range(len(pixels))], pixels=pixels)
    model = get_method_class("sanet")(k=18, seed=0, device="cpu", subset_size=30, restarts=2).fit(images)
    assert model.working_size_ == (16, 16)
    assert len(set(model.labels_.tolist())) == 18


def test_predict_on_held_out_images(fitted, digits):
    held_out = digits.subset(range(N_TRAIN, len(digits)))
    proba = fitted.predict_proba(held_out)
    assert proba.shape == (len(held_out), 10)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # The held-out images follow the training clusters: map clusters to classes on the training set.
    train_labels = np.asarray(digits.labels[:N_TRAIN])
    to_class = {
        c: max(set(train_labels[fitted.labels_ == c]), key=list(train_labels[fitted.labels_ == c]).count)
        for c in np.unique(fitted.labels_)
    }
    predicted = np.array([to_class[c] for c in proba.argmax(axis=1)])
    assert (predicted == np.asarray(held_out.labels)).mean() > 0.7


def test_training_images_are_assigned_to_their_own_cluster(fitted, digits):
    assert (fitted.predict(digits.subset(range(300))) == fitted.labels_[:300]).all()


def test_training_images_keep_their_cluster_where_robust_distances_tie():
    """Occluded digits with blank-in-either blocks: many pairs are at trimmed distance 0, yet every
    training image must come back to its own cluster (the exact copy is ordered first)."""
    images = load_builtin("digits-occluded").subset(range(600))
    options = {**FAST, "subset_size": 300, "local_blocks": True, "blank_blocks": "either", "candidates": 10**9}
    model = get_method_class("sanet")(k=10, seed=0, device="cpu", **options).fit(images)
    assert (model.predict(images) == model.labels_).all()


def test_save_load_round_trip_reproduces_predictions(fitted, digits, tmp_path):
    path = tmp_path / "model.ckpt"
    fitted.save(path)
    torch.load(path, weights_only=True)  # tensors and plain data only
    loaded = ClusterMethod.load(path)
    new = digits.subset(range(N_TRAIN, N_TRAIN + 200))
    assert np.array_equal(loaded.predict_proba(new), fitted.predict_proba(new))


def test_working_sizes_are_the_input_and_its_halvings_down_to_two_blocks_of_pixels():
    def config(**options):
        return get_method_class("sanet")(k=2, **options).config

    assert working_sizes((28, 28), config()) == [(28, 28), (14, 14)]  # 7 px < 2 x grid (4)
    assert working_sizes((64, 48), config()) == [(64, 48), (32, 24), (16, 12)]
    assert working_sizes((8, 8), config()) == [(8, 8)]
    assert working_sizes((28, 56), config(working_size=14)) == [(14, 28)]
    # Blocks through the filters on their own must hold a 5-px patch: 4 x 5 = 20 px at least.
    assert working_sizes((64, 64), config(local_blocks=True)) == [(64, 64), (32, 32)]
    assert working_sizes((28, 28), config(local_blocks=True)) == [(28, 28)]


def test_upscaled_digits_are_analysed_at_the_smaller_working_size(digits, tmp_path):
    """Digits blown up from 8 to 16 px hold no detail the filters need at 16 px; the relaxed cut of
    the image graph says so (about 0.03 at 8 px against 0.05 at 16 px), and the model then takes new
    16-px images down to its working size by itself, also after a save and load."""
    images = digits.subset(range(N_TRAIN))
    upscaled = resample(images, 16)
    model = get_method_class("sanet")(k=10, seed=0, device="cpu", **FAST).fit(upscaled)
    assert model.working_size_ == (8, 8)
    assert set(model.fit_info()["working_size_cuts"]) == {"16x16", "8x8"}
    assert cluster_acc(images.labels, model.labels_) > 0.7
    assert (model.predict(upscaled) == model.labels_).all()
    model.save(tmp_path / "model.ckpt")
    loaded = ClusterMethod.load(tmp_path / "model.ckpt")
    assert loaded.working_size_ == (8, 8) and loaded.fit_info()["working_size_cuts"] == model.size_cuts_
    held_out = resample(digits.subset(range(N_TRAIN, N_TRAIN + 100)), 16)
    assert np.array_equal(loaded.predict_proba(held_out), model.predict_proba(held_out))


def test_auto_k_compares_every_working_size_at_the_input_sizes_k(digits):
    upscaled = resample(digits.subset(range(400)), 16)
    model = get_method_class("sanet")(k="auto", seed=0, device="cpu", **{**FAST, "subset_size": 400}).fit(upscaled)
    at_input = get_method_class("sanet")(
        k="auto", seed=0, device="cpu", working_size=16, **{**FAST, "subset_size": 400}
    )
    assert model.k_ == at_input.fit(upscaled).k_
    assert len(model.fit_info()["working_size_cuts"]) == 2


def test_same_seed_same_clustering(digits):
    images = digits.subset(range(500))
    options = {"subset_size": 300, "patches_per_unit": 1500, "units": 2}
    first = get_method_class("sanet")(k=10, seed=3, device="cpu", **options).fit(images)
    second = get_method_class("sanet")(k=10, seed=3, device="cpu", **options).fit(images)
    assert np.array_equal(first.labels_, second.labels_)
    for a, b in zip(first.layers_, second.layers_, strict=True):
        assert torch.equal(a.filters, b.filters)


def state_bytes(model) -> int:
    """Bytes of the tensors a fitted model holds (its checkpoint's state)."""
    tensors = [value for value in model.state_dict().values() if isinstance(value, torch.Tensor)]
    tensors += [layer["filters"] for layer in model.state_dict()["layers"]]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_memory_of_the_fitted_model_is_linear_in_the_number_of_images(fitted, digits):
    """Half the images, about half the bytes (an N x N table would be a quarter); the fixed part
    (filters, candidate-search axes) keeps the ratio below 2."""
    half = get_method_class("sanet")(k=10, seed=0, device="cpu", **FAST).fit(digits.subset(range(N_TRAIN // 2)))
    ratio = state_bytes(fitted) / state_bytes(half)
    assert 1.5 < ratio <= 2.0, ratio
    for model, n in ((fitted, N_TRAIN), (half, N_TRAIN // 2)):
        assert model.graph_nnz_ <= n * model.config.n_neighbors * 2
        assert model.train_blocks_.vectors.shape[0] == n and model.train_blocks_.vectors.ndim == 3


def test_small_images_stop_stacking_layers(fitted):
    # 8x8 digits: pooling after layer 1 would leave 4x4 maps, too small for a 4x4 grid of 2x2 cells.
    assert len(fitted.layers_) == 1 and fitted.fit_info()["layers_used"] == 1


def test_spectral_filters_have_unit_response_variance():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(50, 2, 10, 10, generator=generator)
    patches = sample_patches([maps], len(maps), 3, 800, generator)
    assert patches.shape[1] == 2 * 3 * 3
    assert torch.allclose(patches.mean(dim=1), torch.zeros(len(patches)), atol=1e-5)  # mean-removed
    filters = spectral_filters(patches, 4, 10, 1e-3, seed=0, backend="sklearn")
    assert filters.shape == (4, 18)
    assert torch.allclose((patches @ filters.T).std(dim=0), torch.ones(4), atol=1e-3)


def test_a_disconnected_patch_graph_gives_no_component_indicator_filter():
    """Two far-apart groups of patches: the kNN patch graph falls into two components, and
    eigenvalue 0 is doubled. Taking the next eigenvector after the constant one regressed a filter
    onto the indicator of a group (its response was 99.9% between-group variance, constant on each
    group); each component's constant eigenvector is now left out, and no filter separates the groups."""
    from scipy.sparse.csgraph import connected_components

    from clusterkit.algorithms.spectral import knn_affinity

    generator = torch.Generator().manual_seed(0)
    n, checkerboard = 300, torch.tensor([1.0, -1, 1, -1, 1, -1, 1, -1, 0])
    near = torch.randn(n, 9, generator=generator)
    far = torch.randn(n, 9, generator=generator) + 30 * checkerboard
    patches = torch.cat([near, far])
    patches = patches - patches.mean(dim=1, keepdim=True)  # as sample_patches gives them
    graph = knn_affinity(patches.numpy(), 10, "sklearn")
    assert connected_components(graph, directed=False)[0] == 2
    filters = spectral_filters(patches, 4, 10, 1e-3, seed=0, backend="sklearn")
    responses = (patches @ filters.T).double()
    assert torch.allclose(responses.std(dim=0), torch.ones(4, dtype=torch.float64), atol=1e-3)
    # Share of each filter's response variance that is between the two groups (eta squared).
    between = 0.25 * (responses[:n].mean(dim=0) - responses[n:].mean(dim=0)) ** 2
    share = between / responses.var(dim=0, unbiased=False)
    assert share.max() < 0.1, share


def test_positions_are_drawn_once_each_where_the_maps_hold_few(digits):
    """Two 8x8 digits hold 128 positions; 8,000 draws with replacement would repeat each ~60 times."""
    from clusterkit.methods.sanet.units import _draw_positions

    img, ys, xs = _draw_positions((2, 8, 8), 8000, torch.Generator().manual_seed(0))
    assert len(set(zip(img.tolist(), ys.tolist(), xs.tolist(), strict=True))) == len(img) == 128
    maps = torch.from_numpy(digits.pixels[:2]).float() / 255.0
    assert 0 < len(sample_patches([maps], 2, 5, 8000, torch.Generator().manual_seed(0))) <= 128
    many = _draw_positions((2000, 8, 8), 8000, torch.Generator().manual_seed(0))  # 128,000 positions
    assert all(len(part) == 8000 for part in many) and int(many[0].max()) < 2000 and int(many[1].max()) < 8


def test_patches_sampled_batch_by_batch_equal_those_of_all_maps_at_once(digits):
    maps = torch.from_numpy(digits.pixels[:300]).float() / 255.0
    whole = sample_patches([maps], 300, 5, 2000, torch.Generator().manual_seed(3))
    batched = sample_patches(maps.split(64), 300, 5, 2000, torch.Generator().manual_seed(3))
    assert torch.equal(whole, batched)


def test_a_forward_pass_holds_a_bounded_map_whatever_the_image_size():
    from clusterkit.methods.sanet.layers import MAP_BUDGET, rows_per_pass

    layers = [SpectralLayer(torch.zeros(32, 3, 5, 5), 2), SpectralLayer(torch.zeros(32, 64, 3, 3), 1)]
    assert rows_per_pass(layers, (3, 8, 8), 256) == 256
    rows = rows_per_pass(layers, (3, 256, 256), 256)
    assert 1 <= rows < 256 and rows * 4 * (3 + 6 * 32) * 256 * 256 <= MAP_BUDGET
    assert rows_per_pass(layers, (3, 4096, 4096), 256) == 1


def test_layer_equals_filters_on_mean_removed_patches():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, 6, 6, generator=generator)
    filters = torch.randn(4, 2, 3, 3, generator=generator)
    out = SpectralLayer(filters, pool=1)(x)
    patches = torch.nn.functional.unfold(x, 3, padding=1).transpose(1, 2)  # 3, 36, 18
    patches = patches - patches.mean(dim=-1, keepdim=True)
    response = (patches @ filters.reshape(4, -1).T).transpose(1, 2).reshape(3, 4, 6, 6)
    assert torch.allclose(out, torch.cat([response.relu(), (-response).relu()], dim=1), atol=1e-5)


def test_robust_distance_ignores_the_spoiled_blocks():
    rng = torch.Generator().manual_seed(2)
    clean = torch.rand(1, 16, 5, generator=rng)
    occluded = clean.clone()
    occluded[0, :4] = 10.0  # four blocks spoiled
    other = torch.rand(1, 16, 5, generator=rng)
    data = Blocks(torch.cat([occluded, other, clean]), torch.zeros(3, 16, dtype=torch.bool))
    query = Blocks(clean, torch.zeros(1, 16, dtype=torch.bool))
    dist = robust_distances(query, data, torch.tensor([[0, 1, 2]]), 0.75, device=torch.device("cpu"))
    # The kept 12 blocks match exactly: only the tie-break term (the untrimmed mean, weighted 1e-6) is left.
    untrimmed = (occluded - clean).pow(2).sum(dim=-1).mean()
    assert dist[0, 0] == pytest.approx(TIE_BREAK * float(untrimmed), rel=1e-4)
    assert dist[0, 0] < 1e-3 * dist[0, 1]
    # The exact copy stays ahead of the trimmed match: a training image's nearest is itself.
    assert dist[0, 2] == 0.0 < dist[0, 0]
    # Shared blank blocks are not evidence of similarity: they are left out, not counted as a match.
    blank = torch.zeros(2, 16, dtype=torch.bool)
    blank[:, 8:] = True
    pair = Blocks(torch.zeros(2, 16, 5), blank)
    pair.vectors[1, :8] = 1.0
    dist = robust_distances(Blocks(pair.vectors[:1], blank[:1]), pair, torch.tensor([[1]]), 0.75, torch.device("cpu"))
    assert dist[0, 0] == pytest.approx(5.0)


def test_trimming_counts_the_pairs_informative_blocks_only():
    # 8 of 16 blocks blank in both images (left out); of the other 8, two are spoiled. Keeping a share
    # of all 16 blocks (12) would keep all 8 and average the spoiled ones in; keeping 0.75 of the
    # pair's 8 informative blocks keeps the 6 best, and the spoiled two drop out.
    blank = torch.zeros(2, 16, dtype=torch.bool)
    blank[:, 8:] = True
    vectors = torch.zeros(2, 16, 3)
    vectors[1, :6] = 0.1  # six informative blocks that match closely (error 0.03 each)
    vectors[1, 6:8] = 5.0  # two spoiled blocks (error 75 each)
    query = Blocks(vectors[:1], blank[:1])
    dist = robust_distances(query, Blocks(vectors, blank), torch.tensor([[1]]), 0.75, torch.device("cpu"))
    assert dist[0, 0].item() == pytest.approx(0.03, rel=1e-3)
    # Without trimming (keep everything) the spoiled blocks count: (6 x 0.03 + 2 x 75) / 8.
    dist = robust_distances(query, Blocks(vectors, blank), torch.tensor([[1]]), 1.0, torch.device("cpu"))
    assert dist[0, 0].item() == pytest.approx((6 * 0.03 + 150) / 8, rel=1e-3)
    # The share is per pair: a pair with 4 informative blocks keeps ceil(0.75 x 4) = 3 of them.
    few = blank.clone()
    few[:, 4:] = True
    vectors[1, :4] = torch.tensor([0.1, 0.1, 0.1, 5.0])[:, None]
    dist = robust_distances(
        Blocks(vectors[:1], few[:1]), Blocks(vectors, few), torch.tensor([[1]]), 0.75, torch.device("cpu")
    )
    assert dist[0, 0].item() == pytest.approx(0.03, rel=1e-3)
    # No informative block at all: infinite distance (robust_neighbors caps it).
    none = torch.ones(2, 16, dtype=torch.bool)
    dist = robust_distances(
        Blocks(vectors[:1], none[:1]), Blocks(vectors, none), torch.tensor([[1]]), 0.75, torch.device("cpu")
    )
    assert torch.isinf(dist[0, 0])


def test_blank_in_either_leaves_erased_blocks_out():
    # The query's first 4 blocks are blank (ink erased), where the other image has ink (error 3 each);
    # the other 12 match closely (error 0.03 each). "both" counts the erased blocks, "either" does not.
    vectors = torch.zeros(2, 16, 3)
    vectors[1, :4] = 1.0
    vectors[1, 4:] = 0.1
    blank = torch.zeros(2, 16, dtype=torch.bool)
    blank[0, :4] = True
    query, data, pairs = Blocks(vectors[:1], blank[:1]), Blocks(vectors, blank), torch.tensor([[1]])
    both = robust_distances(query, data, pairs, 1.0, torch.device("cpu"), "both")
    either = robust_distances(query, data, pairs, 1.0, torch.device("cpu"), "either")
    assert both[0, 0].item() == pytest.approx((4 * 3 + 12 * 0.03) / 16, rel=1e-3)
    assert either[0, 0].item() == pytest.approx(0.03, rel=1e-3)


def test_blank_blocks_where_the_neighbours_have_ink_are_inferred_missing():
    # Query: blocks 0 and 1 blank. Its three neighbours: two have ink at block 0 (so it was erased),
    # only one at block 1 (so it is background, and stays evidence).
    state = torch.full((4, 4), INK, dtype=torch.uint8)
    state[0, :2] = BLANK
    state[1:, 1] = BLANK
    state[1, 1] = INK
    state[3, 0] = BLANK
    data = Blocks(torch.zeros(4, 4, 2), state)
    inferred = infer_missing(Blocks(data.vectors[:1], state[:1]), data, torch.tensor([[1, 2, 3]]))
    assert inferred.state[0].tolist() == [MISSING, BLANK, INK, INK]


def test_inferred_rule_leaves_out_missing_blocks_but_keeps_blank_evidence():
    # Query blocks 0-3 have no ink where the other image has ink (error 3 each), the other 12 match
    # closely (0.03). Blocks 0-1 are MISSING (erased): left out. Blocks 2-3 are BLANK (background): a
    # real difference, counted, as under "both"; "either" would drop all four.
    vectors = torch.zeros(2, 16, 3)
    vectors[1, :4] = 1.0
    vectors[1, 4:] = 0.1
    state = torch.full((2, 16), INK, dtype=torch.uint8)
    state[0, :2] = MISSING
    state[0, 2:4] = BLANK
    query, data, pairs = Blocks(vectors[:1], state[:1]), Blocks(vectors, state), torch.tensor([[1]])
    inferred = robust_distances(query, data, pairs, 1.0, torch.device("cpu"), "inferred")
    assert inferred[0, 0].item() == pytest.approx((2 * 3 + 12 * 0.03) / 14, rel=1e-3)


def test_inferred_blank_rule_judges_training_images_at_assign_as_at_fit():
    """`assign` marks a training image's erased blocks as the fit did (it does not vote on its own
    blanks), and so gives it its own cluster."""
    images = load_builtin("digits-occluded").subset(range(600))
    options = {**FAST, "subset_size": 300, "local_blocks": True, "blank_blocks": "inferred", "candidates": 10**9}
    model = get_method_class("sanet")(k=10, seed=0, device="cpu", **options).fit(images)
    assert (model.train_blocks_.state == MISSING).any()
    fit, cpu = model.fitted_state(), torch.device("cpu")
    queries = describe_images(images.pixels, fit.layers, fit.blank_norm, model.config, cpu, 256)
    again = with_missing(queries, fit.table, model.config, cpu, training=False)
    assert torch.equal(again.state, model.train_blocks_.state)
    assert (model.predict(images) == model.labels_).all()


def test_local_blocks_depend_on_their_own_pixels_only():
    # With local_blocks, each block goes through the layers on its own: changing one input block
    # changes that block's descriptor and no other (a whole-image convolution would leak into the
    # neighbours within the filters' reach).
    generator = torch.Generator().manual_seed(4)
    layer = SpectralLayer(torch.randn(4, 1, 5, 5, generator=generator), pool=1)
    x = torch.rand(1, 1, 8, 8, generator=generator)
    y = x.clone()
    y[:, :, 2:4, 2:4] = 0.0  # block (1, 1) of the 4 x 4 grid, index 5
    local = [describe(v, layer(split_blocks(v, 4)), 4, 0.0).vectors.float() for v in (x, y)]
    changed = (local[0] - local[1]).abs().sum(dim=-1)[0] > 0
    assert changed.nonzero().flatten().tolist() == [5]
    whole = [describe(v, layer(v), 4, 0.0).vectors.float() for v in (x, y)]
    assert ((whole[0] - whole[1]).abs().sum(dim=-1)[0] > 0).sum() > 1


def test_blank_threshold_and_pca_sample_is_random_not_the_first_images(digits):
    # Folders are read sorted by path: the first images may all be alike. Here the first 100 are
    # faint (1/8 intensity); a threshold from the first `subset_size` images would be ~1/8 of the
    # set's, one from a seeded random sample is close to the whole set's.
    from clusterkit.methods.sanet.blocks import blank_threshold

    pixels = digits.pixels[:400].copy()
    pixels[:100] //= 8
    images = ImageSet(paths=[f"{i:03d}.png" for i in range(400)], pixels=pixels, labels=digits.labels[:400])
    model = get_method_class("sanet")(k=10, seed=0, device="cpu", subset_size=100, patches_per_unit=1500, units=1)
    model.fit(images)
    whole = blank_threshold(torch.from_numpy(pixels).float() / 255.0, model.config.grid)
    assert 0.7 * whole < model.blank_norm_ < 1.3 * whole


def test_projection_in_chunks_equals_one_pass(fitted, monkeypatch):
    import clusterkit.methods.sanet.blocks as blocks_module

    blocks = Blocks(fitted.train_blocks_.vectors[:300], fitted.train_blocks_.state[:300])
    one_pass = ((blocks.flat() - fitted.projection_.mean) @ fitted.projection_.axes).numpy()
    monkeypatch.setattr(blocks_module, "RERANK_ELEMENTS", blocks.vectors[0].numel() * 7)  # 7 rows a chunk
    assert np.allclose(fitted.projection_(blocks), one_pass, atol=1e-5)


def test_graph_components_are_reported_and_saved(fitted, tmp_path):
    assert 1 <= fitted.fit_info()["graph_components"] <= 10
    fitted.save(tmp_path / "model.ckpt")
    assert ClusterMethod.load(tmp_path / "model.ckpt").fit_info()["graph_components"] == fitted.graph_components_


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="patch_size"):
        get_method_class("sanet")(k=10, patch_size=4)
    with pytest.raises(InputError, match="keep_fraction"):
        get_method_class("sanet")(k=10, keep_fraction=0.0)
    with pytest.raises(InputError, match="blank_blocks"):
        get_method_class("sanet")(k=10, blank_blocks="any")
    with pytest.raises(InputError, match="nonsense"):
        get_method_class("sanet")(k=10, nonsense=1)
    with pytest.raises(InputError, match="working_size"):
        get_method_class("sanet")(k=10, working_size=2)  # smaller than the 4 x 4 block grid


def test_faiss_and_sklearn_neighbours_agree(fitted):
    pytest.importorskip("faiss")
    blocks = Blocks(fitted.train_blocks_.vectors[:400], fitted.train_blocks_.state[:400])
    args = (blocks, blocks, Projection.fit(blocks, 64), 10, 50, 0.75, torch.device("cpu"))
    d_sk, i_sk = robust_neighbors(*args, backend="sklearn", exclude_self=True)
    d_fa, i_fa = robust_neighbors(*args, backend="faiss", exclude_self=True)
    assert np.allclose(d_sk, d_fa, rtol=1e-3, atol=1e-4)
    assert (i_sk == i_fa).mean() > 0.98  # ties may order differently


@pytest.mark.parametrize("blank_blocks", ["both", "either", "inferred"])
def test_exhaustive_search_equals_reranking_every_image(fitted, monkeypatch, blank_blocks):
    """candidates >= N takes the chunked all-pairs path; it must find what re-ranking all rows finds."""
    import clusterkit.methods.sanet.blocks as blocks_module

    state = fitted.train_blocks_.state[:300].clone()
    if blank_blocks == "inferred":  # some blanks judged erased, so that the rule has them to leave out
        state[::2][state[::2] == BLANK] = MISSING
        assert (state == MISSING).any()
    blocks = Blocks(fitted.train_blocks_.vectors[:300], state)
    everyone = torch.arange(300).expand(300, 300)
    reference = robust_distances(blocks, blocks, everyone, 0.75, torch.device("cpu"), blank_blocks)
    reference = reference.masked_fill(torch.eye(300, dtype=torch.bool), float("inf")).topk(10, largest=False)
    monkeypatch.setattr(blocks_module, "RERANK_ELEMENTS", 16 * 64**2)  # 22-row chunks, the last one partial
    dist, idx = robust_neighbors(
        blocks,
        blocks,
        fitted.projection_,
        10,
        10**9,
        0.75,
        torch.device("cpu"),
        "sklearn",
        exclude_self=True,
        blank_blocks=blank_blocks,
    )
    assert np.allclose(dist, reference.values.sqrt().numpy(), rtol=1e-4, atol=1e-5)
    assert (idx == reference.indices.numpy()).mean() > 0.99  # ties may order differently
    # Fewer queries than rows (what assign does): the first 100 images against all 300.
    queries = Blocks(blocks.vectors[:100], blocks.state[:100])
    dist, idx = robust_neighbors(
        queries,
        blocks,
        fitted.projection_,
        10,
        10**9,
        0.75,
        torch.device("cpu"),
        "sklearn",
        exclude_self=False,
        blank_blocks=blank_blocks,
    )
    expected = robust_distances(queries, blocks, everyone[:100], 0.75, torch.device("cpu"), blank_blocks)
    assert np.allclose(dist, expected.topk(10, largest=False).values.sqrt().numpy(), rtol=1e-4, atol=1e-5)
    # Queries that are training rows find themselves at distance exactly 0 (assign's exact match).
    dist, idx = robust_neighbors(
        blocks,
        blocks,
        fitted.projection_,
        1,
        10**9,
        0.75,
        torch.device("cpu"),
        "sklearn",
        exclude_self=False,
        blank_blocks=blank_blocks,
    )
    assert (dist[:, 0] == 0).all() and (idx[:, 0] == np.arange(300)).all()


# 40 images of two blocks: fewer than their dimensions and than the 64 axes (n x n Gram matrix);
# 300 images of one block: more than its dimensions (D x D).
@pytest.mark.parametrize("rows, n_blocks", [(40, 2), (300, 1)])
def test_projection_spans_the_principal_subspace(fitted, rows, n_blocks):
    """Same distances as projecting on the SVD's axes; axes are orthonormal, or zero where the sample
    has no variance left (40 images span at most 39 directions)."""
    sample = Blocks(fitted.train_blocks_.vectors[:rows, :n_blocks], fitted.train_blocks_.state[:rows, :n_blocks])
    projection = Projection.fit(sample, 64)
    centered = sample.flat() - sample.flat().mean(dim=0)
    _, _, vt = torch.linalg.svd(centered.double(), full_matrices=False)
    used = min(64, rows - 1)
    expected = torch.cdist(centered.double() @ vt[:used].T, centered.double() @ vt[:used].T)
    got = torch.cdist(torch.from_numpy(projection(sample)).double(), torch.from_numpy(projection(sample)).double())
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(expected.max()))
    gram = projection.axes.T.double() @ projection.axes.double()
    assert torch.allclose(gram, torch.diag(torch.diag(gram)), atol=1e-4)
    assert int(torch.diag(gram).gt(0.5).sum()) == used


def test_training_table_is_projected_once_per_model(digits, monkeypatch):
    """The candidate search's axes are fixed after the fit: the training table's coordinates are
    computed once (two searches with `inferred` blanks, then two `assign` calls), not per search."""
    sizes = []
    original = Projection.__call__
    monkeypatch.setattr(
        Projection, "__call__", lambda self, blocks: sizes.append(len(blocks)) or original(self, blocks)
    )
    images = digits.subset(range(400))
    options = {**FAST, "subset_size": 200, "blank_blocks": "inferred", "candidates": 30}
    model = get_method_class("sanet")(k=10, seed=0, device="cpu", **options).fit(images)
    new = digits.subset(range(400, 450))
    model.predict(new)
    model.predict(new)
    assert sizes.count(len(images)) == 1
    assert sizes.count(len(new)) == 4  # each assign: the new images for the missing-block vote and the final vote
