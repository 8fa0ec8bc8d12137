"""The ImageNet-9 backgrounds challenge (Xiao et al. 2020, github.com/MadryLab/backgrounds_challenge).

Layout of the release's ``bg_challenge`` test data: one folder per variation (``original``,
``only_fg``, ``only_bg_b``, ``only_bg_t``, ``no_fg``, ``mixed_same``, ``mixed_rand``,
``mixed_next``), each an imagefolder (``val/<00_dog .. 08_fish>/*.JPEG``; the ``val/`` level may be
left out). Images are 224 x 224 and are used as they are (the challenge's ``ToTensor`` only).
An ImageNet-1k classifier's arg-max class is mapped to the 9 classes with the challenge's
``in_to_in9.json`` (shipped as ``in9_mapping.json``; a class outside the 9 counts as wrong); a
9-class model is read directly. BG-gap = accuracy on mixed_same - accuracy on mixed_rand.
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import BenchmarkDataError, ImageFolder, protocol_file

VARIATIONS = ("original", "only_fg", "only_bg_b", "only_bg_t", "no_fg", "mixed_same", "mixed_rand", "mixed_next")
REQUIRED = ("original", "mixed_same", "mixed_rand")
NUM_CLASSES = 9


def in_to_in9() -> list[int]:
    """ImageNet-1k class index -> ImageNet-9 class (-1: none of the 9)."""
    return json.loads(protocol_file("in9_mapping.json").read_text())["in_to_in9"]


def in9_class_names() -> list[str]:
    return json.loads(protocol_file("in9_mapping.json").read_text())["classes"]


def variation_folders(root) -> dict[str, Path]:
    """``{variation: imagefolder}`` of the variations present under `root` (original, mixed_same and
    mixed_rand are required: BG-gap needs the last two)."""
    root = Path(root)
    found = {}
    for name in VARIATIONS:
        folder = root / name
        if folder.is_dir():
            found[name] = folder / "val" if (folder / "val").is_dir() else folder
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        raise BenchmarkDataError(
            f"{root} lacks the variation folders {missing}; give the release's bg_challenge folder "
            f"(with {', '.join(VARIATIONS)} as present, each holding val/<class>/*.JPEG)."
        )
    return found


def variation_dataset(folder: Path, transform=None) -> ImageFolder:
    dataset = ImageFolder(folder, transform)
    if len(dataset.classes) != NUM_CLASSES:
        raise BenchmarkDataError(
            f"{folder} has {len(dataset.classes)} class folders; ImageNet-9 has 9 (00_dog .. 08_fish)."
        )
    return dataset


def bg_gap(accuracies: dict[str, float]) -> float:
    """BG-gap: accuracy on mixed_same minus accuracy on mixed_rand (the challenge's definition)."""
    return accuracies["mixed_same"] - accuracies["mixed_rand"]
