"""The zero-shot segmentation sets of LaSt-ViT Tab. 4, read and labelled as SCLIP's evaluation
(github.com/wangf3014/SCLIP, ``configs/cfg_*.py`` and ``custom_datasets.py``) reads them, with its
protocol: the image's short side resized to `short_side` (mmseg ``Resize(scale=(2048, S),
keep_ratio=True)``), a sliding window of the model's input size with half of it as stride, the
80 ImageNet prompt templates, the class names (with synonyms) of ``zero_shot/<set>.txt``, and for
the sets with a background class a probability threshold below which a pixel is background.
The metric is mmseg's mIoU at the label maps' original resolution.

Layouts (those of mmseg's dataset converters, which SCLIP uses):
- ``voc20`` / ``voc21``: VOC2012 ``SegmentationClass`` + ``ImageSets/Segmentation/val.txt`` (see `voc`).
  VOC20 drops the background (0 -> ignore, k -> k - 1); VOC21 keeps it as class 0.
- ``context59``: VOC2010 with ``SegmentationClassContext/*.png`` (0 = background, 1..59) and
  ``ImageSets/SegmentationContext/val.txt`` (mmseg's ``pascal_context.py`` converter); background ignored.
- ``ade20k``: ``ADEChallengeData2016/images/validation/*.jpg`` + ``annotations/validation/*.png``
  (0 = "other", ignored; 1..150).
- ``cityscapes``: ``leftImg8bit/val/<city>/*_leftImg8bit.png`` + ``gtFine/val/<city>/*_gtFine_labelTrainIds.png``
  (0..18, 255 ignore; written by cityscapesscripts' ``createTrainIdLabelImgs``); ``*_gtFine_labelIds.png``
  is mapped to train ids here when the train-id files are absent.
- ``coco-stuff``: ``images/val2017/*.jpg`` + ``annotations/val2017/*_labelTrainIds.png`` (0..170, mmseg's
  ``coco_stuff164k.py``), or the raw ``stuffthingmaps`` PNGs (COCO ids - 1) mapped here.
- ``coco-object``: ``images/val2017/*.jpg`` + ``annotations/val2017/*_instanceTrainIds.png`` (0 = background,
  1..80 the things; SCLIP's ``datasets/cvt_coco_object.py``), or the raw ``stuffthingmaps`` mapped here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .common import (
    IGNORE,
    BenchmarkDataError,
    BenchmarkDataset,
    first_existing,
    image_files,
    lookup_table,
    protocol_file,
    read_ids,
    reduce_zero_label,
)
from .voc import voc_root

TEMPLATES_FILE = "zero_shot/imagenet_templates.txt"


@dataclass(frozen=True)
class ZeroShotProtocol:
    """One set's settings in SCLIP's evaluation (``configs/cfg_<set>.py``; defaults from
    ``clip_segmentor.py``: logit scale 40, no threshold, window 224 stride 112)."""

    names_file: str
    short_side: int
    background: bool = False
    logit_scale: float = 40.0
    prob_threshold: float = 0.0
    area_threshold: float | None = None
    stride_fraction: float = 0.5

    def as_dict(self) -> dict:
        return {**asdict(self), "templates": TEMPLATES_FILE}


PROTOCOLS = {
    "voc20": ZeroShotProtocol("zero_shot/voc20.txt", 336),
    "voc21": ZeroShotProtocol("zero_shot/voc21.txt", 336, True, 65.0, 0.1, 0.1),
    "context59": ZeroShotProtocol("zero_shot/context59.txt", 336),
    "ade20k": ZeroShotProtocol("zero_shot/ade20k.txt", 336),
    "cityscapes": ZeroShotProtocol("zero_shot/cityscapes.txt", 560),
    "coco-stuff": ZeroShotProtocol("zero_shot/coco_stuff.txt", 448),
    "coco-object": ZeroShotProtocol("zero_shot/coco_object.txt", 336, True, 50.0, 0.1),
}


def read_class_names(name: str) -> list[list[str]]:
    """The names of each class of a set, one line per class, synonyms separated by ``", "`` (SCLIP's files)."""
    lines = protocol_file(name).read_text().splitlines()
    return [[word.strip() for word in line.split(", ") if word.strip()] for line in lines if line.strip()]


def read_templates() -> list[str]:
    """The 80 ImageNet prompt templates of CLIP (``{}`` = the class name), as SCLIP uses them."""
    return [line for line in protocol_file(TEMPLATES_FILE).read_text().splitlines() if line.strip()]


# Cityscapes label ids -> train ids (cityscapesscripts' labels.py; everything else ignored).
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
# COCO category ids that do not exist among 1..90 (the 80 thing classes are the rest).
COCO_MISSING_THING_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)


