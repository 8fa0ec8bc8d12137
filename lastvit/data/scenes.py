"""The offline "scenes" benchmark: real photo cut-outs pasted onto real backgrounds.

Each image is one object cut-out with an alpha mask, pasted at a random scale, position and
horizontal flip onto a random crop of a real photo or texture. The alpha mask gives the exact
box and mask for free. The test split uses held-out object instances (~25% per class) and
held-out backgrounds, so it measures generalisation, not memorisation. Everything is generated
from a seed at run time; nothing is downloaded and no image is committed.

The sources (Debian packages by default, or your own cut-outs and backgrounds) and the held-out
split are read in :mod:`lastvit.data.scene_sources`; every public name there is importable from
here too. From the command line (``training_scripts/scenes.py``)::

    lastvit-scenes --num-train 20000 --num-test 2000 --output data/scenes
    lastvit-scenes --objects my_cutouts/ --backgrounds my_photos/ --output data/mine

:func:`build_scenes` returns a ``datasets.DatasetDict`` (``train``/``test``) with columns
``image`` (RGB), ``label`` (``ClassLabel``), ``bbox`` (``[x, y, w, h]`` in pixels, float32: the
mask's bounding box), ``mask`` (a mode-"L" PNG with values 0/255) and ``object_id`` /
``background_id`` (the source of each, so the split can be audited). It is consumed exactly
like a Hub dataset. :func:`generate_scenes` gives numpy arrays without ``datasets``.

This file is not part of the model's remote code: it needs numpy and Pillow (``datasets`` for
the ``DatasetDict`` builders) and does not import the model. Pillow only decodes files: every
resize is :mod:`lastvit.data.resample`'s exact integer code, so a seed gives the same pixels with
any Pillow (:func:`lastvit.data.fingerprint.scenes_fingerprint` hashes them).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from .resample import resize

# Every public name of the sources stays importable from here: `from lastvit.data.scenes import read_idx`.
from .scene_sources import *
from .scene_sources import (
    ALPHA_THRESHOLD,
    DEFAULT_BACKGROUND_SOURCES,
    SPLITS,
    Background,
    SceneSources,
    ScenesSourceError,
    scene_splits,
)

MAX_OBJECT_FRACTION = 0.45
"""Default largest object side, as a share of the image side: larger objects make Point-in-Box trivial."""
DEFAULT_SCALE_RANGE = (0.2, MAX_OBJECT_FRACTION)

DEFAULT_IMAGE_SIZE = {"scenes": 64, "fashion": 48}


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
            image = resize(image, (round(image.width * scale), round(image.height * scale)), "bicubic")
        return image

    def _object(self, index: int) -> Image.Image:
        """Instance ``index`` at working scale (longer side at most 2x the largest object side)."""
        image = self._objects.get(index)
        if image is None:
            image = self.sources.objects.image(index)
            if max(image.size) > 2 * self.max_side:
                scale = 2 * self.max_side / max(image.size)
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = resize(image, size, "box")
            if len(self._objects) < 100_000:
                self._objects[index] = image
        return image

    def _object_size(self, image: Image.Image, rng: np.random.Generator) -> tuple[int, int]:
        longer = int(rng.integers(self.min_side, self.max_side + 1))
        scale = longer / max(image.size)
        return max(1, min(longer, round(image.width * scale))), max(1, min(longer, round(image.height * scale)))

    def _background(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        return self._background_at(int(rng.integers(len(self._backgrounds))), rng)

    def _background_at(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A random crop of background ``index`` (float32 canvas) and its name."""
        image, size = self._backgrounds[index], self.image_size
        short = min(image.size)
        crop = round(math.exp(rng.uniform(math.log(min(size, short)), math.log(short))))
        x0, y0 = int(rng.integers(image.width - crop + 1)), int(rng.integers(image.height - crop + 1))
        canvas = np.asarray(resize(image, (size, size), "bilinear", box=(x0, y0, x0 + crop, y0 + crop)))
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
            piece = np.asarray(resize(image, (w, h), "bilinear", box=box))
            if (piece[..., 3] >= ALPHA_THRESHOLD).mean() >= 0.2:  # else a mostly transparent part: cut again
                self._paste(canvas, piece, rng)
                return

    def _scene_background(
        self, label: int, canvas: np.ndarray, background_id: str, rng: np.random.Generator
    ) -> tuple[np.ndarray, str]:
        """The background the object of class `label` goes on: here the one drawn first, with no
        further draws (`lastvit.data.background_challenge` ties classes to backgrounds here)."""
        return canvas, background_id

    def scene(self, rng: np.random.Generator) -> Scene:
        canvas, background_id = self._background(rng)
        label = int(self._classes[rng.integers(len(self._classes))])
        canvas, background_id = self._scene_background(label, canvas, background_id, rng)
        for _ in range(self.clutter):
            self._fragment(canvas, label, rng)
        members = self._by_class[label]
        for _ in range(100):
            index = int(members[rng.integers(len(members))])
            image = self._object(index)
            rgba = np.asarray(resize(image, self._object_size(image, rng), "bilinear"))
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


def append_scene(columns: dict[str, list], scene: Scene) -> None:
    """Add `scene` to the columns of :func:`scene_features` (image and mask as PNG, the box as a list)."""
    columns["image"].append(_png(scene.image))
    columns["label"].append(scene.label)
    columns["bbox"].append(scene.bbox.tolist())
    columns["mask"].append(_png(scene.mask.astype(np.uint8) * 255))
    columns["object_id"].append(scene.object_id)
    columns["background_id"].append(scene.background_id)


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
            append_scene(columns, scene)
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
