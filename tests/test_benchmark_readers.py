"""The benchmark readers (`lastvit.data.benchmarks`): what each on-disk format yields, written here
in that format (boxes, ignore pixels, filters, class ids)."""

import json

import numpy as np
import pytest

from lastvit.data.benchmarks.coco import COCODetection
from lastvit.data.benchmarks.common import BenchmarkDataError, ImageFolder, collate_samples, reduce_zero_label
from lastvit.data.benchmarks.imagenet import ImageNetBoxes, class_folder_splits
from lastvit.data.benchmarks.in9 import bg_gap, in_to_in9, variation_folders
from lastvit.data.benchmarks.segmentation_suites import (
    PROTOCOLS,
    SegmentationSuite,
    coco_object_table,
    coco_stuff_table,
    read_class_names,
    read_templates,
)
from lastvit.data.benchmarks.voc import VOCDetection, VOCSegmentation

from .benchmark_data import (
    IMAGENET_CASES,
    red_image,
    save_label_png,
    uniform_image,
    write_imagefolder,
    write_imagenet,
    write_voc,
    write_voc_segmentation,
)


@pytest.mark.parametrize("layout", ["devkit", "kaggle"])
def test_imagenet_boxes_apply_the_authors_single_object_filter_by_default(tmp_path, layout):
    dataset = ImageNetBoxes(write_imagenet(tmp_path, layout))
    # 3: two boxes; 4: one box covering 40 x 40 of 48 x 48 (69% > 25%)
    assert [r["id"][-1] for r in dataset.records] == ["1", "2", "5"]
    assert dataset.num_annotated == 5
    sample = dataset[2]
    assert sample["boxes"] == [(36, 20, 52, 36)] and sample["size"] == (64, 48)
    assert [dataset[i]["label"] for i in range(3)] == [1, 0, 0]  # LOC_synset_mapping.txt order: n01, n02


@pytest.mark.parametrize("layout", ["devkit", "kaggle"])
def test_imagenet_filter_is_off_by_a_flag_and_both_layouts_read_alike(tmp_path, layout):
    dataset = ImageNetBoxes(write_imagenet(tmp_path, layout), single_object_filter=False)
    assert len(dataset) == 5
    assert dataset.records[2]["boxes"] == [(8, 8, 24, 24), (30, 30, 44, 44)]
    assert dataset.records[3]["boxes"] == [(0, 0, 40, 40)]


def test_imagenet_without_synset_mapping_orders_classes_by_wnid_and_names_missing_files(tmp_path):
    dataset = ImageNetBoxes(write_imagenet(tmp_path / "a", "devkit", synset_mapping=False))
    assert dataset.synsets == ["n01", "n02"]
    with pytest.raises(BenchmarkDataError, match="no box annotations"):
        ImageNetBoxes(tmp_path)  # a folder with no annotations of its own
    (tmp_path / "a" / "ILSVRC2012_img_val" / f"{IMAGENET_CASES[0][0]}.JPEG").unlink()
    with pytest.raises(BenchmarkDataError, match="ILSVRC2012_val_00000001 is missing"):
        ImageNetBoxes(tmp_path / "a")


def test_voc_detection_reads_lost_boxes_and_drops_hard_objects_only_on_request(tmp_path):
    root = write_voc(tmp_path, "2007")
    dataset = VOCDetection(root, "2007")
    assert [r["id"] for r in dataset.records] == ["000001", "000002", "000003"]
    assert dataset[0]["boxes"] == [(8, 8, 24, 16)]  # VOC (9, 9, 24, 16): 1-based inclusive -> 0-based exclusive
    assert dataset[2]["boxes"] == [(8, 8, 24, 16)]  # difficult objects count unless --remove-hards
    hard_free = VOCDetection(root / "VOCdevkit", "2007", remove_hards=True)
    assert [r["id"] for r in hard_free.records] == ["000001", "000002"] and hard_free.num_skipped == 1
    with pytest.raises(BenchmarkDataError, match="no PASCAL VOC 2012"):
        VOCDetection(root, "2012")


def test_voc_segmentation_reads_palette_indices_with_255_as_void(tmp_path):
    dataset = VOCSegmentation(write_voc_segmentation(tmp_path))
    target = dataset[0]["target"]
    assert target.shape == (32, 32) and set(np.unique(target)) == {0, 15, 255}
    assert (target[8:16, 8:24] == 15).all() and (target[16, 8:24] == 255).all()


