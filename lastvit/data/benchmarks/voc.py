"""PASCAL VOC 2007 / 2012: detection boxes as LOST's CorLoc protocol reads them (LaSt-ViT Tab. 7, 9)
and the segmentation masks of VOC12 val (coarse segmentation, Tab. 6; zero-shot VOC20/VOC21, Tab. 4).

Layout (the devkit's): ``VOC2007/`` or ``VOC2012/`` with ``Annotations/*.xml``, ``JPEGImages/*.jpg``,
``ImageSets/Main/trainval.txt``, ``SegmentationClass/*.png`` (palette PNGs: index = class, 0 =
background, 255 = void/ignore) and ``ImageSets/Segmentation/val.txt``. ``--data-dir`` may name the
year folder, ``VOCdevkit/`` or the folder above it.

LOST's boxes (``datasets.extract_gt_VOC``): ``(xmin - 1, ymin - 1, xmax, ymax)`` (the 1-based
inclusive corners made 0-based, right/bottom exclusive), every object kept; with
``remove_hards`` (LOST's ``--no_hard``) objects marked truncated or difficult are dropped and
images left with none are skipped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .common import BenchmarkDataError, BenchmarkDataset, read_ids

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def voc_root(root, year: str) -> Path:
    """The ``VOC<year>`` folder: `root` itself, ``root/VOC<year>`` or ``root/VOCdevkit/VOC<year>``."""
    root = Path(root)
    for candidate in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "ImageSets").is_dir():
            return candidate
    raise BenchmarkDataError(
        f"no PASCAL VOC {year} in {root}: expected VOC{year}/ (or VOCdevkit/VOC{year}/) with JPEGImages/, "
        "Annotations/ and ImageSets/, as the devkit's tar files unpack."
    )


def parse_voc_xml(path: Path) -> dict:
    """``{"filename", "size": (width, height), "objects": [{"name", "box", "difficult", "truncated"}]}``,
    boxes as written (1-based inclusive integer corners)."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        objects.append(
            {
                "name": obj.findtext("name").strip(),
                "box": tuple(int(float(box.findtext(tag))) for tag in ("xmin", "ymin", "xmax", "ymax")),
                "difficult": obj.findtext("difficult", "0").strip() == "1",
                "truncated": obj.findtext("truncated", "0").strip() == "1",
            }
        )
    return {
        "filename": root.findtext("filename", path.stem + ".jpg").strip(),
        "size": (int(size.findtext("width")), int(size.findtext("height"))),
        "objects": objects,
    }


def lost_boxes(objects: list[dict], remove_hards: bool = False) -> list[tuple[int, int, int, int]]:
    """LOST's ground-truth boxes of one image: ``(xmin - 1, ymin - 1, xmax, ymax)``, hard objects
    (truncated or difficult) dropped with `remove_hards`."""
    return [
        (o["box"][0] - 1, o["box"][1] - 1, o["box"][2], o["box"][3])
        for o in objects
        if not (remove_hards and (o["truncated"] or o["difficult"]))
    ]


class VOCDetection(BenchmarkDataset):
    """The images of ``ImageSets/Main/<image_set>.txt`` with LOST's boxes (``boxes``) and sizes."""

    def __init__(self, root, year: str, image_set: str = "trainval", transform=None, remove_hards: bool = False):
        super().__init__(transform)
        folder = voc_root(root, year)
        self.num_skipped = 0
        for image_id in read_ids(folder / "ImageSets" / "Main" / f"{image_set}.txt"):
            xml = folder / "Annotations" / f"{image_id}.xml"
            if not xml.is_file():
                raise BenchmarkDataError(f"{xml} is missing: every image of ImageSets/Main/{image_set}.txt needs one.")
            parsed = parse_voc_xml(xml)
            boxes = lost_boxes(parsed["objects"], remove_hards)
            if remove_hards and not boxes:
                self.num_skipped += 1
                continue
            self.records.append(
                {
                    "image": folder / "JPEGImages" / f"{image_id}.jpg",
                    "id": image_id,
                    "boxes": boxes,
                    "size": parsed["size"],
                }
            )


class VOCSegmentation(BenchmarkDataset):
    """The images of ``ImageSets/Segmentation/<image_set>.txt`` with their ``SegmentationClass`` label
    maps as ``target`` (0 = background, 1..20 the classes, 255 = void), passed through
    `target_transform` when given (e.g. VOC20's `common.reduce_zero_label`)."""

    def __init__(self, root, year: str = "2012", image_set: str = "val", transform=None, target_transform=None):
        super().__init__(transform, target_transform)
        folder = voc_root(root, year)
        for image_id in read_ids(folder / "ImageSets" / "Segmentation" / f"{image_set}.txt"):
            target = folder / "SegmentationClass" / f"{image_id}.png"
            if not target.is_file():
                raise BenchmarkDataError(f"{target} is missing: every image of the segmentation list needs its mask.")
            self.records.append({"image": folder / "JPEGImages" / f"{image_id}.jpg", "id": image_id, "target": target})
