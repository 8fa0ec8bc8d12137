"""LaSt-ViT measurements (lastvit.measure: grid, maps, metrics, baselines, masking), the local evaluate metrics and the plot helpers.

Hand-made inputs with known answers: box-to-patch mapping, Point-in-Box, baselines, the masking
probe. The Lappe & Giese measurements are specified in tests/test_lappe_giese.py.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"

import math
import socket

import numpy as np
import pytest
import torch

from lastvit import measure as A
from modeling_lastvit import LastViTForImageClassification

from .tiny import tiny_config


def authors_patch_set(bbox, width, height, image_size=224, patch_size=16):
    """Reference: the box-to-patch rule of LaSt-ViT's evaluate_patch_hit.py, written out as a set."""
    xmin, ymin, xmax, ymax = bbox
    scale = 256.0 / min(width, height)
    left, top = (int(width * scale) - 224) // 2, (int(height * scale) - 224) // 2
    clip = lambda v: max(0, min(224, v))
    x0, y0, x1, y1 = (
        clip(xmin * scale - left),
        clip(ymin * scale - top),
        clip(xmax * scale - left),
        clip(ymax * scale - top),
    )
    n = image_size // patch_size
    return {
        py * n + px
        for py in range(int(y0 // patch_size), min(int(y1 // patch_size) + 1, n))
        for px in range(int(x0 // patch_size), min(int(x1 // patch_size) + 1, n))
    }


def as_set(mask):
    return set(np.flatnonzero(mask.reshape(-1)).tolist())


# --------------------------------------------------------------------------- box -> patches


def test_box_mapping_follows_resize256_centercrop224_on_a_landscape_image():
    # 500x375: scale 256/375, resized width int(341.33) = 341, left crop (341-224)//2 = 58, top crop 16.
    x0, y0, x1, y1 = A.map_box((100, 50, 300, 200), image_size=(500, 375))
    scale = 256 / 375
    assert (x0, y0, x1, y1) == pytest.approx((100 * scale - 58, 50 * scale - 16, 300 * scale - 58, 200 * scale - 16))
    mask = A.box_to_patches((100, 50, 300, 200), image_size=(500, 375))
    expected = np.zeros((14, 14), dtype=bool)
    expected[1:8, 0:10] = True  # rows floor(18.1/16)=1..floor(120.5/16)=7, cols 0..floor(146.8/16)=9
    assert np.array_equal(mask, expected)


def test_box_mapping_matches_the_authors_rule_on_random_boxes_and_portrait_images():
    rng = np.random.default_rng(0)
    for _ in range(300):
        width, height = (int(v) for v in rng.integers(100, 900, size=2))
        xs, ys = np.sort(rng.uniform(0, width, 2)), np.sort(rng.uniform(0, height, 2))
        box = (xs[0], ys[0], xs[1], ys[1])
        assert as_set(A.box_to_patches(box, (width, height), edge="authors")) == authors_patch_set(box, width, height)


def test_box_edge_is_exclusive_so_a_box_ending_on_a_patch_border_gains_no_patch():
    # (0, 0, 16, 16) covers pixels 0..15: exactly patch 0.
    assert as_set(A.box_to_patches((0, 0, 16, 16), model_input=224, patch=16, resize=None)) == {0}
    # one pixel further reaches into the next patch on both axes
    assert as_set(A.box_to_patches((0, 0, 17, 17), model_input=224, patch=16, resize=None)) == {0, 1, 14, 15}
    # a box from one border to another covers exactly the patches between them
    assert as_set(A.box_to_patches((16, 32, 48, 48), model_input=224, patch=16, resize=None)) == {
        2 * 14 + 1,
        2 * 14 + 2,
    }
    # the last row/column: the image border is exclusive too
    mask = A.box_to_patches((200, 200, 224, 224), model_input=224, patch=16, resize=None)
    assert as_set(mask) == {12 * 14 + 12, 12 * 14 + 13, 13 * 14 + 12, 13 * 14 + 13}
    # a zero-width box marks nothing
    assert not A.box_to_patches((32, 0, 32, 50), model_input=224, patch=16, resize=None).any()


def test_point_in_box_and_the_random_baseline_use_the_exclusive_edge():
    # 32x32 input, 8-px patches: a box (0, 0, 16, 16) covers 4 of 16 patches, not 9.
    box = [(0.0, 0.0, 16.0, 16.0)]
    assert A.random_patch_baseline(box, None, 32, 8, resize=None)[0] == pytest.approx(4 / 16)
    scores = torch.zeros(1, 16)
    scores[0, 2] = 1.0  # row 0, column 2: just right of the box
    assert not A.point_in_box(scores, box, None, 32, 8, resize=None)[0]
    assert A.point_in_box(scores, box, None, 32, 8, resize=None, edge="authors")[0]


def test_per_image_auroc_is_threshold_free_sign_aware_and_counts_ties_half():
    positives = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    assert A.per_image_auroc(torch.tensor([[4.0, 3.0, 2.0, 1.0]]), positives)[0] == 1.0
    assert A.per_image_auroc(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), positives)[0] == 0.0  # background ranked first
    assert A.per_image_auroc(torch.tensor([[5.0, 5.0, 5.0, 5.0]]), positives)[0] == 0.5  # a constant map
    # a monotone transform changes nothing; one tie across the classes counts one half: (1 + 1 + 1 + 0.5) / 4
    assert A.per_image_auroc(torch.tensor([[9.0, 0.2, 0.2, 0.1]]), positives)[0] == pytest.approx(0.875)
    assert A.per_image_auroc(torch.tensor([[9.0, 0.2, 0.2, 0.1]]) ** 3, positives)[0] == pytest.approx(0.875)
    # images whose patches are all one class have no AUROC
    single = A.per_image_auroc(torch.rand(2, 4), torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool))
    assert np.isnan(single).all()


def test_per_image_auroc_equals_the_average_rank_form():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(50, 16)), 1)  # rounding makes ties
    positives = rng.random((50, 16)) < 0.4
    positives[:, 0], positives[:, 1] = True, False
    result = A.per_image_auroc(torch.from_numpy(scores), torch.from_numpy(positives))
    for row, pos, value in zip(scores, positives, result):
        order = np.argsort(row, kind="stable")
        ranks = np.empty(16)
        ranks[order] = np.arange(1, 17)
        for v in np.unique(row):  # average ranks over ties
            ranks[row == v] = ranks[row == v].mean()
        p, q = pos.sum(), (~pos).sum()
        assert value == pytest.approx((ranks[pos].sum() - p * (p + 1) / 2) / (p * q))