def test_an_rgb_rendering_of_a_mask_is_refused_with_the_fix(tmp_path):
    root = write_voc_segmentation(tmp_path)
    path = root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2008_000001.png"
    red_image(32, 32).save(path)
    with pytest.raises(BenchmarkDataError, match="palette or grayscale PNGs"):
        VOCSegmentation(root)[0]


def test_coco_reads_lost_boxes_for_the_listed_images_only(tmp_path):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "annotations").mkdir()
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": 40, "height": 32} for i in (5, 7, 9)]
    annotations = [
        {"image_id": 5, "bbox": [8.4, 8.0, 15.4, 8.0], "iscrowd": 0},  # -> (8, 8, 24, 16) after rounding
        {"image_id": 5, "bbox": [0, 0, 40, 32], "iscrowd": 1},  # crowd: dropped
        {"image_id": 7, "bbox": [0, 0, 10, 10], "iscrowd": 1},  # only crowd: no boxes left (a miss)
        {"image_id": 9, "bbox": [1, 1, 2, 2], "iscrowd": 0},
    ]
    (tmp_path / "annotations" / "instances_train2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": []})
    )
    for image in images:
        red_image(40, 32).save(tmp_path / "train2014" / image["file_name"])
    listed = tmp_path / "coco_20k_filenames.txt"
    listed.write_text("train2014/COCO_train2014_000000000007.jpg\ntrain2014/COCO_train2014_000000000005.jpg\n")
    dataset = COCODetection(tmp_path, image_list=listed)
    assert [r["id"] for r in dataset.records] == ["7", "5"]
    assert dataset[1]["boxes"] == [(8, 8, 24, 16)] and dataset[0]["boxes"] == []
    assert len(COCODetection(tmp_path)) == 3
    listed.write_text("train2014/COCO_train2014_000000000011.jpg\n")
    with pytest.raises(BenchmarkDataError, match="not in"):
        COCODetection(tmp_path, image_list=listed)


def _label_pair(images, labels, stem, array, label_suffix=".png", image_suffix=".jpg"):
    images.mkdir(parents=True, exist_ok=True)
    red_image(array.shape[1], array.shape[0]).save(images / f"{stem}{image_suffix}")
    save_label_png(labels / f"{stem}{label_suffix}", array)


