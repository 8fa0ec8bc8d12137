"""Where the scenes benchmark's images come from, and which of them each split may use.

Default sources are Debian packages (install them with :data:`INSTALL_COMMAND`):

- objects: photo cut-outs from ``tuxpaint-stamps-default`` in 7 natural classes
  (:data:`SCENE_CLASSES`; the stamp folders of each class are in :data:`STAMP_FOLDERS`);
- backgrounds: photos from ``tuxpaint-data`` (templates) and ``mate-backgrounds`` (nature), and
  real textures from ``gimp-data`` (``.pat`` files, tiled);
- the Fashion-MNIST variant pastes items from ``dataset-fashion-mnist`` at half opacity.

Your own cut-outs work too: ``objects_dir`` holds one sub-folder per class with RGBA images (the
class is the sub-folder's name), ``backgrounds_dir`` any images.

:func:`scene_splits` gives each split its :class:`SceneSources`: the test split gets held-out
object instances (~25% per class) and held-out backgrounds, chosen by the seed. The scenes
themselves are drawn in :mod:`lastvit.data.scenes`, which re-exports every public name here.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from .resample import composite_over, fit_size, from_array, premultiply, resize

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
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
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
    if bpp <= 2:  # grey (+ alpha) -> RGB
        pixels = np.concatenate([pixels[..., :1].repeat(3, axis=-1), pixels[..., 1:]], axis=-1)
    if pixels.shape[-1] == 4:
        pixels = composite_over(pixels, (128, 128, 128))
    return from_array(pixels, "RGB")


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
    # premultiplied: resizing never bleeds hidden colours into the edges
    image = from_array(premultiply(np.asarray(image.crop(box))), "RGBa")
    return resize(image, fit_size(image.size, 512), "bicubic")  # scenes need far less; keeps memory small


def load_cutout(path: str | os.PathLike) -> Image.Image | None:
    """A cut-out cropped to its opaque (alpha >= 128) box, as premultiplied "RGBa"; None when it
    has no alpha channel or too few opaque pixels. Cached by path, mtime and size."""
    return _load_cutout(*_file_key(Path(path)))


@lru_cache(maxsize=1024)
def _load_background(path: str, _mtime: int, _size: int) -> Image.Image:
    if path.endswith(".pat"):
        return read_gimp_pattern(path)
    with Image.open(path) as opened:  # decoded at full size: no DCT-scaled (library-dependent) JPEG decoding
        image = opened.convert("RGB")
    if min(image.size) > 1024:
        scale = 1024 / min(image.size)
        image = resize(image, (round(image.width * scale), round(image.height * scale)), "bicubic")
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
    return from_array(np.dstack([item, item, item, np.where(item > 0, 255, 0).astype(np.uint8)]), "RGBa")


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