def test_patch_coverage_is_the_covered_share_of_each_patch():
    masks = np.zeros((1, 16, 16), dtype=bool)
    masks[0, :8, :4] = True  # half of patch 0 (8x8 patches, 2x2 grid)
    masks[0, 8:, 8:] = True  # all of patch 3
    assert A.patch_coverage(masks, 8).tolist() == [[0.5, 0.0, 0.0, 1.0]]
    assert (A.patch_coverage(masks, 8) >= A.OBJECT_PATCH_COVERAGE).tolist() == [[True, False, False, True]]


def test_authors_edge_rule_includes_the_next_patch_and_clips_to_the_grid():
    mask = A.box_to_patches((0, 0, 16, 16), model_input=224, patch=16, resize=None, edge="authors")
    assert as_set(mask) == {0, 1, 14, 15}
    mask = A.box_to_patches((200, 200, 224, 224), model_input=224, patch=16, resize=None, edge="authors")
    assert as_set(mask) == {12 * 14 + 12, 12 * 14 + 13, 13 * 14 + 12, 13 * 14 + 13}
    with pytest.raises(ValueError, match="edge rule"):
        A.box_to_patches((0, 0, 1, 1), model_input=224, edge="inclusive")


def test_box_cut_away_by_the_crop_collapses_onto_the_border_like_the_authors_code():
    # 1000x250: scale 1.024, resized width 1024, left crop 400; the box maps left of the crop.
    left = (0, 100, 100, 150)
    assert as_set(A.box_to_patches(left, (1000, 250), edge="authors")) == authors_patch_set(left, 1000, 250)
    assert all(index % 14 == 0 for index in as_set(A.box_to_patches(left, (1000, 250), edge="authors")))
    assert not A.box_to_patches(left, (1000, 250)).any()  # exclusive edge: a collapsed box covers nothing
    right = (900, 100, 1000, 150)
    assert not A.box_to_patches(right, (1000, 250)).any()
    assert authors_patch_set(right, 1000, 250) == set()


