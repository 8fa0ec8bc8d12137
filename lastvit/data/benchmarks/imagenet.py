"""ImageNet val with boxes (Point-in-Box, LaSt-ViT Tab. 1/3) and class-folder splits (k-NN, linear probe).

Two layouts of the same boxes are read:
- the devkit's per-image XML (``ILSVRC2012_bbox_val_v3.tgz`` -> ``val/ILSVRC2012_val_00000001.xml``;
  Kaggle's ``ILSVRC/Annotations/CLS-LOC/val/``), with the images in ``ILSVRC2012_img_val/``,
  ``ILSVRC/Data/CLS-LOC/val/`` or next to the XML files;
- Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString`` with ``wnid x0 y0 x1 y1`` repeated)
  with the images in ``ILSVRC/Data/CLS-LOC/val/`` (sizes read from the file headers).
Class indices follow ``LOC_synset_mapping.txt`` (the standard 1000-class order: sorted wnids) when
it is there, else the sorted wnids found.

The authors' filter (``evaluate_patch_hit.py``; `lastvit.measure.metrics.localisation.pib_filter`): keep
the images with exactly one box whose area is below 25% of the image. On by default.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

from .common import BenchmarkDataError, BenchmarkDataset, ImageFolder, first_existing, image_files, image_size

LAYOUT = (
    "ImageNet val with boxes: DIR/LOC_val_solution.csv + DIR/ILSVRC/Data/CLS-LOC/val/*.JPEG (Kaggle), or the "
    "devkit's XML in DIR/val/ (or DIR/ILSVRC/Annotations/CLS-LOC/val/) with the images in DIR/ILSVRC2012_img_val/, "
    "DIR/ILSVRC/Data/CLS-LOC/val/ or beside the XML; LOC_synset_mapping.txt in DIR sets the class order"
)
SYNSET_MAPPING = "LOC_synset_mapping.txt"
KAGGLE_CSV = "LOC_val_solution.csv"


def parse_imagenet_xml(path: Path) -> dict:
    """``{"filename", "size": (width, height), "objects": [(wnid, (x0, y0, x1, y1)), ...]}`` of one
    devkit annotation (coordinates as written: integer pixels)."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        coords = tuple(int(float(box.find(tag).text)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((obj.findtext("name").strip(), coords))
    return {
        "filename": root.findtext("filename", path.stem).strip(),
        "size": (int(size.findtext("width")), int(size.findtext("height"))),
        "objects": objects,
    }


def parse_solution_csv(path: Path) -> dict[str, list]:
    """``{image_id: [(wnid, (x0, y0, x1, y1)), ...]}`` from Kaggle's ``LOC_val_solution.csv``."""
    solutions = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            words = row["PredictionString"].split()
            if len(words) % 5:
                raise BenchmarkDataError(
                    f"{path}: the boxes of {row['ImageId']} are not 'wnid x0 y0 x1 y1' groups: {row['PredictionString']!r}."
                )
            solutions[row["ImageId"]] = [
                (words[i], tuple(int(float(v)) for v in words[i + 1 : i + 5])) for i in range(0, len(words), 5)
            ]
    return solutions


def read_synsets(root: Path, found: set[str]) -> list[str]:
    """The class order: ``LOC_synset_mapping.txt`` (first word of each line) in or above `root`, else sorted `found`."""
    for folder in (root, *root.parents[:2]):
        mapping = folder / SYNSET_MAPPING
        if mapping.is_file():
            return [line.split()[0] for line in mapping.read_text().splitlines() if line.strip()]
    return sorted(found)


def _find_image(folder: Path, stem: str) -> Path:
    for suffix in (".JPEG", ".jpeg", ".jpg", ".JPG", ".png"):
        path = folder / f"{stem}{suffix}"
        if path.exists():
            return path
    raise BenchmarkDataError(f"the image of {stem} is missing from {folder}; {LAYOUT}.")


