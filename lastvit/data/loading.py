"""Datasets and transforms for the training scripts: Hub names, imagefolders, saved datasets and
the built-in scenes benchmark, all consumed as `datasets` splits; PIL/NumPy transforms (no
torchvision). Augmentation randomness is a function of (seed, epoch, example index), so a run
resumed mid-way sees exactly the batches the uninterrupted run would have seen."""

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lastvit.errors import LastViTUserError

from .arguments import SCENES


class DataError(LastViTUserError):
    """Bad training data: the message names the problem and what to do."""


def load_splits(
    dataset,
    train_split: str | None = "train",
    eval_split: str | None = None,
    data_dir: str | None = None,
    scenes_kwargs: dict | None = None,
    train_flag: str | None = "--train-split",
):
    """Return ``(train, eval)`` `datasets.Dataset`s.

    `dataset` is ``"scenes"`` (built offline from Debian photo packages), ``"imagefolder"`` (with
    `data_dir`), a folder written by `Dataset(Dict).save_to_disk`, a Hub dataset name, or an
    in-memory `datasets.DatasetDict`.
    The evaluation split defaults to "validation", then "test". ``train_split=None``: no training
    split is needed (train is None). `train_flag` is the calling command's flag for the training
    split (None: it has none), named when that split is missing."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        splits, dataset = dataset, "the dataset"
    elif dataset == SCENES:
        from lastvit.data.scenes import build_scenes

        splits = build_scenes(**(scenes_kwargs or {}))
    elif dataset == "imagefolder":
        if not data_dir:
            raise DataError("`--dataset imagefolder` needs `--data-dir DIR` (one subfolder per class).")
        check_data_dir(data_dir)
        splits = datasets.load_dataset("imagefolder", data_dir=data_dir)
    elif _is_saved_dataset(dataset):
        splits = datasets.load_from_disk(dataset)
    else:
        splits = datasets.load_dataset(dataset)

    if isinstance(splits, datasets.Dataset):
        raise DataError(f"{dataset} holds a single split; save a DatasetDict with train and evaluation splits.")
    if train_split is not None and train_split not in splits:
        hint = f" (see {train_flag})" if train_flag else ""
        raise DataError(f"{dataset} has no split {train_split!r}; it has {sorted(splits)}{hint}.")
    if eval_split is None:
        eval_split = next((s for s in ("validation", "test", "val") if s in splits), None)
        if eval_split is None:
            raise DataError(f"{dataset} has no validation/test split among {sorted(splits)}; pass --eval-split.")
    elif eval_split not in splits:
        raise DataError(f"{dataset} has no split {eval_split!r}; it has {sorted(splits)} (see --eval-split).")
    return (None if train_split is None else splits[train_split]), splits[eval_split]


def check_data_dir(data_dir) -> None:
    """An imagefolder's --data-dir must be a readable folder holding images (one line otherwise)."""
    import os
    from pathlib import Path

    folder = Path(data_dir).expanduser()
    if not folder.exists():
        raise DataError(
            f"--data-dir {data_dir} does not exist; give the folder of class subfolders (or train/ test/)."
        )
    if not folder.is_dir():
        raise DataError(f"--data-dir {data_dir} is a file; give the folder of class subfolders (or train/ test/).")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataError(f"--data-dir {data_dir} is not readable; fix its permissions.")
    if not any(path.is_file() for path in folder.rglob("*")):
        raise DataError(f"--data-dir {data_dir} holds no files; put the images in one subfolder per class.")


def _is_saved_dataset(path: str) -> bool:
    from pathlib import Path

    folder = Path(path)
    return folder.is_dir() and ((folder / "dataset_dict.json").exists() or (folder / "dataset_info.json").exists())


def label_names(split, label_column: str) -> list[str]:
    """Class names from a ClassLabel column, else ``"0" .. "C-1"`` from the values seen."""
    feature = split.features[label_column]
    if hasattr(feature, "names"):
        return list(feature.names)
    return [str(i) for i in range(int(max(split[label_column])) + 1)]


def check_columns(split, image_column: str, label_column: str, name: str) -> None:
    """Fail early, naming the missing column and the ones there are."""
    for column, flag in ((image_column, "--image-column"), (label_column, "--label-column")):
        if column not in split.column_names:
            raise DataError(
                f"the {name} split has no column {column!r}; its columns are {split.column_names} (set {flag})."
            )