def test_plain_mapping_is_identity_at_model_size_and_a_rescale_otherwise():
    assert A.map_box((10, 20, 30, 40), model_input=224, resize=None) == (10, 20, 30, 40)
    assert A.map_box((10, 20, 30, 40), image_size=(448, 112), model_input=224, resize=None) == (5, 40, 15, 80)


def test_non_square_inputs_and_patches_use_width_height_order():
    # model input 64 wide x 32 high, patches 16 wide x 8 high: a 4x4 grid.
    mask = A.box_to_patches((20, 9, 40, 15), model_input=(64, 32), patch=(16, 8), resize=None)
    expected = np.zeros((4, 4), dtype=bool)
    expected[1, 1:3] = True
    assert np.array_equal(mask, expected)
    # 200x100 image, short side to 32 (scale 0.32), centre crop 64x32: no crop offset.
    mask = A.box_to_patches((100, 50, 150, 75), image_size=(200, 100), model_input=(64, 32), patch=(16, 8), resize=32)
    expected = np.zeros((4, 4), dtype=bool)
    expected[2, 2] = True  # (32, 16, 48, 24): col 2, row 2 (x1 = 48 and y1 = 24 are exclusive borders)
    assert np.array_equal(mask, expected)
    # a 14-high x 10-wide grid
    assert A.box_to_patches((0, 0, 1, 1), model_input=(160, 224), patch=16, resize=None).shape == (14, 10)


def test_bad_geometry_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="divisible"):
        A.box_to_patches((0, 0, 1, 1), model_input=100, patch=16)
    with pytest.raises(ValueError, match="x1 < x0"):
        A.box_to_patches((10, 0, 1, 1), model_input=224)


# --------------------------------------------------------------------------- Point-in-Box


def one_hot_scores(indices, num_patches):
    scores = torch.zeros(len(indices), num_patches)
    scores[torch.arange(len(indices)), torch.as_tensor(indices)] = 1.0
    return scores


def test_point_in_box_hits_and_misses_on_constructed_score_maps():
    # 32x32 input, 8x8 patches (4x4 grid); box covers patches rows 1..2, cols 1..2.
    box = (9, 9, 22, 22)
    inside, outside = 1 * 4 + 2, 3 * 4 + 3
    scores = one_hot_scores([inside, outside], 16)
    hits = A.point_in_box(scores, [box, box], model_input=32, patch_size=8, resize=None)
    assert hits.tolist() == [True, False]
    # [B, rows, cols] maps work the same
    assert A.point_in_box(scores.reshape(2, 4, 4), [box, box], model_input=32, patch_size=8, resize=None).tolist() == [
        True,
        False,
    ]
    # several boxes per image: a hit in any counts
    two = [[box, (24, 24, 31, 31)], [box]]
    assert A.point_in_box(scores, two, model_input=32, patch_size=8, resize=None).tolist() == [True, False]


def test_point_in_box_maps_imagenet_boxes_per_image_size():
    box, size = (100, 50, 300, 200), (500, 375)
    patch_set = sorted(as_set(A.box_to_patches(box, size)))
    scores = one_hot_scores([patch_set[0], 0], 196)
    assert A.point_in_box(scores, [box, box], [size, size]).tolist() == [True, False]


