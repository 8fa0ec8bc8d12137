"""The offline "scenes" benchmark: real photo cut-outs pasted onto real backgrounds.

Each image is one object cut-out with an alpha mask, pasted at a random scale, position and
horizontal flip onto a random crop of a real photo or texture. The alpha mask gives the exact
box and mask for free. The test split uses held-out object instances (~25% per class) and
held-out backgrounds, so it measures generalisation, not memorisation. Everything is generated
from a seed at run time; nothing is downloaded and no image is committed.

Default sources are Debian packages (install them with :data:`INSTALL_COMMAND`):

- objects: photo cut-outs from ``tuxpaint-stamps-default`` in 7 natural classes
  (:data:`SCENE_CLASSES`; the stamp folders of each class are in :data:`STAMP_FOLDERS`);
- backgrounds: photos from ``tuxpaint-data`` (templates) and ``mate-backgrounds`` (nature), and
  real textures from ``gimp-data`` (``.pat`` files, tiled);
- the Fashion-MNIST variant pastes items from ``dataset-fashion-mnist`` at half opacity.

Your own cut-outs work too: ``objects_dir`` holds one sub-folder per class with RGBA images (the
class is the sub-folder's name), ``backgrounds_dir`` any images. From the command line::

    python -m lastvit.data.scenes --num-train 20000 --num-test 2000 --output data/scenes
    python -m lastvit.data.scenes --objects my_cutouts/ --backgrounds my_photos/ --output data/mine

:func:`build_scenes` returns a ``datasets.DatasetDict`` (``train``/``test``) with columns
``image`` (RGB), ``label`` (``ClassLabel``), ``bbox`` (``[x, y, w, h]`` in pixels, float32: the
mask's bounding box), ``mask`` (a mode-"L" PNG with values 0/255) and ``object_id`` /
``background_id`` (the source of each, so the split can be audited). It is consumed exactly
like a Hub dataset. :func:`generate_scenes` gives numpy arrays without ``datasets``.

This file is not part of the model's remote code: it needs numpy and Pillow (``datasets`` for
the ``DatasetDict`` builders) and does not import the model.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import os
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from ..files import write_folder

DEBIAN_PACKAGES = (
    "tuxpaint-stamps-default",
    "tuxpaint-data",
    "mate-backgrounds",
    "gimp-data",
    "dataset-fashion-mnist",
)
INSTALL_COMMAND = "apt-get update && apt-get install -y --no-install-recommends " + " ".join(DEBIAN_PACKAGES)
"""The one command that installs every default source; the README's set-up uses the same text."""

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
TUXPAINT_TEMPLATES = Path("/usr/share/tuxpaint/templates")
MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")
GIMP_PATTERNS = Path("/usr/share/gimp/2.0/patterns")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

SCENE_CLASSES = ("mammal", "bird", "small_animal", "fruit_veg", "plant", "vehicle", "artifact")
STAMP_FOLDERS = {
    "mammal": ("animals/mammals", "animals/marsupials"),
    "bird": ("animals/birds",),
    "small_animal": ("animals/fish", "animals/shellfish", "animals/insects", "animals/amphibians", "animals/lizards"),
    "fruit_veg": ("food/fruit", "food/vegetables", "food/nuts"),
    "plant": ("plants",),
    "vehicle": ("vehicles", "military/vehicles"),
    "artifact": ("household", "hobbies", "clothes", "medical", "sports"),
}
"""Tux Paint stamp folders (searched recursively) of each class. Left out: people, symbols,
seasonal, town, space, dinosaurs, and inside the kept folders cartoons, toys (a teddy bear is
not a mammal) and the ``*_mirror`` copies."""
EXCLUDED_STAMP_FOLDER_NAMES = frozenset({"cartoon", "toys"})
MIN_OPAQUE_FRACTION = 0.05
"""Cut-outs whose opaque pixels fill less of their box are skipped (a clear glass, thin goal
posts): pasted small, they would leave an almost empty box."""

GIMP_PATTERN_FOLDERS = ("Animal", "Fabric", "Food", "Paper", "Plant", "Sky", "Stone", "Water", "Wood")
"""GIMP's real textures; its ``Legacy`` folder (synthetic stripes, cubes, grids) is left out."""
BACKGROUND_SOURCES = ("tuxpaint", "mate", "gimp", "skimage", "sklearn")
DEFAULT_BACKGROUND_SOURCES = ("tuxpaint", "mate", "gimp")
"""The Debian ones. ``skimage`` (brick, grass, gravel) and ``sklearn`` (china, flower) are
opt-in, so that a seed gives the same data whichever Python packages are installed."""

FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
VARIANTS = ("scenes", "fashion")
DEFAULT_IMAGE_SIZE = {"scenes": 64, "fashion": 48}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MAX_OBJECT_FRACTION = 0.45
"""Default largest object side, as a share of the image side: larger objects make Point-in-Box trivial."""
DEFAULT_SCALE_RANGE = (0.2, MAX_OBJECT_FRACTION)
ALPHA_THRESHOLD = 128
"""A pixel belongs to the object (mask, box) where its resized alpha is at least this (of 255)."""
SPLITS = ("train", "test")


class ScenesSourceError(FileNotFoundError):
    """A source of images is missing or unusable; the message says how to fix it."""


def missing_debian_files_message(missing: Sequence[Path | str]) -> str:
    listed = ", ".join(str(p) for p in missing)
    return (
        f"The scenes benchmark needs Debian image files that are missing here ({listed}). "
        f"Install them with:\n    {INSTALL_COMMAND}"
    )