def check_labels(split, label_column: str, num_labels: int, name: str) -> None:
    """Every label must index one of the model's classes."""
    labels = np.asarray(split[label_column])
    if labels.size and (labels.min() < 0 or labels.max() >= num_labels):
        bad = int(labels[(labels < 0) | (labels >= num_labels)][0])
        raise DataError(
            f"the {name} split has label {bad}, outside [0, {num_labels}) for the model's {num_labels} classes; "
            "fix the labels or pass the right --num-labels / a model with that many classes."
        )


def _named(names) -> bool:
    """False for placeholder names: transformers' ``LABEL_i`` and the ``"i"`` of an unnamed label column."""
    return not all(name in (f"LABEL_{i}", str(i)) for i, name in enumerate(names))


def match_labels(dataset_names: list[str], id2label: dict, by_index: bool = False) -> list[int] | None:
    """Map each dataset class to the model's class of the same name: None when they agree index by
    index (or `by_index`, or either side has no names), else ``mapping[dataset_index] = model_index``
    for the same names in another order (said in one line). Other classes on either side stop with
    one line naming both lists."""
    model_names = [str(id2label[i]) for i in sorted(int(i) for i in id2label)] if id2label else []
    dataset_names = [str(name) for name in dataset_names]
    if by_index or not (_named(model_names) and _named(dataset_names)) or dataset_names == model_names:
        return None
    if sorted(dataset_names) == sorted(model_names) and len(set(model_names)) == len(model_names):
        mapping = [model_names.index(name) for name in dataset_names]
        print(f"the dataset's classes are the model's in another order: matched by name ({dataset_names})")
        return mapping
    only_data = [n for n in dataset_names if n not in model_names]
    only_model = [n for n in model_names if n not in dataset_names]
    raise DataError(
        f"the dataset's {len(dataset_names)} classes {dataset_names} are not the model's {len(model_names)} "
        f"{model_names} (only in the dataset: {only_data}; only in the model: {only_model}); rename the class "
        "folders to the model's, or pass --match-labels-by-index to compare by position."
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any image: high-bit-depth grayscale (16-bit PNGs open as ``I;16``/``I``, float
    as ``F``) is scaled to 0..255, not clipped (Pillow's ``convert`` would turn most of it white);
    palette, grayscale, CMYK and alpha images convert as Pillow converts them."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        finite = array[np.isfinite(array)]
        top = float(finite.max()) if finite.size else 0.0
        if image.mode == "F" and top <= 1.0:
            scale = 255.0  # floats in 0..1
        elif image.mode.startswith("I;16") or 255 < top <= 65535:
            scale = 255.0 / 65535.0  # 16-bit samples
        elif top > 65535:
            scale = 255.0 / top
        else:
            scale = 1.0  # already in 0..255
        array = np.clip(np.nan_to_num(array * scale), 0, 255).round().astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    return image.convert("RGB")


@dataclass
class ImageTransform:
    """Random-resized crop + horizontal flip (train) or resize + centre crop (eval), then normalise."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: bool
    seed: int = 0
    crop_scale: tuple[float, float] = (0.08, 1.0)
    resize_ratio: float = 256 / 224
    keep_native: bool = True
    """Use an image already at model size as it is (False: resize and crop it too, as the ImageNet protocol does)."""

    def __call__(self, image: Image.Image, index: int, epoch: int) -> torch.Tensor:
        image = to_rgb(image)
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            image = self._random_resized_crop(image, rng)
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            image = self._resize_centre_crop(image)
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def _random_resized_crop(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        width, height = image.size
        area = width * height
        for _ in range(10):
            target = area * rng.uniform(*self.crop_scale)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
                return image.resize((self.size, self.size), Image.BILINEAR, box=(x0, y0, x0 + w, y0 + h))
        return self._resize_centre_crop(image)

    def geometry(self, image: Image.Image) -> Image.Image:
        """The evaluation geometry alone (resize + centre crop, no normalisation): for masks and
        figures that must line up with the evaluated pixels."""
        return self._resize_centre_crop(image)

    def _resize_centre_crop(self, image: Image.Image) -> Image.Image:
        """Resize the short side to size * 256/224 and centre-crop (truncating like torchvision and
        the authors' box mapping); an image already at model size is used as it is (`keep_native`)."""
        width, height = image.size
        if self.keep_native and (width, height) == (self.size, self.size):
            return image
        short = round(self.size * self.resize_ratio)
        scale = short / min(width, height)
        image = image.resize((max(short, int(width * scale)), max(short, int(height * scale))), Image.BILINEAR)
        width, height = image.size
        left, top = (width - self.size) // 2, (height - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))


def transform_with_boxes(images_and_boxes, transform: ImageTransform, progress: bool = False):
    """Evaluation tensors for ``(image, box or None)`` pairs, each ``(x0, y0, x1, y1)`` box mapped to
    model-input pixels the way `transform` moved the pixels: unchanged for an image already at model
    size, else through the short-side resize and centre crop (`lastvit.measure.grid.map_box`).
    Returns ``(pixel_values, boxes)``; boxes is None unless every image has one."""
    from tqdm.auto import tqdm

    from lastvit.measure.grid import map_box

    pixels, boxes = [], []
    short = round(transform.size * transform.resize_ratio)
    for index, (image, box) in enumerate(tqdm(images_and_boxes, desc="preprocessing", disable=not progress)):
        pixels.append(transform(image, index, 0))
        native = image.size == (transform.size, transform.size)
        boxes.append(None if box is None else map_box(box, image.size, transform.size, None if native else short))
    has_boxes = bool(boxes) and all(box is not None for box in boxes)
    return torch.stack(pixels), (boxes if has_boxes else None)


def decode_or_skip(encoded: dict, index: int, skip_bad: bool) -> Image.Image | None:
    """The image of one undecoded `datasets` example; an unreadable one is None with `skip_bad`, else
    a `DataError` naming its file."""
    try:
        return _decode(encoded)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        if skip_bad:
            return None
        where = encoded.get("path") or f"example {index}"
        raise DataError(
            f"cannot read image {where}: {error}. Fix or remove it, or pass --on-bad-image skip."
        ) from None


class TransformedSplit(torch.utils.data.Dataset):
    """A `datasets` split as (pixel_values, label) pairs; undecodable images become `None`
    (skipped and counted by `collate`) or raise with the file's name, as the user chose."""

    def __init__(self, split, transform: ImageTransform, image_column: str, label_column: str, skip_bad: bool):
        import datasets

        self.split = split.cast_column(image_column, datasets.Image(decode=False))
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.skip_bad = skip_bad
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        row = self.split[index]
        encoded = row[self.image_column]
        try:
            image = _decode(encoded)
            pixel_values = self.transform(image, index, self.epoch)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            where = encoded.get("path") or f"example {index}"
            if self.skip_bad:
                return None
            raise DataError(
                f"cannot read image {where}: {error}. Fix or remove it, or pass --on-bad-image skip."
            ) from error
        return pixel_values, int(row[self.label_column])


def _decode(encoded: dict) -> Image.Image:
    if encoded.get("bytes") is not None:
        image = Image.open(io.BytesIO(encoded["bytes"]))
    elif encoded.get("path"):
        image = Image.open(encoded["path"])
    else:
        raise ValueError("the example holds no image")
    image.load()
    return image


def collate(examples) -> dict:
    """Stack the readable examples; `num_skipped` counts the ones that could not be read."""
    good = [e for e in examples if e is not None]
    batch = {"num_skipped": torch.tensor(len(examples) - len(good))}
    if good:
        batch["pixel_values"] = torch.stack([e[0] for e in good])
        batch["labels"] = torch.tensor([e[1] for e in good])
    return batch


class EpochSampler(torch.utils.data.Sampler):
    """A permutation that depends only on (seed, epoch): resuming reproduces the order."""

    def __init__(self, num_examples: int, seed: int, shuffle: bool):
        self.num_examples = num_examples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.num_examples))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_examples, generator=generator).tolist())


def build_processor(model, source: str | None = None, trust_remote_code: bool = False):
    """The checkpoint's own processor when it has one (e.g. CLIP statistics), else the LaSt-ViT
    evaluation preprocessing (resize to 256/224 of the input size, centre crop) at the model's size.
    A folder's own processor code runs only with `trust_remote_code`."""
    from modeling_lastvit import LastViTImageProcessor

    if source and _has_processor(source):
        from transformers import AutoImageProcessor

        from lastvit.files import load_pretrained

        return load_pretrained(AutoImageProcessor, source, trust_remote_code=trust_remote_code)
    size = model.config.image_size_hw[0]
    return LastViTImageProcessor(
        size={"shortest_edge": round(size * 256 / 224)}, crop_size={"height": size, "width": size}
    )


def _has_processor(source: str) -> bool:
    """A local folder with a preprocessor_config.json, or a Hub id (asked there)."""
    from pathlib import Path

    folder = Path(source).expanduser()
    return (folder / "preprocessor_config.json").exists() if folder.exists() else True