def test_centre_rule_needs_the_patch_centre_inside_the_box():
    scores = one_hot_scores([0, 0], 16)
    boxes = [(0, 0, 5, 5), (0, 0, 3, 3)]  # patch 0 (pixels 0..8) has its centre at (4, 4)
    overlap = A.point_in_box(scores, boxes, model_input=32, patch_size=8, resize=None)
    centre = A.point_in_box(scores, boxes, model_input=32, patch_size=8, resize=None, rule="centre")
    assert overlap.tolist() == [True, True]
    assert centre.tolist() == [True, False]


def test_pib_filter_keeps_single_objects_under_a_quarter_of_the_image():
    boxes = [[(0, 0, 10, 10)], [(0, 0, 10, 10), (20, 20, 30, 30)], [(0, 0, 50, 50)], [(0, 0, 49, 50)]]
    keep = A.pib_filter(boxes, [(100, 100)] * 4)
    assert keep.tolist() == [True, False, False, True]  # 2500 is not < 2500; 2450 is


def test_random_patch_baseline_is_the_exact_fraction_of_box_patches():
    boxes = [(9, 9, 22, 22), (0, 0, 3, 3)]  # 4 patches, 1 patch of 16
    assert A.random_patch_baseline(boxes, model_input=32, patch_size=8, resize=None).tolist() == [0.25, 1 / 16]


def test_centre_patch_baseline_averages_over_the_tied_central_patches():
    # 14x14 grid: the four central patches are rows/cols 6..7 (pixels 96..128).
    one_central = (100, 100, 110, 110)
    all_central = (100, 100, 120, 120)
    corner = (0, 0, 10, 10)
    values = A.centre_patch_baseline([one_central, all_central, corner], model_input=224, resize=None)
    assert values.tolist() == [0.25, 1.0, 0.0]
    # odd grid: one centre patch
    assert A.centre_patch_baseline([(8, 8, 10, 10)], model_input=24, patch_size=8, resize=None).tolist() == [1.0]


def test_colour_outlier_baseline_finds_a_coloured_square():
    torch.manual_seed(0)
    pixels = 0.1 * torch.randn(3, 3, 32, 32)
    targets = [5, 10, 15]
    for image, target in enumerate(targets):
        row, col = divmod(target, 4)
        pixels[image, 0, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 2.0  # a red square on one patch
    scores = A.colour_outlier_scores(pixels, patch=8)
    assert scores.shape == (3, 16)
    assert scores.argmax(dim=1).tolist() == targets


def test_untrained_copy_is_a_fresh_same_architecture_model_and_leaves_the_rng_alone():
    model = LastViTForImageClassification(tiny_config(num_labels=3))
    with torch.no_grad():
        model.classifier.weight.fill_(1.0)
    state = torch.random.get_rng_state()
    fresh = A.untrained_copy(model, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert type(fresh) is type(model) and fresh.config.to_dict() == model.config.to_dict()
    assert not fresh.training
    assert not torch.equal(fresh.classifier.weight, model.classifier.weight)
    again = A.untrained_copy(model, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), again.state_dict().values()))


def test_point_in_box_report_carries_every_baseline():
    pixels = torch.zeros(2, 3, 32, 32)
    pixels[:, 1, 8:16, 8:16] = 3.0  # patch 5 stands out in colour
    boxes = [(9, 9, 14, 14), (9, 9, 14, 14)]  # patch 5 only
    report = A.point_in_box_with_baselines(
        one_hot_scores([5, 0], 16), boxes, model_input=32, patch_size=8, resize=None,
        pixel_values=pixels, untrained_scores=one_hot_scores([0, 0], 16), extra_scores={"votes": one_hot_scores([5, 5], 16)},
    )  # fmt: skip
    assert report == {
        "point_in_box": 0.5,
        "random_patch": 1 / 16,
        "centre_patch": 0.25,  # 4x4 grid: central patches 5, 6, 9, 10
        "colour_outlier": 1.0,
        "untrained": 0.0,
        "votes": 1.0,
        "num_images": 2,
    }


