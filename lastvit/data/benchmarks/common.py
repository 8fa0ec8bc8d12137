"""What every benchmark reader shares: the lazy dataset base, file checks, image and label-map
decoding, the package's protocol data files and the batch collation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lastvit.data.loading import DataError

IGNORE = 255
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class BenchmarkDataError(DataError):
    """A benchmark folder that does not have the expected layout; the message names the missing
    file and the layout expected."""


def first_existing(candidates: Sequence[Path], what: str, layout: str) -> Path:
    """The first of `candidates` that exists, else one error naming them and the layout."""
    for path in candidates:
        if path.exists():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise BenchmarkDataError(f"no {what} found (looked for {tried}); {layout}")


def read_ids(path: Path) -> list[str]:
    """The first word of every non-empty line (VOC ImageSets, LOST's COCO20k list, ...)."""
    if not Path(path).is_file():
        raise BenchmarkDataError(f"image list {path} does not exist; give the file that names one image per line.")
    return [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]


def open_rgb(path: Path) -> Image.Image:
    """Decode one image as RGB (grayscale, palette and CMYK JPEGs included)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise BenchmarkDataError(f"cannot read image {path}: {error}. Fix or remove it.") from error


def open_label_map(path: Path) -> np.ndarray:
    """An integer label map ``[H, W]`` from a PNG: palette (VOC) or grayscale indices, never RGB colours."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16"):
                raise BenchmarkDataError(
                    f"{path} is a {image.mode} image; label maps are palette or grayscale PNGs of class indices "
                    "(use the dataset's original annotation files, not a colour rendering)."
                )
            return np.asarray(image, dtype=np.int64)
    except OSError as error:
        raise BenchmarkDataError(f"cannot read label map {path}: {error}.") from error


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels."""
    with Image.open(path) as image:
        return image.size


def protocol_file(name: str) -> Path:
    """A protocol data file shipped with the package (prompt templates, class names, label mappings)."""
    return Path(str(resources.files("lastvit.data.benchmarks") / name))


def lookup_table(mapping: dict[int, int], size: int = 256, default: int = IGNORE) -> np.ndarray:
    """A label lookup table: ``table[raw] = mapping.get(raw, default)`` for raw labels ``0 .. size-1``."""
    table = np.full(size, default, dtype=np.int64)
    for raw, mapped in mapping.items():
        table[raw] = mapped
    return table


def reduce_zero_label(target: np.ndarray) -> np.ndarray:
    """mmseg's ``reduce_zero_label``: label 0 (background / "other") becomes ignore, every other label
    moves down by one, ignore stays ignore."""
    reduced = target - 1
    reduced[(target == 0) | (target == IGNORE)] = IGNORE
    return reduced


class BenchmarkDataset(torch.utils.data.Dataset):
    """A list of lightweight records; `__getitem__` decodes one image and applies `transform`
    (PIL image -> tensor) and `target_transform` (label map -> label map) in the calling worker.
    Subclasses fill ``self.records`` (dicts with ``image`` (a path) and any of ``id``, ``label``,
    ``boxes``, ``size``, ``target`` (a path) and ``target_map`` (a label lookup table))."""

    records: list[dict]

    def __init__(self, transform: Callable | None = None, target_transform: Callable | None = None):
        self.transform = transform
        self.target_transform = target_transform
        self.records = []

    def __len__(self) -> int:
        return len(self.records)

    def limit(self, count: int | None):
        """Keep the first `count` records (all with None); returns self."""
        if count is not None:
            self.records = self.records[: max(0, int(count))]
        return self

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = open_rgb(record["image"])
        sample = {"index": index, "id": record.get("id", Path(record["image"]).stem), "size": image.size}
        for key in ("label", "boxes"):
            if key in record:
                sample[key] = record[key]
        if "target" in record:
            target = self.read_target(record)
            if target.shape != (image.size[1], image.size[0]):
                raise BenchmarkDataError(
                    f"label map {record['target']} is {target.shape[1]}x{target.shape[0]} but its image "
                    f"{record['image']} is {image.size[0]}x{image.size[1]}; they must match pixel for pixel."
                )
            sample["target"] = self.target_transform(target) if self.target_transform else target
        sample["pixel_values"] = self.transform(image) if self.transform else image
        return sample

    def read_target(self, record: dict) -> np.ndarray:
        target = open_label_map(record["target"])
        table = record.get("target_map")
        if table is not None:
            target = table[np.clip(target, 0, len(table) - 1)]
        return target


def collate_samples(samples: list[dict]) -> dict:
    """A batch as a dict of lists; ``pixel_values`` stacked into one tensor when every image has the
    same shape (else a list, e.g. full-resolution CorLoc images)."""
    batch = {key: [sample[key] for sample in samples] for key in samples[0]}
    pixels = batch["pixel_values"]
    if all(isinstance(p, torch.Tensor) for p in pixels) and len({tuple(p.shape) for p in pixels}) == 1:
        batch["pixel_values"] = torch.stack(pixels)
    return batch


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class ImageFolder(BenchmarkDataset):
    """One subfolder per class (sorted names = class indices 0..C-1), images inside: an ImageNet
    ``train/`` or ``val/`` split, or one ImageNet-9 variation."""

    def __init__(self, root, transform=None):
        super().__init__(transform)
        root = Path(root)
        if not root.is_dir():
            raise BenchmarkDataError(f"{root} is not a folder; give a folder with one subfolder of images per class.")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.classes:
            raise BenchmarkDataError(f"{root} has no class subfolders; put the images of class C in {root}/C/.")
        for label, name in enumerate(self.classes):
            self.records += [{"image": path, "label": label} for path in image_files(root / name)]
        if not self.records:
            raise BenchmarkDataError(f"the class folders of {root} hold no images ({', '.join(IMAGE_EXTENSIONS)}).")

    def limit(self, count: int | None):
        """Keep `count` records spread evenly over the class-sorted list (so every class can appear), not
        the first `count` (all of the first class); returns self."""
        if count is not None and count < len(self.records):
            picks = np.linspace(0, len(self.records) - 1, max(0, int(count))).round().astype(int)
            self.records = [self.records[i] for i in picks]
        return self
