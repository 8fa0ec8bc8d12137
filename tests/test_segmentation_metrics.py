"""The local `evaluate` modules `mean_iou` and `corloc` on hand-built label maps and boxes: they load
offline, match hand computations (edge cases included) and agree with the library functions that
`lastvit-evaluate` uses."""

import socket

import numpy as np
import pytest

from lastvit import measure as D
from lastvit.measure import load_metric
from lastvit.measure.metrics.segmentation import IGNORE


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def mean_iou():
    return load_metric("mean_iou")


@pytest.fixture(scope="module")
def corloc():
    return load_metric("corloc")


# --------------------------------------------------------------------------- mean_iou


def test_mean_iou_loads_offline(offline):
    assert load_metric("mean_iou").compute(predictions=[[[0]]], references=[[[0]]], num_labels=1)["miou"] == 1.0


def test_mean_iou_sums_intersections_and_unions_over_the_dataset_not_per_image(mean_iou):
    # image 1 (2x2): class 0 right on 3 pixels, one class-1 pixel called 0
    # image 2 (1x4, another size): class 1 right on 2 pixels, 2 class-1 pixels called 0
    predictions = [[[0, 0], [0, 0]], [[1, 1, 0, 0]]]
    references = [[[0, 0], [0, 1]], [[1, 1, 1, 1]]]
    result = mean_iou.compute(predictions=predictions, references=references, num_labels=2)
    # class 0: TP 3, FP 1 + 2 = 3, FN 0 -> 3/6; class 1: TP 2, FP 0, FN 1 + 2 = 3 -> 2/5
    assert result["per_class_iou"] == pytest.approx([3 / 6, 2 / 5])
    assert result["miou"] == pytest.approx((3 / 6 + 2 / 5) / 2)
    assert result["pixel_accuracy"] == pytest.approx(5 / 8)
    # averaging per-image mIoUs would give another number: the dataset rule is what is computed
    per_image = [
        mean_iou.compute(predictions=[p], references=[r], num_labels=2)["miou"]
        for p, r in zip(predictions, references)
    ]
    assert np.mean(per_image) != pytest.approx(result["miou"])


def test_a_class_absent_from_prediction_and_reference_is_left_out_of_the_mean(mean_iou):
    result = mean_iou.compute(predictions=[[[0, 2]]], references=[[[0, 2]]], num_labels=4)
    assert result["miou"] == 1.0
    assert np.isnan(result["per_class_iou"][1]) and np.isnan(result["per_class_iou"][3])


def test_a_class_never_predicted_scores_zero_and_counts_in_the_mean(mean_iou):
    # the prediction misses class 1 entirely: its IoU is 0 (it is in the reference), class 0 gets 2/4
    result = mean_iou.compute(predictions=[[[0, 0, 0, 0]]], references=[[[0, 0, 1, 1]]], num_labels=2)
    assert result["per_class_iou"] == pytest.approx([0.5, 0.0])
    assert result["miou"] == pytest.approx(0.25)


def test_ignored_reference_pixels_are_not_scored_and_none_scores_every_pixel(mean_iou):
    predictions, references = [[[0, 1, 1]]], [[[0, 1, IGNORE]]]
    assert mean_iou.compute(predictions=predictions, references=references, num_labels=2)["miou"] == 1.0
    with_background = [[[0, 1, 2]]]  # the ignored pixel as class 2 (background) instead
    result = mean_iou.compute(predictions=predictions, references=with_background, num_labels=3, ignore_index=None)
    assert result["per_class_iou"] == pytest.approx([1.0, 0.5, 0.0])  # class 2 never predicted
    assert result["miou"] == pytest.approx(0.5)


def test_every_pixel_ignored_gives_zero_miou_and_no_class_iou(mean_iou):
    result = mean_iou.compute(predictions=[[[1, 1]]], references=[[[IGNORE, IGNORE]]], num_labels=2)
    assert result["miou"] == 0.0 and all(np.isnan(result["per_class_iou"]))


def test_mean_iou_refuses_bad_inputs_with_the_fix(mean_iou):
    with pytest.raises(ValueError, match="num_labels"):
        mean_iou.compute(predictions=[[[0]]], references=[[[0]]])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        mean_iou.compute(predictions=[[[0, 2]]], references=[[[0, 1]]], num_labels=2)
    with pytest.raises(ValueError, match="one shape"):
        mean_iou.compute(predictions=[[[0, 1]]], references=[[[0], [1]]], num_labels=2)


# --------------------------------------------------------------------------- corloc


def test_corloc_loads_offline(offline):
    assert load_metric("corloc").compute(predictions=[[0, 0, 4, 4]], references=[[0, 0, 4, 4]])["corloc"] == 1.0


def test_corloc_counts_boxes_with_iou_of_at_least_one_half(corloc):
    references = [[0, 0, 10, 10]] * 3
    predictions = [
        [0, 0, 10, 5],  # IoU 50/100 = 0.5: a hit (the rule is >=)
        [0, 0, 10, 4],  # IoU 40/100: a miss
        [0, 0, 10, 20],  # IoU 100/200 = 0.5: a hit
    ]
    assert corloc.compute(predictions=predictions, references=references) == {
        "corloc": pytest.approx(2 / 3),
        "num_images": 3,
    }
    assert corloc.compute(predictions=predictions, references=references, iou_threshold=0.4)["corloc"] == 1.0


def test_corloc_hits_when_any_reference_box_matches_and_misses_without_a_prediction(corloc):
    predictions = [[20, 20, 30, 30], [], [0, 0, 10, 10]]
    references = [[[0, 0, 10, 10], [20, 20, 30, 31]], [[0, 0, 10, 10]], []]  # the last image has no box
    assert corloc.compute(predictions=predictions, references=references)["corloc"] == pytest.approx(1 / 3)


def test_corloc_of_an_all_empty_prediction_is_zero(corloc):
    assert corloc.compute(predictions=[[], []], references=[[0, 0, 4, 4], [1, 1, 2, 2]])["corloc"] == 0.0


def test_corloc_refuses_a_box_that_is_not_four_numbers(corloc):
    with pytest.raises(ValueError, match="x0, y0, x1, y1"):
        corloc.compute(predictions=[[0, 0, 4]], references=[[0, 0, 4, 4]])


def test_corloc_module_agrees_with_the_library_on_foreground_masks(corloc):
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, :2, :2] = True  # box (0, 0, 16, 16) in 8-px patches
    masks[0, 3, 3] = True  # a smaller stray component, ignored
    masks[1, 3, 3] = True  # box (24, 24, 32, 32)
    boxes = [(0, 0, 16, 20), (0, 0, 16, 16), (0, 0, 8, 8)]  # hit (IoU 0.8), miss, miss (empty mask)
    predicted = D.foreground_boxes(masks, (8, 8))
    assert predicted == [(0, 0, 16, 16), (24, 24, 32, 32), None]
    library = D.corloc(masks, boxes, (8, 8))
    assert library.tolist() == [True, False, False]
    result = corloc.compute(predictions=[list(b or []) for b in predicted], references=[list(b) for b in boxes])
    assert result["corloc"] == pytest.approx(library.mean())