def _require_debian(paths: Sequence[Path]) -> None:
    missing = [path for path in paths if not path.exists()]
    if missing:
        raise ScenesSourceError(missing_debian_files_message(missing))


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def read_gimp_pattern(path: str | os.PathLike) -> Image.Image:
    """Read a GIMP ``.pat`` texture as an RGB image.

    Format: a big-endian header of five uint32 (header size, version, width, height, bytes per
    pixel), the magic ``GPAT``, a name, then ``height * width * bpp`` bytes of pixels from offset
    ``header size``. 1 = grey, 2 = grey+alpha, 3 = RGB, 4 = RGBA; alpha is composited onto grey.
    """
    data = Path(path).read_bytes()
    if len(data) < 24 or data[20:24] != b"GPAT":
        raise ValueError(f"{path} is not a GIMP pattern (no 'GPAT' magic at byte 20).")
    header_size, _version, width, height, bpp = struct.unpack(">5I", data[:20])
    if bpp not in (1, 2, 3, 4) or width * height == 0 or len(data) < header_size + width * height * bpp:
        raise ValueError(f"{path}: truncated or unsupported GIMP pattern ({width}x{height}, {bpp} bytes per pixel).")
    pixels = np.frombuffer(data, np.uint8, width * height * bpp, header_size).reshape(height, width, bpp)
    image = Image.fromarray(pixels[..., 0] if bpp == 1 else pixels, {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[bpp])
    if bpp in (2, 4):
        image = Image.alpha_composite(Image.new("RGBA", image.size, (128, 128, 128, 255)), image.convert("RGBA"))
    return image.convert("RGB")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an unsigned-byte idx file (``.gz`` or plain), as (Fashion-)MNIST ships: [N, H, W] or [N]."""
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an unsigned-byte idx file.")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, math.prod(shape), 4 + 4 * ndim).reshape(shape)


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=4096)
def _load_cutout(path: str, _mtime: int, _size: int) -> Image.Image | None:
    with Image.open(path) as opened:
        if opened.mode not in ("RGBA", "LA", "PA") and "transparency" not in opened.info:
            return None
        image = opened.convert("RGBA")
    ys, xs = np.nonzero(np.asarray(image)[..., 3] >= ALPHA_THRESHOLD)
    if len(xs) == 0:
        return None
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    if len(xs) < MIN_OPAQUE_FRACTION * (box[2] - box[0]) * (box[3] - box[1]):
        return None
    image = image.crop(box)
    image.thumbnail((512, 512), Image.Resampling.LANCZOS)  # scenes need far less; keeps memory small
    return image.convert("RGBa")  # premultiplied: resizing never bleeds hidden colours into the edges


def load_cutout(path: str | os.PathLike) -> Image.Image | None:
    """A cut-out cropped to its opaque (alpha >= 128) box, as premultiplied "RGBa"; None when it
    has no alpha channel or too few opaque pixels. Cached by path, mtime and size."""
    return _load_cutout(*_file_key(Path(path)))


@lru_cache(maxsize=1024)
def _load_background(path: str, _mtime: int, _size: int) -> Image.Image:
    if path.endswith(".pat"):
        return read_gimp_pattern(path)
    with Image.open(path) as opened:
        opened.draft("RGB", (1024, 1024))  # JPEGs decode directly at a reduced scale
        image = opened.convert("RGB")
    if min(image.size) > 1024:
        scale = 1024 / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return image


def load_background(path: str | os.PathLike) -> Image.Image:
    """A background as RGB, its short side at most 1024 px; ``.pat`` files are GIMP patterns. Cached."""
    return _load_background(*_file_key(Path(path)))


def _images_under(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


# --------------------------------------------------------------------------------------------
# Sources and splits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Background:
    name: str
    image: Image.Image
    group: str  # backgrounds are held out per group, so the test split has some of each source
    tile: bool = False  # textures are tiled at their native scale instead of resized


class ObjectPool:
    """Object instances: ``names``, ``labels``, and ``image(i)``, instance ``i`` as premultiplied RGBa."""

    def __init__(self, names: Sequence[str], labels: Sequence[int], images: Callable[[int], Image.Image]):
        self.names = list(names)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._images = images

    def __len__(self) -> int:
        return len(self.names)

    def image(self, index: int) -> Image.Image:
        return self._images(index)

    def subset(self, indices: Sequence[int]) -> ObjectPool:
        indices = list(indices)
        return ObjectPool([self.names[i] for i in indices], self.labels[indices], lambda i: self._images(indices[i]))


@dataclass
class SceneSources:
    """What one split is drawn from."""

    class_names: tuple[str, ...]
    objects: ObjectPool
    backgrounds: list[Background]
    opacity: float = 1.0  # 0.5 for Fashion-MNIST ("half contrast")
    description: str = ""

    def instances_per_class(self) -> dict[str, int]:
        counts = np.bincount(self.objects.labels, minlength=len(self.class_names))
        return dict(zip(self.class_names, counts.tolist()))


def discover_stamps(root: str | os.PathLike | None = None) -> list[tuple[Path, int]]:
    """The Tux Paint stamps of each class (see :data:`STAMP_FOLDERS`), as ``(path, class index)``."""
    root = TUXPAINT_STAMPS if root is None else Path(root)
    _require_debian([root])
    found = []
    for label, name in enumerate(SCENE_CLASSES):
        for folder in STAMP_FOLDERS[name]:
            for path in _images_under(root / folder, (".png",)):
                excluded = EXCLUDED_STAMP_FOLDER_NAMES.intersection(path.relative_to(root).parts[:-1])
                if not excluded and not path.stem.endswith("_mirror"):
                    found.append((path, label))
    return found


def _cutout_pool(entries: Sequence[tuple[Path, int]], root: Path) -> ObjectPool:
    names, labels, images = [], [], []
    for path, label in entries:
        image = load_cutout(path)
        if image is not None:
            names.append(path.relative_to(root).as_posix())
            labels.append(label)
            images.append(image)
    return ObjectPool(names, labels, images.__getitem__)


def load_object_dir(objects_dir: str | os.PathLike) -> tuple[tuple[str, ...], ObjectPool]:
    """Your own cut-outs: one sub-folder per class (its name is the class), RGBA images inside."""
    root = Path(objects_dir)
    if not root.is_dir():
        raise ScenesSourceError(f"--objects {root}: no such folder.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise ScenesSourceError(
            f"--objects {root}: expected one sub-folder per class (at least 2 classes) holding RGBA cut-outs; "
            f"found {len(class_dirs)} sub-folder(s)."
        )
    entries = []
    for label, class_dir in enumerate(class_dirs):
        files = _images_under(class_dir)
        if len(files) < 2:
            raise ScenesSourceError(
                f"--objects {root}: class '{class_dir.name}' has {len(files)} image(s); every class needs at least "
                "2 cut-outs so that one can be held out for the test split."
            )
        for path in files:
            if load_cutout(path) is None:
                raise ScenesSourceError(
                    f"--objects: {path} is not a usable cut-out: it needs an alpha channel (RGBA) whose opaque "
                    f"pixels (alpha >= {ALPHA_THRESHOLD}) fill at least {MIN_OPAQUE_FRACTION:.0%} of their box."
                )
            entries.append((path, label))
    return tuple(p.name for p in class_dirs), _cutout_pool(entries, root)


def _python_package_backgrounds(source: str) -> list[Background]:
    if source == "skimage":
        try:
            from skimage import data
        except ImportError as error:
            raise ScenesSourceError(
                "background source 'skimage' needs scikit-image: pip install scikit-image"
            ) from error
        arrays = {name: getattr(data, name)() for name in ("brick", "grass", "gravel")}
    else:
        try:
            from sklearn.datasets import load_sample_image
        except ImportError as error:
            raise ScenesSourceError(
                "background source 'sklearn' needs scikit-learn: pip install scikit-learn"
            ) from error
        arrays = {name: load_sample_image(f"{name}.jpg") for name in ("china", "flower")}
    return [Background(f"{source}/{name}", Image.fromarray(a).convert("RGB"), source) for name, a in arrays.items()]


def _debian_backgrounds(source: str) -> list[Background]:
    if source == "gimp":
        root, tile = GIMP_PATTERNS, True
        paths = [p for folder in GIMP_PATTERN_FOLDERS for p in sorted((root / folder).glob("*.pat"))]
    else:
        root, tile = {"tuxpaint": TUXPAINT_TEMPLATES, "mate": MATE_NATURE}[source], False
        paths = _images_under(root)
    if not paths:
        raise ScenesSourceError(missing_debian_files_message([f"{root} (no images)"]))
    return [Background(f"{source}/{p.relative_to(root).as_posix()}", load_background(p), source, tile) for p in paths]


def load_backgrounds(
    backgrounds_dir: str | os.PathLike | None = None, sources: Sequence[str] = DEFAULT_BACKGROUND_SOURCES
) -> list[Background]:
    """Every image in ``backgrounds_dir`` (recursively; ``.pat`` textures are tiled; held out per
    top-level sub-folder), or else the named ``sources`` (see :data:`BACKGROUND_SOURCES`)."""
    if backgrounds_dir is None:
        unknown = set(sources) - set(BACKGROUND_SOURCES)
        if unknown or not sources:
            raise ValueError(f"Unknown background sources {sorted(unknown)}; choose from {BACKGROUND_SOURCES}.")
        folders = {"tuxpaint": TUXPAINT_TEMPLATES, "mate": MATE_NATURE, "gimp": GIMP_PATTERNS}
        _require_debian([folders[s] for s in sources if s in folders])
        return [
            background
            for source in sources
            for background in (
                _debian_backgrounds(source) if source in folders else _python_package_backgrounds(source)
            )
        ]
    root = Path(backgrounds_dir)
    if not root.is_dir():
        raise ScenesSourceError(f"--backgrounds {root}: no such folder.")
    backgrounds = []
    for path in _images_under(root, IMAGE_EXTENSIONS + (".pat",)):
        relative = path.relative_to(root)
        try:
            image = load_background(path)
        except (OSError, ValueError) as error:
            raise ScenesSourceError(f"--backgrounds: cannot read {path}: {error}") from error
        group = relative.parts[0] if len(relative.parts) > 1 else ""
        backgrounds.append(Background(relative.as_posix(), image, group, tile=path.suffix == ".pat"))
    if len(backgrounds) < 2:
        raise ScenesSourceError(
            f"--backgrounds {root}: found {len(backgrounds)} image(s); at least 2 are needed so that one can be "
            "held out for the test split."
        )
    return backgrounds


def _held_out(count: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which of ``count`` members go to test: ``round(fraction * count)``, clipped to [1, count - 1]."""
    if count < 2:
        return np.zeros(0, dtype=np.int64)
    return np.sort(rng.permutation(count)[: min(count - 1, max(1, round(fraction * count)))])


def split_objects(objects: ObjectPool, class_names: Sequence[str], seed: int, fraction: float) -> dict[str, list[int]]:
    """Instance indices of each split; ``fraction`` of every class (at least one) goes to test."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    test = []
    for label, name in enumerate(class_names):
        members = np.flatnonzero(objects.labels == label)
        if len(members) < 2:
            raise ScenesSourceError(f"class '{name}' has {len(members)} object instance(s); at least 2 are needed.")
        test += members[_held_out(len(members), fraction, rng)].tolist()
    test = set(test)
    return {"train": [i for i in range(len(objects)) if i not in test], "test": sorted(test)}


def split_backgrounds(backgrounds: Sequence[Background], seed: int, fraction: float) -> dict[str, list[int]]:
    """Background indices of each split; ``fraction`` of every group (at least one) goes to test."""
    if len(backgrounds) < 2:
        raise ScenesSourceError(f"{len(backgrounds)} background(s); at least 2 are needed to hold one out.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    groups: dict[str, list[int]] = {}
    for index, background in enumerate(backgrounds):
        groups.setdefault(background.group, []).append(index)
    if all(len(members) < 2 for members in groups.values()):  # one background per group: pool them
        groups = {"": list(range(len(backgrounds)))}
    test = set()
    for _, members in sorted(groups.items()):
        test.update(members[i] for i in _held_out(len(members), fraction, rng))
    return {"train": [i for i in range(len(backgrounds)) if i not in test], "test": sorted(test)}


@lru_cache(maxsize=2)
def _fashion_arrays(root: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        split: (
            read_idx(Path(root) / f"{prefix}-images-idx3-ubyte.gz"),
            read_idx(Path(root) / f"{prefix}-labels-idx1-ubyte.gz"),
        )
        for split, prefix in (("train", "train"), ("test", "t10k"))
    }


def _fashion_item(item: np.ndarray) -> Image.Image:
    """A Fashion-MNIST item as a premultiplied RGBa cut-out: grey = the item, opaque where nonzero."""
    ys, xs = np.nonzero(item)
    item = item[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return Image.fromarray(np.dstack([item, item, item, np.where(item > 0, 255, 0).astype(np.uint8)]), "RGBa")


def scene_splits(
    variant: str = "scenes",
    seed: int = 0,
    test_fraction: float = 0.25,
    objects_dir: str | os.PathLike | None = None,
    backgrounds_dir: str | os.PathLike | None = None,
    background_sources: Sequence[str] = DEFAULT_BACKGROUND_SOURCES,
) -> dict[str, SceneSources]:
    """The sources of the ``train`` and ``test`` splits: disjoint object instances and backgrounds.

    ``scenes``: ``test_fraction`` of the instances of every class and of the backgrounds of every
    source are held out for test (at least one each), chosen by ``seed``. ``fashion``: items of
    the train file for train, of the t10k file for test; backgrounds held out the same way.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose from {VARIANTS}.")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if variant == "fashion":
        if objects_dir is not None:
            raise ValueError("objects_dir applies to the scenes variant; the fashion variant's objects are its items.")
        files = [
            FASHION_MNIST / f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
        ]
        _require_debian(files)
    backgrounds = load_backgrounds(backgrounds_dir, background_sources)
    background_split = split_backgrounds(backgrounds, seed, test_fraction)
    where = f"backgrounds: {backgrounds_dir or ', '.join(background_sources)}"
    result = {}
    if variant == "fashion":
        for split, (images, labels) in _fashion_arrays(str(FASHION_MNIST)).items():
            keep = np.flatnonzero(images.reshape(len(images), -1).max(axis=1) > 0)  # skip blank items, if any
            pool = ObjectPool(
                [f"fashion-mnist/{split}/{i}" for i in keep],
                labels[keep],
                lambda i, a=images, k=keep: _fashion_item(a[k[i]]),
            )
            chosen = [backgrounds[i] for i in background_split[split]]
            result[split] = SceneSources(
                FASHION_MNIST_CLASSES, pool, chosen, 0.5, f"objects: {FASHION_MNIST}; {where}"
            )
        return result
    if objects_dir is None:
        class_names, objects = SCENE_CLASSES, _cutout_pool(discover_stamps(), TUXPAINT_STAMPS)
    else:
        class_names, objects = load_object_dir(objects_dir)
    object_split = split_objects(objects, class_names, seed, test_fraction)
    description = f"objects: {objects_dir or TUXPAINT_STAMPS}; {where}"
    for split in SPLITS:
        chosen = [backgrounds[i] for i in background_split[split]]
        result[split] = SceneSources(class_names, objects.subset(object_split[split]), chosen, 1.0, description)
    return result


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


class Scene(NamedTuple):
    image: np.ndarray  # uint8 [S, S, 3]
    mask: np.ndarray  # bool [S, S]
    bbox: np.ndarray  # float32 [4]: x, y, w, h in pixels, the mask's bounding box
    label: int
    object_id: str
    background_id: str


class SceneArrays(NamedTuple):
    images: np.ndarray  # uint8 [N, S, S, 3]
    masks: np.ndarray  # bool [N, S, S]
    bboxes: np.ndarray  # float32 [N, 4]
    labels: np.ndarray  # int64 [N]
    object_ids: list[str]
    background_ids: list[str]


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """``[x, y, w, h]`` (float32) of the smallest pixel-aligned box holding every True pixel."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1], dtype=np.float32)


class SceneGenerator:
    """Draws the scenes of one split.

    Sources are prepared once for the image size (photos cut down to a short side of 4x the image
    side, textures tiled to it; cut-outs to 2x the largest object side), so a scene costs two
    small resizes and one composite:

    1. a square crop of a random background, its side log-uniform between the image side and the
       background's short side, resized to ``image_size`` and flipped at random;
    2. ``clutter`` fragments: objects of *other* classes at object scale, cut by one straight line
       to keep 40-70% of them, flipped and pasted anywhere;
    3. an object of a uniformly drawn class, its longer side uniform in ``scale_range`` times the
       image side, flipped at random, at a uniform position fully inside the image.

    The object is pasted last, and only where its resized alpha is >= 128, so its mask (those
    pixels) and its box are exact: no pixel outside the mask comes from the object.
    """

    def __init__(
        self,
        sources: SceneSources,
        image_size: int = 64,
        clutter: int = 0,
        scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
    ):
        low, high = scale_range
        if not 0 < low <= high <= 1:
            raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, got {scale_range}.")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}.")
        if clutter < 0:
            raise ValueError(f"clutter must be >= 0, got {clutter}.")
        if not sources.backgrounds or not len(sources.objects):
            raise ScenesSourceError("no backgrounds or no object instances to draw from.")
        self.sources, self.image_size, self.clutter = sources, image_size, clutter
        self.max_side = max(2, math.floor(high * image_size))
        self.min_side = min(self.max_side, max(2, round(low * image_size)))
        self._backgrounds = [self._prepare_background(b) for b in sources.backgrounds]
        self._by_class = [np.flatnonzero(sources.objects.labels == c) for c in range(len(sources.class_names))]
        self._classes = np.array([c for c, members in enumerate(self._by_class) if len(members)])
        self._objects: dict[int, Image.Image] = {}

    def _prepare_background(self, background: Background) -> Image.Image:
        target, image = 4 * self.image_size, background.image
        if background.tile:
            tiled = Image.new(
                "RGB", (image.width * math.ceil(target / image.width), image.height * math.ceil(target / image.height))
            )
            for y in range(0, tiled.height, image.height):
                for x in range(0, tiled.width, image.width):
                    tiled.paste(image, (x, y))
            return tiled
        if min(image.size) > target:
            scale = target / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        return image

    def _object(self, index: int) -> Image.Image:
        """Instance ``index`` at working scale (longer side at most 2x the largest object side)."""
        image = self._objects.get(index)
        if image is None:
            image = self.sources.objects.image(index)
            if max(image.size) > 2 * self.max_side:
                scale = 2 * self.max_side / max(image.size)
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, Image.Resampling.BOX)
            if len(self._objects) < 100_000:
                self._objects[index] = image
        return image

    def _object_size(self, image: Image.Image, rng: np.random.Generator) -> tuple[int, int]:
        longer = int(rng.integers(self.min_side, self.max_side + 1))
        scale = longer / max(image.size)
        return max(1, min(longer, round(image.width * scale))), max(1, min(longer, round(image.height * scale)))

    def _background(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        index = int(rng.integers(len(self._backgrounds)))
        image, size = self._backgrounds[index], self.image_size
        short = min(image.size)
        crop = round(math.exp(rng.uniform(math.log(min(size, short)), math.log(short))))
        x0, y0 = int(rng.integers(image.width - crop + 1)), int(rng.integers(image.height - crop + 1))
        canvas = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop, y0 + crop)))
        if rng.random() < 0.5:
            canvas = canvas[:, ::-1]
        return canvas.astype(np.float32), self.sources.backgrounds[index].name

    def _paste(self, canvas: np.ndarray, rgba: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
        """Composite premultiplied ``rgba`` (flipped at random) at a random position that keeps it
        inside; draws only its opaque pixels (alpha >= 128), returned as a mask with (x, y)."""
        if rng.random() < 0.5:
            rgba = rgba[:, ::-1]
        h, w = rgba.shape[:2]
        x, y = int(rng.integers(self.image_size - w + 1)), int(rng.integers(self.image_size - h + 1))
        alpha = rgba[..., 3:].astype(np.float32) / 255.0
        inside = alpha >= ALPHA_THRESHOLD / 255.0
        opacity = self.sources.opacity
        region = canvas[y : y + h, x : x + w]
        region *= 1.0 - opacity * alpha * inside
        region += opacity * inside * rgba[..., :3]
        return inside[..., 0], x, y

    def _fragment(self, canvas: np.ndarray, label: int, rng: np.random.Generator) -> None:
        others = self._classes[self._classes != label]
        if len(others) == 0:
            return
        for _ in range(10):
            members = self._by_class[int(rng.choice(others))]
            image = self._object(int(members[rng.integers(len(members))]))
            w, h = self._object_size(image, rng)
            keep, from_start = rng.uniform(0.4, 0.7), rng.random() < 0.5
            if rng.random() < 0.5:  # vertical cut: keep the left or the right part
                cut = keep * image.width
                left = 0.0 if from_start else image.width - cut
                box, w = (left, 0.0, left + cut, float(image.height)), max(1, round(keep * w))
            else:  # horizontal cut: keep the top or the bottom part
                cut = keep * image.height
                top = 0.0 if from_start else image.height - cut
                box, h = (0.0, top, float(image.width), top + cut), max(1, round(keep * h))
            piece = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR, box=box))
            if (piece[..., 3] >= ALPHA_THRESHOLD).mean() >= 0.2:  # else a mostly transparent part: cut again
                self._paste(canvas, piece, rng)
                return

    def scene(self, rng: np.random.Generator) -> Scene:
        canvas, background_id = self._background(rng)
        label = int(self._classes[rng.integers(len(self._classes))])
        for _ in range(self.clutter):
            self._fragment(canvas, label, rng)
        members = self._by_class[label]
        for _ in range(100):
            index = int(members[rng.integers(len(members))])
            image = self._object(index)
            rgba = np.asarray(image.resize(self._object_size(image, rng), Image.Resampling.BILINEAR))
            if (rgba[..., 3] >= ALPHA_THRESHOLD).any():
                break
        else:
            name = self.sources.class_names[label]
            raise ScenesSourceError(f"class '{name}': its cut-outs vanish at {self.min_side}-{self.max_side} px.")
        inside, x, y = self._paste(canvas, rgba, rng)
        mask = np.zeros((self.image_size, self.image_size), dtype=bool)
        mask[y : y + inside.shape[0], x : x + inside.shape[1]] = inside
        image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
        return Scene(image, mask, mask_to_box(mask), label, self.sources.objects.names[index], background_id)


def iter_scenes(
    sources: SceneSources,
    num: int,
    split: str,
    seed: int = 0,
    image_size: int = 64,
    clutter: int = 0,
    scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
) -> Iterator[Scene]:
    """``num`` scenes of ``split`` drawn from that split's ``sources`` (see :func:`scene_splits`).

    Deterministic: the same arguments give the same scenes, and the first ``n`` scenes do not
    depend on ``num``."""
    generator = SceneGenerator(sources, image_size, clutter, scale_range)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2, SPLITS.index(split)]))
    for _ in range(num):
        yield generator.scene(rng)


def generate_scenes(
    num: int,
    split: str = "train",
    *,
    variant: str = "scenes",
    image_size: int | None = None,
    seed: int = 0,
    clutter: int = 0,
    objects_dir: str | os.PathLike | None = None,
    backgrounds_dir: str | os.PathLike | None = None,
    background_sources: Sequence[str] = DEFAULT_BACKGROUND_SOURCES,
    test_fraction: float = 0.25,
    scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
    opacity: float | None = None,
) -> SceneArrays:
    """One split as numpy arrays, without ``datasets``; the same scenes as :func:`build_scenes`."""
    sources = scene_splits(variant, seed, test_fraction, objects_dir, backgrounds_dir, background_sources)[split]
    if opacity is not None:
        sources.opacity = opacity
    size = image_size or DEFAULT_IMAGE_SIZE[variant]
    scenes = list(iter_scenes(sources, num, split, seed, size, clutter, scale_range))
    if not scenes:
        empty = np.zeros((0, size, size), np.uint8)
        return SceneArrays(
            empty[..., None].repeat(3, -1),
            empty.astype(bool),
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.int64),
            [],
            [],
        )
    return SceneArrays(
        np.stack([s.image for s in scenes]),
        np.stack([s.mask for s in scenes]),
        np.stack([s.bbox for s in scenes]),
        np.array([s.label for s in scenes], dtype=np.int64),
        [s.object_id for s in scenes],
        [s.background_id for s in scenes],
    )


# --------------------------------------------------------------------------------------------
# datasets integration
# --------------------------------------------------------------------------------------------


def _datasets():
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            "Building a DatasetDict needs the `datasets` package: pip install datasets (or pip install -e "
            '".[train]"). generate_scenes() gives numpy arrays without it.'
        ) from error
    return datasets


def scene_features(class_names: Sequence[str]):
    """The ``datasets.Features`` of a scenes split."""
    datasets = _datasets()
    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(class_names)),
            "bbox": datasets.List(datasets.Value("float32"), length=4),
            "mask": datasets.Image(),
            "object_id": datasets.Value("string"),
            "background_id": datasets.Value("string"),
        }
    )


def _png(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def _progress(iterable, total: int, description: str, enabled: bool):
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(iterable, total=total, desc=description, unit="img")
        except ImportError:
            pass
    return iterable


def build_scenes(
    num_train: int,
    num_test: int,
    image_size: int | None = None,
    seed: int = 0,
    clutter: int = 0,
    objects_dir: str | os.PathLike | None = None,
    backgrounds_dir: str | os.PathLike | None = None,
    *,
    variant: str = "scenes",
    background_sources: Sequence[str] = DEFAULT_BACKGROUND_SOURCES,
    test_fraction: float = 0.25,
    scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
    opacity: float | None = None,
    progress: bool = False,
):
    """The scenes benchmark as a ``datasets.DatasetDict`` with ``train`` and ``test`` splits.

    Args:
        num_train, num_test: images per split.
        image_size: side of the square images, in pixels (default 64; 48 for ``variant="fashion"``).
        seed: fixes everything: the held-out instances and backgrounds, and every scene.
        clutter: fragments of objects of other classes pasted under the object, per image.
        objects_dir: your own cut-outs, one sub-folder per class (default: the Tux Paint stamps).
        backgrounds_dir: your own backgrounds, a folder of images (default: ``background_sources``).
        variant: ``"scenes"`` or ``"fashion"`` (see :func:`build_fashion_mnist_scenes`).
        background_sources: among :data:`BACKGROUND_SOURCES`, when ``backgrounds_dir`` is None.
        test_fraction: share of object instances (per class) and backgrounds held out for test.
        scale_range: the object's longer side as a share of the image side (default 0.2-0.45).
        opacity: the object's opacity; None keeps the variant's (1.0 for scenes, 0.5 for fashion).
        progress: show progress bars.

    Columns: ``image``, ``label`` (ClassLabel), ``bbox`` ([x, y, w, h], float32, the mask's box),
    ``mask`` (mode "L", 0/255), ``object_id``, ``background_id``.
    """
    datasets = _datasets()
    if num_train < 0 or num_test < 0:
        raise ValueError(f"num_train and num_test must be >= 0, got {num_train} and {num_test}.")
    splits = scene_splits(variant, seed, test_fraction, objects_dir, backgrounds_dir, background_sources)
    image_size = image_size or DEFAULT_IMAGE_SIZE[variant]
    features = scene_features(splits["train"].class_names)
    parameters = {
        "variant": variant,
        "num_train": num_train,
        "num_test": num_test,
        "image_size": image_size,
        "seed": seed,
        "clutter": clutter,
        "objects_dir": objects_dir and str(objects_dir),
        "backgrounds_dir": backgrounds_dir and str(backgrounds_dir),
        "background_sources": list(background_sources),
        "test_fraction": test_fraction,
        "scale_range": list(scale_range),
        "opacity": opacity,
    }
    result = {}
    for split, count in zip(SPLITS, (num_train, num_test)):
        sources = splits[split]
        if opacity is not None:
            sources.opacity = opacity
        columns = {name: [] for name in features}
        scenes = iter_scenes(sources, count, split, seed, image_size, clutter, scale_range)
        for scene in _progress(scenes, count, f"{split} scenes", progress):
            columns["image"].append(_png(scene.image))
            columns["label"].append(scene.label)
            columns["bbox"].append(scene.bbox.tolist())
            columns["mask"].append(_png(scene.mask.astype(np.uint8) * 255))
            columns["object_id"].append(scene.object_id)
            columns["background_id"].append(scene.background_id)
        description = (
            f"LaSt-ViT {variant} benchmark, {split} split ({sources.description}): {len(sources.objects)} object "
            f"instances and {len(sources.backgrounds)} backgrounds. Generated by lastvit.data.scenes "
            f"with {json.dumps(parameters, sort_keys=True)}"
        )
        info = datasets.DatasetInfo(description=description, features=features)
        result[split] = datasets.Dataset.from_dict(columns, features=features, info=info, split=split)
    return datasets.DatasetDict(result)


def build_fashion_mnist_scenes(
    num_train: int,
    num_test: int,
    image_size: int = 48,
    seed: int = 0,
    clutter: int = 0,
    backgrounds_dir: str | os.PathLike | None = None,
    **kwargs,
):
    """Fashion-MNIST items pasted at half opacity ("half contrast") onto the backgrounds, 48 px.

    Train items come from the train file and test items from the t10k file; backgrounds are held
    out as in :func:`build_scenes`, which takes the same keyword arguments. An item's mask and
    box are its nonzero pixels (after resizing, alpha >= 128). 10 classes (:data:`FASHION_MNIST_CLASSES`).
    """
    return build_scenes(
        num_train, num_test, image_size, seed, clutter, None, backgrounds_dir, variant="fashion", **kwargs
    )


def export_imagefolder(dataset_dict, output_dir: str | os.PathLike) -> Path:
    """Write a DatasetDict from :func:`build_scenes` as an ``imagefolder`` with ``metadata.jsonl``.

    Layout: ``<split>/images/NNNNNN.png``, ``<split>/masks/NNNNNN.png`` and ``<split>/metadata.jsonl``
    (``file_name``, ``mask_file_name``, ``label``, ``bbox``, ``object_id``, ``background_id``),
    plus a ``README.md`` dataset card whose YAML lists the features. :func:`load_imagefolder`
    gives back the same DatasetDict. A plain ``datasets.load_dataset(str(output_dir))`` gives the
    same values, but ``label`` as int64 and ``bbox`` as float64: folder-based loaders infer types
    from ``metadata.jsonl`` unless ``features=`` is passed.
    """
    import yaml

    output_dir = Path(output_dir)
    features, description = None, ""
    for split, dataset in dataset_dict.items():
        features, description = dataset.features, dataset.info.description or description
        for folder in ("images", "masks"):
            (output_dir / split / folder).mkdir(parents=True, exist_ok=True)
        raw = dataset.cast_column("image", type(features["image"])(decode=False))
        raw = raw.cast_column("mask", type(features["mask"])(decode=False))
        with open(output_dir / split / "metadata.jsonl", "w") as metadata:
            for index, row in enumerate(raw):
                record = {"file_name": f"images/{index:06d}.png", "mask_file_name": f"masks/{index:06d}.png"}
                (output_dir / split / record["file_name"]).write_bytes(row["image"]["bytes"])
                (output_dir / split / record["mask_file_name"]).write_bytes(row["mask"]["bytes"])
                record.update({key: row[key] for key in ("label", "bbox", "object_id", "background_id")})
                metadata.write(json.dumps(record) + "\n")
    card = {
        "dataset_info": {"features": features._to_yaml_list()},
        "configs": [{"config_name": "default", "data_files": [{"split": s, "path": f"{s}/**"} for s in dataset_dict]}],
    }
    header = yaml.safe_dump(card, sort_keys=False)
    (output_dir / "README.md").write_text(f"---\n{header}---\n\n# LaSt-ViT scenes (generated)\n\n{description}\n")
    return output_dir


def load_imagefolder(path: str | os.PathLike, **load_dataset_kwargs):
    """Load an :func:`export_imagefolder` folder with the features its card declares (``label`` as
    ClassLabel, ``bbox`` as float32): ``datasets.load_dataset(path, features=...)``."""
    import yaml

    datasets = _datasets()
    header = yaml.safe_load((Path(path) / "README.md").read_text().split("---\n")[1])
    features = datasets.Features._from_yaml_list(header["dataset_info"]["features"])
    return datasets.load_dataset(str(path), features=features, **load_dataset_kwargs)


def ellipse_scene(size: int = 256, seed: int = 0) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A textured background with one saturated ellipse; returns the image and the object's box.

    Needs no files: the demo and data-free analyses use it."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 160, size=(8, 8, 3)).astype(np.uint8)
    background = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    noise = rng.normal(0, 12, size=(size, size, 3))
    image = Image.fromarray(np.clip(np.asarray(background) + noise, 0, 255).astype(np.uint8))
    side = int(size * rng.uniform(0.25, 0.4))
    x0, y0 = (int(v) for v in rng.integers(0, size - side, size=2))
    box = (x0, y0, x0 + side, y0 + side)
    ImageDraw.Draw(image).ellipse(box, fill=(230, 40, 40))
    return image, box


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lastvit.data.scenes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Generate the offline scenes benchmark: real cut-outs on real backgrounds, exact boxes and masks,\n"
            "held-out object instances and backgrounds in the test split. Saves a datasets.DatasetDict (--output)\n"
            "and/or an imagefolder (--imagefolder). The default sources are Debian files; install them with:\n\n"
            f"    {INSTALL_COMMAND}"
        ),
    )
    add = parser.add_argument
    add(
        "--variant",
        choices=VARIANTS,
        default="scenes",
        help="scenes: Tux Paint photo cut-outs in 7 classes; fashion: Fashion-MNIST items at half opacity",
    )
    add("--num-train", type=int, default=20000, help="number of training images (default 20000)")
    add("--num-test", type=int, default=2000, help="number of test images (default 2000)")
    add("--image-size", type=int, default=None, help="image side in pixels (default 64; 48 for fashion)")
    add("--seed", type=int, default=0, help="fixes the held-out instances and backgrounds and every image (default 0)")
    add("--clutter", type=int, default=0, help="fragments of objects of other classes per image (default 0)")
    add(
        "--objects",
        type=Path,
        default=None,
        metavar="DIR",
        help="your own cut-outs: one sub-folder per class (its name is the class) of RGBA images; scenes only",
    )
    add(
        "--backgrounds",
        type=Path,
        default=None,
        metavar="DIR",
        help="your own backgrounds: a folder of images, searched recursively (.pat textures are tiled)",
    )
    add(
        "--background-sources",
        default=",".join(DEFAULT_BACKGROUND_SOURCES),
        help=f"comma-separated, among {','.join(BACKGROUND_SOURCES)} (default: the Debian ones; skimage and sklearn "
        "need those packages); ignored with --backgrounds",
    )
    add(
        "--test-fraction",
        type=float,
        default=0.25,
        help="share of the object instances of each class and of the backgrounds held out for test (default 0.25)",
    )
    add(
        "--output",
        type=Path,
        default=None,
        metavar="DIR",
        help="save the DatasetDict here with save_to_disk (reload: datasets.load_from_disk(DIR))",
    )
    add(
        "--imagefolder",
        type=Path,
        default=None,
        metavar="DIR",
        help="write an imagefolder with metadata.jsonl and masks here (reload: lastvit.data.scenes.load_imagefolder(DIR))",
    )
    add(
        "--scale-range",
        type=float,
        nargs=2,
        default=DEFAULT_SCALE_RANGE,
        metavar=("LOW", "HIGH"),
        help="the object's longer side as a share of the image side (default 0.2 0.45)",
    )
    add("--opacity", type=float, default=None, help="object opacity (default: 1 for scenes, 0.5 for fashion)")
    add("--overwrite", action="store_true", help="replace existing --output / --imagefolder folders")
    args = parser.parse_args(argv)
    if args.output is None and args.imagefolder is None:
        parser.error("give --output DIR and/or --imagefolder DIR: where should the dataset go?")
    if args.num_train < 0 or args.num_test < 0:
        parser.error("--num-train and --num-test must be >= 0")
    if args.clutter < 0:
        parser.error("--clutter must be >= 0")
    if args.variant == "fashion" and args.objects is not None:
        parser.error("--objects applies to --variant scenes; the fashion variant's objects are Fashion-MNIST items")
    args.image_size = args.image_size or DEFAULT_IMAGE_SIZE[args.variant]
    if args.image_size < 8:
        parser.error("--image-size must be at least 8")
    if not 0 < args.test_fraction < 1:
        parser.error("--test-fraction must be between 0 and 1 (exclusive)")
    args.background_sources = tuple(s.strip() for s in args.background_sources.split(",") if s.strip())
    unknown = set(args.background_sources) - set(BACKGROUND_SOURCES)
    if unknown or not args.background_sources:
        parser.error(f"--background-sources: unknown {sorted(unknown)}; choose from {','.join(BACKGROUND_SOURCES)}")
    for folder in (args.output, args.imagefolder):
        if folder is not None and folder.exists() and any(folder.iterdir()) and not args.overwrite:
            parser.error(f"{folder} already holds files; pass --overwrite to replace them, or choose another folder")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        dataset = build_scenes(
            args.num_train,
            args.num_test,
            args.image_size,
            args.seed,
            args.clutter,
            args.objects,
            args.backgrounds,
            variant=args.variant,
            background_sources=args.background_sources,
            test_fraction=args.test_fraction,
            scale_range=tuple(args.scale_range),
            opacity=args.opacity,
            progress=True,
        )
    except (ScenesSourceError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output is not None:
        write_folder(args.output, lambda path: dataset.save_to_disk(str(path)))
        print(f"saved {args.output}  (reload: datasets.load_from_disk({str(args.output)!r}))")
    if args.imagefolder is not None:
        write_folder(args.imagefolder, lambda path: export_imagefolder(dataset, path))
        print(f"wrote {args.imagefolder}  (reload: lastvit.data.scenes.load_imagefolder({str(args.imagefolder)!r}))")
    for split, part in dataset.items():
        names = part.features["label"].names
        counts = np.bincount(np.asarray(part["label"], dtype=np.int64), minlength=len(names))
        print(f"{split}: {part.num_rows} images; per class {dict(zip(names, counts.tolist()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