def coco_stuff_table() -> np.ndarray:
    """Raw COCO-Stuff maps (category id - 1: things 0..89, stuff 91..181, 255 unlabelled) -> the 171
    classes (80 things in id order, then 91 stuff), everything else ignored."""
    things = [i - 1 for i in range(1, 91) if i not in COCO_MISSING_THING_IDS]
    mapping = {raw: index for index, raw in enumerate(things)}
    mapping.update({raw: 80 + k for k, raw in enumerate(range(91, 182))})
    return lookup_table(mapping)


def coco_object_table() -> np.ndarray:
    """Raw COCO-Stuff maps -> COCO-Object: background 0 (every stuff class), things 1..80, 255 ignored."""
    table = coco_stuff_table()
    return np.where(table == IGNORE, IGNORE, np.where(table < 80, table + 1, 0))


class SegmentationSuite(BenchmarkDataset):
    """One zero-shot segmentation set (`PROTOCOLS`): images with ``target`` label maps in the set's classes."""

    def __init__(self, name: str, root, transform=None, target_transform=None):
        if name not in PROTOCOLS:
            raise BenchmarkDataError(f"unknown segmentation set {name!r}; use one of {sorted(PROTOCOLS)}.")
        super().__init__(transform, target_transform)
        self.name = name
        self.protocol = PROTOCOLS[name]
        self.reduce_zero = name in ("voc20", "context59", "ade20k")
        root = Path(root)
        if not root.is_dir():
            raise BenchmarkDataError(f"{root} is not a folder; see `lastvit-benchmark --help` for the {name} layout.")
        getattr(self, "_" + name.replace("-", "_"))(root)
        if not self.records:
            raise BenchmarkDataError(
                f"no {name} images found under {root}; see `lastvit-benchmark --help` for the layout."
            )

    def read_target(self, record: dict) -> np.ndarray:
        target = super().read_target(record)
        return reduce_zero_label(target) if self.reduce_zero else target

    def _listed(self, folder: Path, list_file: Path, labels: str) -> None:
        for image_id in read_ids(list_file):
            self.records.append(
                {
                    "image": folder / "JPEGImages" / f"{image_id}.jpg",
                    "id": image_id,
                    "target": folder / labels / f"{image_id}.png",
                }
            )

    def _voc20(self, root: Path) -> None:
        folder = voc_root(root, "2012")
        self._listed(folder, folder / "ImageSets" / "Segmentation" / "val.txt", "SegmentationClass")

    _voc21 = _voc20

    def _context59(self, root: Path) -> None:
        folder = voc_root(root, "2010")
        list_file = folder / "ImageSets" / "SegmentationContext" / "val.txt"
        self._listed(folder, list_file, "SegmentationClassContext")

    def _pairs(self, images: Path, labels: Path, label_suffix: str, image_suffix: str = "") -> None:
        for image in image_files(images):
            stem = image.stem[: -len(image_suffix)] if image_suffix else image.stem
            target = labels / f"{stem}{label_suffix}"
            if not target.is_file():
                raise BenchmarkDataError(f"{target} is missing: every image of {images} needs its label map.")
            self.records.append({"image": image, "id": stem, "target": target})

    def _ade20k(self, root: Path) -> None:
        folder = first_existing([root / "ADEChallengeData2016", root], "ADE20K", "expected ADEChallengeData2016/")
        self._pairs(folder / "images" / "validation", folder / "annotations" / "validation", ".png")

    def _cityscapes(self, root: Path) -> None:
        images = root / "leftImg8bit" / "val"
        if not images.is_dir():
            raise BenchmarkDataError(
                f"{images} is missing; Cityscapes needs leftImg8bit/val/<city>/ and gtFine/val/<city>/."
            )
        for city in sorted(p for p in images.iterdir() if p.is_dir()):
            labels = root / "gtFine" / "val" / city.name
            train_ids = any(labels.glob("*_gtFine_labelTrainIds.png"))
            suffix = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"
            start = len(self.records)
            self._pairs(city, labels, suffix, image_suffix="_leftImg8bit")
            if not train_ids:
                table = lookup_table(CITYSCAPES_TRAIN_IDS)
                for record in self.records[start:]:
                    record["target_map"] = table

    def _coco(self, root: Path, converted_suffix: str, table: np.ndarray) -> None:
        images = first_existing(
            [root / "images" / "val2017", root / "val2017"], "val2017 images", "expected images/val2017/"
        )
        labels = first_existing(
            [root / "annotations" / "val2017", root / "stuffthingmaps_trainval2017" / "val2017"],
            "val2017 label maps",
            f"expected annotations/val2017/ with *{converted_suffix} (or the raw stuffthingmaps PNGs)",
        )
        converted = any(labels.glob(f"*{converted_suffix}"))
        self._pairs(images, labels, converted_suffix if converted else ".png")
        if not converted:
            for record in self.records:
                record["target_map"] = table

    def _coco_stuff(self, root: Path) -> None:
        self._coco(root, "_labelTrainIds.png", coco_stuff_table())

    def _coco_object(self, root: Path) -> None:
        self._coco(root, "_instanceTrainIds.png", coco_object_table())
