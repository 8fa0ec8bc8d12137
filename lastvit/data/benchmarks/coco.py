"""COCO detection boxes as LOST's CorLoc protocol reads them (COCO20k, LaSt-ViT Tab. 7).

Layout: an instances JSON (``annotations/instances_train2014.json``) and its images
(``train2014/`` or ``images/train2014/``). COCO20k is LOST's list of 19,817 train2014 images
(``datasets/coco_20k_filenames.txt`` in github.com/valeoai/LOST, lines like
``train2014/COCO_train2014_000000560992.jpg``), given with ``--image-list``; the image id is the
number in the file name.

LOST's boxes (``datasets.extract_gt_COCO``): ``[x, y, x + w, y + h]`` each rounded to an integer,
crowd annotations (``iscrowd = 1``) dropped; an image left without boxes still counts (as a miss).
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import BenchmarkDataError, BenchmarkDataset, first_existing, read_ids

LAYOUT = (
    "COCO: DIR/annotations/instances_train2014.json with the images in DIR/train2014/ or DIR/images/train2014/ "
    "(COCO20k: pass LOST's coco_20k_filenames.txt with --image-list)"
)


def lost_coco_boxes(annotations: list[dict]) -> list[tuple[int, int, int, int]]:
    """LOST's ground-truth boxes of one image: rounded ``(x, y, x + w, y + h)``, crowd boxes dropped."""
    boxes = []
    for annotation in annotations:
        if annotation.get("iscrowd", 0) == 1:
            continue
        x, y, w, h = annotation["bbox"]
        boxes.append(tuple(round(v) for v in (x, y, x + w, y + h)))
    return boxes


def image_id_of(file_name: str) -> int:
    """The COCO image id in a file name: ``train2014/COCO_train2014_000000560992.jpg`` -> 560992."""
    try:
        return int(Path(file_name).stem.split("_")[-1])
    except ValueError as error:
        raise BenchmarkDataError(
            f"cannot read a COCO image id from {file_name!r} (expected ..._<number>.jpg)."
        ) from error


class COCODetection(BenchmarkDataset):
    """The images of `annotation_file` (or only those of `image_list`, in its order) with LOST's boxes.
    The JSON is read once; only the selected images' boxes are kept."""

    def __init__(self, root, annotation_file=None, image_list=None, split: str = "train2014", transform=None):
        super().__init__(transform)
        root = Path(root)
        annotation_file = (
            Path(annotation_file) if annotation_file else root / "annotations" / f"instances_{split}.json"
        )
        if not annotation_file.is_file():
            raise BenchmarkDataError(f"{annotation_file} does not exist; {LAYOUT}.")
        images_dir = first_existing([root / split, root / "images" / split], f"{split} images", LAYOUT)
        data = json.loads(annotation_file.read_text())
        images = {image["id"]: image for image in data["images"]}
        wanted = [image_id_of(name) for name in read_ids(image_list)] if image_list else sorted(images)
        missing = [i for i in wanted if i not in images]
        if missing:
            raise BenchmarkDataError(
                f"{len(missing)} images of the list (e.g. id {missing[0]}) are not in {annotation_file}; "
                "COCO20k's list names train2014 images: use instances_train2014.json."
            )
        selected = set(wanted)
        per_image = {i: [] for i in wanted}
        for annotation in data["annotations"]:
            if annotation["image_id"] in selected:
                per_image[annotation["image_id"]].append(annotation)
        del data
        for image_id in wanted:
            image = images[image_id]
            self.records.append(
                {
                    "image": images_dir / image["file_name"],
                    "id": str(image_id),
                    "boxes": lost_coco_boxes(per_image[image_id]),
                    "size": (image["width"], image["height"]),
                }
            )