def test_ade20k_and_context59_drop_label_zero_and_shift_the_rest_down(tmp_path):
    raw = np.array([[0, 1, 150], [255, 2, 0]])
    root = tmp_path / "ADEChallengeData2016"
    _label_pair(root / "images" / "validation", root / "annotations" / "validation", "ADE_val_00000001", raw)
    target = SegmentationSuite("ade20k", tmp_path)[0]["target"]
    assert target.tolist() == [[255, 0, 149], [255, 1, 255]]

    voc2010 = tmp_path / "VOC2010"
    _label_pair(voc2010 / "JPEGImages", voc2010 / "SegmentationClassContext", "2008_000002", np.array([[0, 59]]))
    (voc2010 / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (voc2010 / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    assert SegmentationSuite("context59", tmp_path)[0]["target"].tolist() == [[255, 58]]


def test_voc20_ignores_background_and_voc21_keeps_it(tmp_path):
    labels = np.array([[0, 15, 255, 1]] * 4)
    root = write_voc_segmentation(tmp_path, [("2008_000003", [], labels)], size=(4, 4))
    assert SegmentationSuite("voc20", root)[0]["target"][0].tolist() == [255, 14, 255, 0]
    assert SegmentationSuite("voc21", root)[0]["target"][0].tolist() == [0, 15, 255, 1]
    assert reduce_zero_label(np.array([0, 1, 255])).tolist() == [255, 0, 255]


def test_cityscapes_reads_train_ids_and_maps_label_ids_when_they_are_all_there_is(tmp_path):
    city = "aachen"
    images, labels = tmp_path / "leftImg8bit" / "val" / city, tmp_path / "gtFine" / "val" / city
    _label_pair(
        images,
        labels,
        "aachen_000000_000019",
        np.array([[0, 18, 255]]),
        "_gtFine_labelTrainIds.png",
        "_leftImg8bit.png",
    )
    assert SegmentationSuite("cityscapes", tmp_path)[0]["target"].tolist() == [[0, 18, 255]]
    (labels / "aachen_000000_000019_gtFine_labelTrainIds.png").unlink()
    save_label_png(labels / "aachen_000000_000019_gtFine_labelIds.png", np.array([[7, 33, 0]]))
    assert SegmentationSuite("cityscapes", tmp_path)[0]["target"].tolist() == [
        [0, 18, 255]
    ]  # road, bicycle, unlabeled


def test_coco_stuff_and_coco_object_from_converted_or_raw_maps(tmp_path):
    # raw stuffthingmaps: category id - 1; person 0, bicycle 1, id 12 (11) missing, stop sign 12 (index 11), stuff 91+
    raw = np.array([[0, 1, 12, 11, 91, 181, 255]])
    images, labels = tmp_path / "images" / "val2017", tmp_path / "annotations" / "val2017"
    _label_pair(images, labels, "000000000139", raw)
    assert SegmentationSuite("coco-stuff", tmp_path)[0]["target"].tolist() == [[0, 1, 11, 255, 80, 170, 255]]
    assert SegmentationSuite("coco-object", tmp_path)[0]["target"].tolist() == [[1, 2, 12, 255, 0, 0, 255]]
    assert (coco_stuff_table() < 171).sum() == 171 and (coco_object_table()[:182] == 0).sum() == 91
    save_label_png(labels / "000000000139_labelTrainIds.png", np.array([[3] * 7]))
    assert SegmentationSuite("coco-stuff", tmp_path)[0]["target"].tolist() == [[3] * 7]


def test_the_zero_shot_protocol_is_data_sclips_settings_and_names():
    assert len(read_templates()) == 80 and all("{}" in t for t in read_templates())
    sizes = {name: len(read_class_names(p.names_file)) for name, p in PROTOCOLS.items()}
    assert sizes == {
        "voc20": 20, "voc21": 21, "context59": 59, "ade20k": 150, "cityscapes": 19, "coco-stuff": 171, "coco-object": 81,
    }  # fmt: skip
    assert read_class_names("zero_shot/voc21.txt")[0][:2] == ["sky", "wall"]  # SCLIP's background words
    assert "person in shirt" in read_class_names("zero_shot/voc20.txt")[14]
    assert {n: p.short_side for n, p in PROTOCOLS.items()} == {
        "voc20": 336, "voc21": 336, "context59": 336, "ade20k": 336, "cityscapes": 560, "coco-stuff": 448, "coco-object": 336,
    }  # fmt: skip
    assert [n for n, p in PROTOCOLS.items() if p.background] == ["voc21", "coco-object"]
    assert (PROTOCOLS["voc21"].logit_scale, PROTOCOLS["voc21"].prob_threshold, PROTOCOLS["voc21"].area_threshold) == (
        65,
        0.1,
        0.1,
    )


def test_in9_variations_are_imagefolders_and_the_mapping_is_the_challenges(tmp_path):
    black = uniform_image((0, 0, 0))
    classes = {f"0{i}_c": [black] for i in range(9)}
    for variation in ("original", "mixed_same"):
        write_imagefolder(tmp_path / variation / "val", classes)
    with pytest.raises(BenchmarkDataError, match="mixed_rand"):
        variation_folders(tmp_path)
    write_imagefolder(tmp_path / "mixed_rand", classes)  # without the val/ level
    assert set(variation_folders(tmp_path)) == {"original", "mixed_same", "mixed_rand"}
    mapping = in_to_in9()
    assert len(mapping) == 1000 and mapping[151] == 0 and mapping[7] == 1 and mapping[0] == 8 and mapping[999] == -1
    assert bg_gap({"mixed_same": 0.9, "mixed_rand": 0.6}) == pytest.approx(0.3)


def test_class_folder_splits_need_the_same_classes_and_batches_stack_only_equal_shapes(tmp_path):
    write_imagefolder(tmp_path / "train", {"a": [uniform_image(0)], "b": [uniform_image(9)]})
    write_imagefolder(tmp_path / "val", {"a": [uniform_image(0)]})
    with pytest.raises(BenchmarkDataError, match="different classes"):
        class_folder_splits(tmp_path)
    train = ImageFolder(tmp_path / "train").limit(1)
    assert len(train) == 1 and ImageFolder(tmp_path / "train").limit(2).records[1]["label"] == 1  # both classes
    import torch

    batch = collate_samples(
        [{"pixel_values": torch.zeros(3, 2, 2), "index": 0}, {"pixel_values": torch.zeros(3, 2, 4), "index": 1}]
    )
    assert isinstance(batch["pixel_values"], list) and batch["index"] == [0, 1]