# --------------------------------------------------------------------------- scores, masks, votes, norms


def test_patch_score_is_the_cosine_with_the_global_feature():
    global_feature = torch.tensor([[1.0, 0.0, 0.0]])
    patches = torch.tensor([[[2.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 5.0, 0.0], [1.0, 1.0, 0.0]]])
    assert A.patch_scores(patches, global_feature)[0].tolist() == pytest.approx([1.0, -1.0, 0.0, 1 / math.sqrt(2)])
    with pytest.raises(ValueError, match="global_feature"):
        A.patch_scores(patches, global_feature[0])


def test_foreground_mask_is_above_mean_plus_one_std():
    scores = torch.tensor([[0.0, 0.0, 0.0, 10.0], [1.0, 2.0, 3.0, 4.0]])
    # row 2: mean 2.5, population std 1.118 -> threshold 3.618
    assert A.foreground_mask(scores).tolist() == [[False, False, False, True], [False, False, False, True]]
    assert A.foreground_mask(scores.reshape(2, 2, 2)).shape == (2, 2, 2)
    assert A.foreground_mask(scores, num_std=0.0)[1].tolist() == [False, False, True, True]


def test_vote_map_is_relative_to_the_maximum_and_thresholds_like_fig5():
    votes = torch.tensor([[0, 10, 30, 60]])
    assert A.vote_map(votes, (2, 2)).flatten().tolist() == pytest.approx([0.0, 1 / 6, 0.5, 1.0])
    assert A.vote_map(votes, (2, 2)).shape == (1, 2, 2)
    assert A.vote_map(votes, (2, 2), relative_threshold=0.3).tolist() == [[[False, False], [True, True]]]
    with pytest.raises(ValueError, match="grid"):
        A.vote_map(votes, (3, 3))


def test_token_norms_count_high_norm_patches():
    tokens = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [-12.0, 5.0]]])
    stats = A.token_norms(tokens, threshold=4.0)
    assert stats.norms.tolist() == [[5.0, 1.0, 13.0]]
    assert stats.max_norm.tolist() == [13.0]
    assert stats.max_abs_value.tolist() == [12.0]
    assert stats.num_high_norm.tolist() == [2]
    assert A.token_norms(tokens).num_high_norm is None


# --------------------------------------------------------------------------- masking probe


def test_mask_patches_zeroes_exactly_the_chosen_patches():
    pixels = torch.ones(2, 3, 16, 32)  # 2 x 4 grid of 8x8 patches
    masked = A.mask_patches(pixels, torch.tensor([[0, 5], [7, 7]]), patch_size=8)
    expected = torch.ones(2, 3, 16, 32)
    expected[0, :, 0:8, 0:8] = 0
    expected[0, :, 8:16, 8:16] = 0
    expected[1, :, 8:16, 24:32] = 0
    assert torch.equal(masked, expected)
    assert pixels.eq(1).all()  # the input is untouched


def key_patch_task(num_images=64, grid=4, patch=4, seed=0):
    """Images whose label lives in one key patch; the key patch has the LOWEST patch score."""
    generator = torch.Generator().manual_seed(seed)
    num_patches = grid * grid
    labels = torch.randint(0, 2, (num_images,), generator=generator)
    keys = torch.randint(0, num_patches, (num_images,), generator=generator)
    pixels = torch.ones(num_images, 3, grid * patch, grid * patch)
    for i, (key, label) in enumerate(zip(keys.tolist(), labels.tolist())):
        row, col = divmod(key, grid)
        pixels[i, :, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch] = 2.0 + label
    scores = torch.rand(num_images, num_patches, generator=generator)
    scores[torch.arange(num_images), keys] = -1.0

    def model_fn(batch):
        """Reads the label off the key patch; predicts class 2 (always wrong) when it is masked."""
        peak = batch.flatten(1).amax(dim=1)
        logits = torch.zeros(len(batch), 3)
        logits[torch.arange(len(batch)), torch.where(peak >= 2.0, peak - 2.0, torch.full_like(peak, 2.0)).long()] = 1.0
        return logits

    return model_fn, pixels, labels, scores, num_patches