class ImageNetBoxes(BenchmarkDataset):
    """ImageNet val images with their boxes, labels (class of the first box) and original sizes.

    `single_object_filter` (default True): the authors' Point-in-Box filter, exactly one box with
    area < `max_area_ratio` of the image. ``self.num_annotated`` counts the images before it."""

    def __init__(self, root, transform=None, single_object_filter: bool = True, max_area_ratio: float = 0.25):
        super().__init__(transform)
        root = Path(root)
        if not root.is_dir():
            raise BenchmarkDataError(f"{root} is not a folder; {LAYOUT}.")
        entries = self._kaggle(root) if (root / KAGGLE_CSV).is_file() else self._devkit(root)
        synsets = read_synsets(root, {wnid for entry in entries for wnid, _ in entry["objects"]})
        index = {wnid: i for i, wnid in enumerate(synsets)}
        self.synsets = synsets
        self.num_annotated = len(entries)
        entries = [entry for entry in entries if entry["objects"]]
        if single_object_filter and entries:
            from lastvit.measure.metrics.localisation import pib_filter  # the one definition of the filter

            keep = pib_filter([[box for _, box in e["objects"]] for e in entries], [e["size"] for e in entries])
            entries = [entry for entry, kept in zip(entries, keep) if kept]
        for entry in entries:
            wnid = entry["objects"][0][0]
            if wnid not in index:
                raise BenchmarkDataError(f"class {wnid} of {entry['id']} is not in {SYNSET_MAPPING}.")
            self.records.append(
                {
                    "image": entry["image"],
                    "id": entry["id"],
                    "label": index[wnid],
                    "boxes": [box for _, box in entry["objects"]],
                    "size": entry["size"],
                }
            )

    @staticmethod
    def _kaggle(root: Path) -> list[dict]:
        images = first_existing([root / "ILSVRC" / "Data" / "CLS-LOC" / "val", root / "val"], "val images", LAYOUT)
        entries = []
        for image_id, objects in sorted(parse_solution_csv(root / KAGGLE_CSV).items()):
            path = _find_image(images, image_id)
            entries.append({"image": path, "id": image_id, "objects": objects, "size": image_size(path)})
        return entries

    @staticmethod
    def _devkit(root: Path) -> list[dict]:
        candidates = [root / "val", root / "ILSVRC" / "Annotations" / "CLS-LOC" / "val", root / "Annotations", root]
        annotations = next((d for d in candidates if d.is_dir() and any(d.glob("*.xml"))), None)
        if annotations is None:
            raise BenchmarkDataError(f"no box annotations (*.xml or {KAGGLE_CSV}) in {root}; {LAYOUT}.")
        image_dirs = [root / "ILSVRC2012_img_val", root / "ILSVRC" / "Data" / "CLS-LOC" / "val", annotations]
        images = next((d for d in image_dirs if d.is_dir() and image_files(d)), None)
        if images is None:
            raise BenchmarkDataError(f"no val images next to the annotations in {annotations}; {LAYOUT}.")
        entries = []
        for xml in sorted(annotations.glob("*.xml")):
            parsed = parse_imagenet_xml(xml)
            entries.append(
                {
                    "image": _find_image(images, xml.stem),
                    "id": xml.stem,
                    "objects": parsed["objects"],
                    "size": parsed["size"],
                }
            )
        return entries


def class_folder_splits(root, transform=None) -> tuple[ImageFolder, ImageFolder]:
    """``(train, val)`` class-folder splits of `root` (``DIR/train/<class>/*``, ``DIR/val/<class>/*``), for
    k-NN and the linear probe; the two must name the same classes."""
    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise BenchmarkDataError(
                f"{root / split} is missing; k-NN and the linear probe read DIR/train/<class>/* and DIR/val/<class>/* "
                "(ImageNet: the val images sorted into their class folders)."
            )
    train, val = ImageFolder(root / "train", transform), ImageFolder(root / "val", transform)
    if train.classes != val.classes:
        raise BenchmarkDataError(
            f"{root}/train and {root}/val name different classes; give both the same class folders."
        )
    return train, val
