"""Coarse segmentation, connected components and CorLoc (lastvit.measure.grid, maps and metrics.localisation) on hand-built maps."""

import numpy as np
import pytest
import torch

from lastvit import measure as D


def test_coarse_segmentation_keeps_patches_above_mean_plus_std():
    scores = torch.zeros(1, 16)
    scores[0, [5, 6]] = 1.0  # mean 0.125, std 0.33: only the two raised patches pass
    mask = D.coarse_segmentation(scores, (4, 4))
    assert mask.shape == (1, 4, 4)
    assert mask[0].sum() == 2 and mask[0, 1, 1] and mask[0, 1, 2]


def test_patch_mask_covers_whole_patches_in_pixels():
    mask = np.zeros((1, 2, 2), dtype=bool)
    mask[0, 0, 1] = True
    pixels = D.patches_to_pixels(mask, (3, 4))
    assert pixels.shape == (1, 6, 8)
    assert pixels[0, :3, 4:].all() and pixels.sum() == 12


def test_mask_iou_is_intersection_over_union_and_zero_for_two_empty_masks():
    a = np.zeros((2, 4, 4), dtype=bool)
    b = np.zeros((2, 4, 4), dtype=bool)
    a[0, :2, :2] = True  # 4 pixels
    b[0, :2, :4] = True  # 8 pixels, 4 shared
    assert D.mask_iou(a, b).tolist() == [0.5, 0.0]


def test_largest_component_uses_four_connectivity():
    mask = np.array(
        [
            [1, 1, 0, 0],
            [1, 0, 0, 1],
            [0, 0, 1, 0],  # diagonal neighbours are separate components
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    largest = D.largest_component(mask)
    assert largest.sum() == 3 and largest[0, 0] and largest[0, 1] and largest[1, 0]
    assert not D.largest_component(np.zeros((3, 3), dtype=bool)).any()


def test_mask_box_spans_whole_patches_with_exclusive_end():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 2] = mask[2, 3] = True
    assert D.mask_box(mask, (8, 8)) == (16, 8, 32, 24)
    assert D.mask_box(np.zeros((4, 4), dtype=bool)) is None


def test_box_iou_on_hand_computed_boxes():
    assert D.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert D.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert D.box_iou(None, (0, 0, 1, 1)) == 0.0


def test_corloc_judges_the_largest_component_box_at_iou_one_half():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :2, :2] = True  # box (0, 0, 16, 16) in 8-px patches
    masks[0, 3, 3] = True  # a smaller stray component, ignored
    masks[1, 3, 3] = True  # box (24, 24, 32, 32)
    boxes = [(0, 0, 16, 20), (0, 0, 16, 16)]  # IoU 256/320 = 0.8 -> hit; 0 -> miss
    assert D.corloc(masks, boxes, (8, 8)).tolist() == [True, False]
    with pytest.raises(ValueError, match="one box per image"):
        D.corloc(masks, boxes[:1], (8, 8))


def test_dense_metrics_on_a_map_that_marks_the_object_exactly():
    scores = torch.zeros(1, 16)
    scores[0, [0, 1, 4, 5]] = 1.0  # top-left 2x2 patches
    object_mask = np.zeros((1, 32, 32), dtype=bool)
    object_mask[0, :16, :16] = True
    metrics = D.dense_metrics(scores, (4, 4), (8, 8), [(0, 0, 16, 16)], object_mask)
    assert metrics == {"corloc": 1.0, "segmentation_iou": 1.0}