def test_masking_probe_orders_high_above_random_above_low_when_low_score_patches_matter():
    model_fn, pixels, labels, scores, _ = key_patch_task()
    ks = [0, 1, 4, 8, 12, 15, 16]
    kwargs = {"ks": ks, "patch_size": 4, "batch_size": 20}
    high = A.masking_probe(model_fn, pixels, labels, scores, order="high", **kwargs)
    low = A.masking_probe(model_fn, pixels, labels, scores, order="low", **kwargs)
    rand = A.masking_probe(model_fn, pixels, labels, scores, order="random", **kwargs)
    assert high.tolist() == [1, 1, 1, 1, 1, 1, 0]  # the key patch goes last
    assert low.tolist() == [1, 0, 0, 0, 0, 0, 0]  # the key patch goes first
    assert rand[0] == 1 and rand[-1] == 0
    assert (np.diff(rand) <= 0).all()  # random masked sets are nested
    assert ((low <= rand) & (rand <= high)).all()
    assert 0 < rand[3] < 1
    again = A.masking_probe(model_fn, pixels, labels, scores, order="random", **kwargs)
    assert np.array_equal(rand, again)  # seeded


def test_masking_probe_rejects_unknown_orders_and_impossible_k():
    model_fn, pixels, labels, scores, _ = key_patch_task(num_images=4)
    with pytest.raises(ValueError, match="order"):
        A.masking_probe(model_fn, pixels, labels, scores, ks=[1], order="middle", patch_size=4)
    with pytest.raises(ValueError, match="outside"):
        A.masking_probe(model_fn, pixels, labels, scores, ks=[17], patch_size=4)


# --------------------------------------------------------------------------- evaluate modules


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_point_in_box_metric_loads_offline_and_agrees_with_the_library(no_network):
    metric = A.load_metric("point_in_box")
    rng = np.random.default_rng(0)
    sizes = rng.integers(100, 600, size=(20, 2))
    boxes = [
        [float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2)), float(w * 0.7), float(h * 0.8)] for w, h in sizes
    ]
    scores = rng.normal(size=(20, 196)).astype(np.float32)
    result = metric.compute(predictions=scores.tolist(), references=boxes, image_sizes=sizes.tolist())
    assert result["point_in_box"] == pytest.approx(A.point_in_box(scores, boxes, sizes).mean())
    assert result["random_patch"] == pytest.approx(A.random_patch_baseline(boxes, sizes).mean())
    assert result["centre_patch"] == pytest.approx(A.centre_patch_baseline(boxes, sizes).mean())
    assert result["num_images"] == 20


def test_point_in_box_metric_takes_box_lists_the_filter_and_baseline_scores(no_network):
    metric = A.load_metric("point_in_box")
    kwargs = {"model_input": 32, "patch_size": 8, "resize": None}
    result = metric.compute(
        predictions=one_hot_scores([5, 0, 5], 16).tolist(),
        references=[[(9, 9, 14, 14)], [(9, 9, 14, 14), (0, 0, 4, 4)], [(0, 0, 31, 31)]],
        image_sizes=[(32, 32)] * 3,
        single_object_filter=True,
        baseline_scores={"untrained": one_hot_scores([0, 0, 0], 16).tolist()},
        **kwargs,
    )
    assert result == {
        "point_in_box": 1.0,
        "untrained": 0.0,
        "random_patch": 1 / 16,
        "centre_patch": 0.25,
        "num_images": 1,
    }


def test_top_k_accuracy_metric_loads_offline(no_network):
    metric = A.load_metric("top_k_accuracy")
    logits = [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]
    assert metric.compute(predictions=logits, references=[2, 0, 0], k=[1, 2]) == {
        "top1_accuracy": pytest.approx(1 / 3),
        "top2_accuracy": pytest.approx(2 / 3),
    }
    assert metric.compute(predictions=[1, 0, 2], references=[2, 0, 2]) == {"top1_accuracy": pytest.approx(2 / 3)}


def test_linear_cka_metric_loads_offline_and_agrees_with_the_library(no_network):
    metric = A.load_metric("linear_cka")
    X, Y = np.random.default_rng(0).normal(size=(2, 15, 4))
    assert metric.compute(predictions=X.tolist(), references=Y.tolist())["linear_cka"] == pytest.approx(
        A.linear_cka(X, Y)
    )


def test_unknown_metric_names_list_the_available_ones():
    with pytest.raises(ValueError, match="point_in_box"):
        A.load_metric("accuracy")


# --------------------------------------------------------------------------- plots


def assert_png(path, min_size=(100, 100)):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]


def test_plot_helpers_write_decodable_pngs(tmp_path):
    from lastvit.measure import plots as P

    pixels = torch.randn(3, 32, 48)  # normalised, non-square; 4 x 6 grid of 8-px patches
    votes = torch.arange(24.0)
    assert_png(P.plot_patch_map(pixels, votes, tmp_path / "votes.png", box=(8, 4, 30, 20), grid=(4, 6), title="votes"))
    assert_png(P.plot_patch_map(np.zeros((32, 32, 3), np.uint8), torch.rand(4, 4), tmp_path / "sub" / "scores.png"))
    ks = [0, 4, 8, 16]
    curves = {"high": [0.8, 0.8, 0.7, 0.1], "low": [0.8, 0.3, 0.1, 0.1], "random": [0.8, 0.6, 0.4, 0.1]}
    assert_png(P.plot_masking_probe(ks, curves, tmp_path / "probe.png", num_patches=16))
    norms = {"cls": torch.rand(100) * 10, "lazystrike": torch.rand(100)}
    assert_png(P.plot_norm_histogram(norms, tmp_path / "norms.png", threshold=5.0))
    assert_png(P.plot_norm_histogram(np.ones(5), tmp_path / "flat.png"))
    with pytest.raises(ValueError, match="grid"):
        P.plot_patch_map(pixels, torch.rand(24), tmp_path / "bad.png")


def test_measurements_run_end_to_end_on_a_tiny_classifier():
    model = LastViTForImageClassification(tiny_config(num_labels=3, num_register_tokens=2, lazystrike_top_k=2)).eval()
    pixels, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    boxes = [(8, 8, 20, 20)] * 4
    with torch.no_grad():
        out = model.lastvit(pixels)
        untrained = A.untrained_copy(model, seed=3).lastvit(pixels)
    patches = model.split_tokens(out.last_hidden_state).patches
    scores = A.patch_scores(patches, out.pooler_output)
    untrained_scores = A.patch_scores(model.split_tokens(untrained.last_hidden_state).patches, untrained.pooler_output)
    report = A.point_in_box_with_baselines(
        scores,
        boxes,
        model_input=32,
        patch_size=8,
        resize=None,
        pixel_values=pixels,
        untrained_scores=untrained_scores,
    )
    assert set(report) == {"point_in_box", "random_patch", "centre_patch", "colour_outlier", "untrained", "num_images"}
    assert report["random_patch"] == 4 / 16  # (8, 8, 20, 20) overlaps rows and cols 1..2
    accuracy = A.masking_probe(lambda x: model(x).logits, pixels, labels, scores, ks=[0, 8, 16], patch_size=8)
    assert accuracy.shape == (3,) and ((accuracy >= 0) & (accuracy <= 1)).all()
    assert A.vote_map(out.patch_votes, model.patch_grid(32, 32)).shape == (4, 4, 4)
