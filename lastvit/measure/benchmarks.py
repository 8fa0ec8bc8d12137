"""The paper's benchmarks on the datasets' own files (``lastvit-benchmark NAME``), streamed.

Each benchmark reads its set lazily (`lastvit.data.benchmarks`), decodes and resizes in DataLoader
workers, runs the model batch by batch and keeps only running counts (hits, confusion matrices,
per-image IoUs), so memory does not grow with the set (k-NN and the linear probe keep one pooled
feature per training image, which they need). The metrics are the library's: Point-in-Box
(`localization.point_in_box`), CorLoc and the coarse-segmentation IoU (`dense`), the mIoU
(`zero_shot.confusion_matrix` / `mean_iou`), DINO's k-NN (`pretrained_eval.knn_votes`).

Maps: ``patch_score`` is the cosine of each final patch token with the pooled global feature
(LaSt-ViT Eq. 3; the LazyStrike token for LaSt-ViT); ``patch_score_cls`` the cosine with the final
CLS output, what the authors' ``evaluate_patch_hit.py`` scores (science.md §1.2).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lastvit.data.benchmarks.common import collate_samples

from . import dense
from . import localization as L
from .evaluation import _autocast, resolve_device

MAP_NAMES = {"patch_score": "Patch Score (pooled feature, Eq. 3)", "patch_score_cls": "Patch Score (final CLS output)"}


class BenchmarkError(ValueError):
    """A model or option that does not fit the benchmark; the message names the problem and the fix."""


# --------------------------------------------------------------------------- the model


@dataclass
class BenchmarkModel:
    """A loaded model and what the benchmarks need to know about it."""

    model: torch.nn.Module
    kind: str
    """``classifier`` (LastViTForImageClassification), ``backbone`` (LastViTModel) or ``clip``."""
    mean: tuple
    std: tuple
    tokenizer: object = None

    @property
    def tower(self):
        if self.kind == "clip":
            return self.model.vision_model
        return self.model.base_model if self.kind == "classifier" else self.model

    @property
    def image_size(self) -> int:
        height, width = self.tower.config.image_size_hw
        if height != width:
            raise BenchmarkError(f"the benchmarks crop square inputs; this model's image_size is {height}x{width}.")
        return height

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.tower.config.patch_size_hw)

    def forward(self, pixel_values: torch.Tensor) -> dict:
        """``patches`` [B, N, D], ``pooled`` [B, D], ``cls`` [B, D] or None and, for a classifier, ``logits``."""
        outputs = self.tower(pixel_values=pixel_values)
        tokens = self.tower.split_tokens(outputs.last_hidden_state)
        result = {
            "patches": tokens.patches.float(),
            "pooled": outputs.pooler_output.float(),
            "cls": None if tokens.cls is None else tokens.cls.reshape(len(pixel_values), -1).float(),
            "logits": None,
        }
        if self.kind == "classifier":
            result["logits"] = self.model.classifier(self.model.classifier_features(outputs)).float()
        return result

    def maps(self, pixel_values: torch.Tensor) -> tuple[dict, dict]:
        """``({map name: [B, N] scores}, forward outputs)``."""
        out = self.forward(pixel_values)
        maps = {"patch_score": L.patch_scores(out["patches"], out["pooled"])}
        if out["cls"] is not None:
            maps["patch_score_cls"] = L.patch_scores(out["patches"], out["cls"])
        return {k: v.cpu() for k, v in maps.items()}, out


def _normalisation(path: str) -> tuple[tuple, tuple]:
    """The checkpoint's ``image_mean`` / ``image_std`` (its preprocessor_config.json), else ImageNet's;
    read as JSON, so no processor code runs."""
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from transformers.utils import cached_file

    try:
        found = cached_file(path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        found = None
    if found:
        config = json.loads(Path(found).read_text())
        if "image_mean" in config and "image_std" in config:
            return tuple(config["image_mean"]), tuple(config["image_std"])
    return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)


def load_benchmark_model(path: str, trust_remote_code: bool = False) -> BenchmarkModel:
    """This package's classes for LastViT and LastViT-CLIP checkpoints; any other model only with
    `trust_remote_code` (then transformers' Auto classes run the checkpoint's own code)."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoTokenizer

    import modeling_lastvit
    from lastvit.clip.modeling_lastvit_clip import LastViTCLIPConfig, LastViTCLIPModel

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as error:
        raise BenchmarkError(
            f"{path} is not a LastViT or LastViT-CLIP checkpoint ({error}); convert it with lastvit-convert, or pass "
            "--trust-remote-code to run the checkpoint's own code."
        ) from error
    architectures = " ".join(config.architectures or [])
    if isinstance(config, LastViTCLIPConfig):
        model, kind = LastViTCLIPModel.from_pretrained(path), "clip"
    elif isinstance(config, modeling_lastvit.LastViTConfig):
        kind = "classifier" if "ForImageClassification" in architectures else "backbone"
        cls = modeling_lastvit.LastViTForImageClassification if kind == "classifier" else modeling_lastvit.LastViTModel
        model = cls.from_pretrained(path)
    elif trust_remote_code:
        kind = "classifier" if "ForImageClassification" in architectures else "backbone"
        auto = AutoModelForImageClassification if kind == "classifier" else AutoModel
        model = auto.from_pretrained(path, trust_remote_code=True)
        if not hasattr(model, "get_patch_features" if "CLIP" in architectures else "config"):
            raise BenchmarkError(f"{path} loaded as {type(model).__name__}, which the benchmarks cannot read.")
        kind = "clip" if hasattr(model, "get_patch_features") else kind
    else:
        raise BenchmarkError(
            f"{path} holds a {config.model_type!r} model, not a LastViT checkpoint; convert it with lastvit-convert, "
            "or pass --trust-remote-code to run the checkpoint's own code."
        )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code) if kind == "clip" else None
    mean, std = _normalisation(path)
    return BenchmarkModel(model.eval(), kind, mean, std, tokenizer)


# --------------------------------------------------------------------------- streaming and timing


class Throughput:
    """Seconds spent waiting for the loader and running the model, and the images seen."""

    def __init__(self, device: torch.device):
        self.device, self.loader_s, self.model_s, self.images = device, 0.0, 0.0, 0
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def model(self):
        """Time the block as model time (the GPU's queue is drained first, so the time is real)."""
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.model_s += time.perf_counter() - start

    def report(self) -> dict:
        wall = time.perf_counter() - self.started
        return {
            "images": self.images,
            "wall_s": round(wall, 3),
            "loader_wait_s": round(self.loader_s, 3),
            "model_s": round(self.model_s, 3),
            "loader_images_per_s": round(self.images / self.loader_s, 2) if self.loader_s > 0 else None,
            "model_images_per_s": round(self.images / self.model_s, 2) if self.model_s > 0 else None,
            "end_to_end_images_per_s": round(self.images / wall, 2) if wall > 0 else None,
            "note": "loader_images_per_s = images / time the model waited for batches (its workers decode and "
            "resize meanwhile); model_images_per_s = images / time in the model and the metric's tensor work",
        }


def stream(dataset, options, timer: Throughput, description: str):
    """Batches of `dataset` from a DataLoader (`options.num_workers` processes decode and resize),
    counting the time the caller waits for each batch."""
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        collate_fn=collate_samples,
        pin_memory=timer.device.type == "cuda",
    )
    with tqdm(total=len(dataset), desc=description, disable=not options.progress, unit="img") as bar:
        batches = iter(loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            timer.loader_s += time.perf_counter() - start
            timer.images += len(batch["index"])
            yield batch
            bar.update(len(batch["index"]))


def _groups(batch: dict):
    """``(indices, stacked pixels)`` of the images of one shape (full-resolution batches mix shapes)."""
    pixels = batch["pixel_values"]
    if isinstance(pixels, torch.Tensor):
        yield list(range(len(pixels))), pixels
        return
    shapes = {}
    for i, image in enumerate(pixels):
        shapes.setdefault(tuple(image.shape), []).append(i)
    for indices in shapes.values():
        yield indices, torch.stack([pixels[i] for i in indices])


# --------------------------------------------------------------------------- transforms (run in the workers)


def to_normalised_tensor(image, mean, std) -> torch.Tensor:
    array = (np.asarray(image, dtype=np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def pad_to_patches(image, mean, std, patch: tuple[int, int]) -> torch.Tensor:
    """LOST's input: the full image, normalised, zero-padded at the right and bottom to whole patches."""
    tensor = to_normalised_tensor(image, mean, std)
    height, width = tensor.shape[-2:]
    pad_h, pad_w = -height % patch[0], -width % patch[1]
    return torch.nn.functional.pad(tensor, (0, pad_w, 0, pad_h))


def square_resize(image, size: int, mean, std) -> torch.Tensor:
    """CRATE's (Leopart's) coarse-segmentation input: Resize((size, size)), bilinear."""
    from PIL import Image

    return to_normalised_tensor(image.resize((size, size), Image.BILINEAR), mean, std)


def square_resize_labels(target: np.ndarray, size: int) -> np.ndarray:
    """The label map resized like the image, nearest neighbour."""
    from PIL import Image

    return np.asarray(Image.fromarray(target.astype(np.uint8)).resize((size, size), Image.NEAREST), dtype=np.int64)


def mmseg_rescale_size(width: int, height: int, short_side: int, long_side: int = 2048) -> tuple[int, int]:
    """mmseg's ``Resize(scale=(long_side, short_side), keep_ratio=True)`` output ``(width, height)``."""
    scale = min(long_side / max(width, height), short_side / min(width, height))
    return int(width * scale + 0.5), int(height * scale + 0.5)


def short_side_resize(image, short_side: int, mean, std) -> torch.Tensor:
    from PIL import Image

    return to_normalised_tensor(image.resize(mmseg_rescale_size(*image.size, short_side), Image.BILINEAR), mean, std)


def eval_transform(model: BenchmarkModel, keep_native: bool = True):
    """Resize the short side to 256/224 of the input, centre-crop the input (ImageNet's evaluation)."""
    from lastvit.data.loading import ImageTransform

    transform = ImageTransform(model.image_size, model.mean, model.std, train=False, keep_native=keep_native)
    return functools.partial(transform, index=0, epoch=0)


# --------------------------------------------------------------------------- the benchmarks


def run_pib(model: BenchmarkModel, options, device, timer) -> tuple[dict, dict]:
    from lastvit.data.benchmarks.imagenet import ImageNetBoxes

    size, patch = model.image_size, model.patch_size
    resize = round(size * 256 / 224)
    dataset = ImageNetBoxes(
        options.data_dir, eval_transform(model, keep_native=False), not options.no_single_object_filter
    ).limit(options.limit)
    hits, baselines, correct = {}, {"random_patch": 0.0, "centre_patch": 0.0}, 0
    geometry = (size, (patch[1], patch[0]), resize)
    for batch in stream(dataset, options, timer, "imagenet-pib"):
        with timer.model(), torch.no_grad(), _autocast(device):
            maps, out = model.maps(batch["pixel_values"].to(device))
        for name, scores in maps.items():
            hits[name] = hits.get(name, 0) + int(
                L.point_in_box(scores, batch["boxes"], batch["size"], *geometry).sum()
            )
        baselines["random_patch"] += float(L.random_patch_baseline(batch["boxes"], batch["size"], *geometry).sum())
        baselines["centre_patch"] += float(L.centre_patch_baseline(batch["boxes"], batch["size"], *geometry).sum())
        if out["logits"] is not None and out["logits"].shape[1] == len(dataset.synsets):
            correct += int((out["logits"].argmax(dim=1).cpu() == torch.as_tensor(batch["label"])).sum())
    n = max(len(dataset), 1)
    metrics = {
        "point_in_box": {name: count / n for name, count in hits.items()},
        "baselines": {name: value / n for name, value in baselines.items()},
        "num_images": len(dataset),
        "num_annotated_images": dataset.num_annotated,
    }
    if model.kind == "classifier" and model.model.config.num_labels == len(dataset.synsets):
        metrics["top1"] = correct / n
    protocol = {
        "images": "ImageNet val with boxes",
        "filter": "none" if options.no_single_object_filter else "exactly one box, area < 25% of the image (authors')",
        "preprocessing": f"Resize {resize} (short side, bilinear) -> CenterCrop {size}",
        "box_rule": "hit if the arg-max patch is one the mapped box overlaps (authors' evaluate_patch_hit.py)",
        "maps": {name: MAP_NAMES[name] for name in hits},
    }
    return metrics, protocol


def run_corloc(model: BenchmarkModel, options, device, timer) -> tuple[dict, dict]:
    from lastvit.data.benchmarks.coco import COCODetection
    from lastvit.data.benchmarks.voc import VOCDetection

    patch = model.patch_size
    transform = functools.partial(pad_to_patches, mean=model.mean, std=model.std, patch=patch)
    if options.benchmark == "coco20k-corloc":
        image_list = options.image_list or Path(options.data_dir) / "coco_20k_filenames.txt"
        dataset = COCODetection(options.data_dir, image_list=image_list, transform=transform)
        images = f"COCO20k ({image_list})"
    else:
        year = "2007" if options.benchmark == "voc07-corloc" else "2012"
        dataset = VOCDetection(options.data_dir, year, "trainval", transform, options.remove_hards)
        images = f"VOC{year} trainval" + (" without hard objects (LOST --no_hard)" if options.remove_hards else "")
    dataset.limit(options.limit)
    hits = {}
    for batch in stream(dataset, options, timer, options.benchmark):
        for indices, pixels in _groups(batch):
            with timer.model(), torch.no_grad(), _autocast(device):
                maps, _ = model.maps(pixels.to(device))
            grid = (pixels.shape[-2] // patch[0], pixels.shape[-1] // patch[1])
            for name, scores in maps.items():
                predicted = dense.foreground_boxes(dense.coarse_segmentation(scores, grid), patch)
                clipped = [_clip_box(box, batch["size"][i]) for box, i in zip(predicted, indices)]
                found = dense.corloc_hits(clipped, [batch["boxes"][i] for i in indices])
                hits[name] = hits.get(name, 0) + int(found.sum())
    n = max(len(dataset), 1)
    metrics = {"corloc": {name: count / n for name, count in hits.items()}, "num_images": len(dataset)}
    protocol = {
        "images": images,
        "preprocessing": "full resolution, normalised, zero-padded right/bottom to whole patches (LOST)",
        "ground_truth": "LOST's boxes: VOC (xmin-1, ymin-1, xmax, ymax); COCO rounded xywh->xyxy without crowd",
        "prediction": "box of the largest 4-connected component of score > mean + std, clipped to the image",
        "hit": "IoU >= 0.5 with any ground-truth box",
        "maps": {name: MAP_NAMES[name] for name in hits},
    }
    return metrics, protocol


def _clip_box(box, size):
    if box is None:
        return None
    width, height = size
    return (box[0], box[1], min(box[2], width), min(box[3], height))


def run_coarse_seg(model: BenchmarkModel, options, device, timer) -> tuple[dict, dict]:
    from lastvit.data.benchmarks.voc import VOCSegmentation

    size, patch = model.image_size, model.patch_size
    dataset = VOCSegmentation(
        options.data_dir,
        "2012",
        "val",
        functools.partial(square_resize, size=size, mean=model.mean, std=model.std),
        functools.partial(square_resize_labels, size=size),
    ).limit(options.limit)
    totals = {}
    grid = (size // patch[0], size // patch[1])
    for batch in stream(dataset, options, timer, "voc12-coarse-seg"):
        with timer.model(), torch.no_grad(), _autocast(device):
            maps, _ = model.maps(batch["pixel_values"].to(device))
        targets = np.stack(batch["target"])
        valid = targets != 255
        for name, scores in maps.items():
            predicted = dense.patch_mask_to_pixels(dense.coarse_segmentation(scores, grid), patch)
            entry = totals.setdefault(name, {"jaccard": 0.0, "jaccard_void_ignored": 0.0})
            entry["jaccard"] += float(dense.mask_iou(predicted, targets != 0).sum())
            entry["jaccard_void_ignored"] += float(dense.mask_iou(predicted & valid, (targets != 0) & valid).sum())
    n = max(len(dataset), 1)
    metrics = {
        "jaccard": {name: entry["jaccard"] / n for name, entry in totals.items()},
        "jaccard_void_ignored": {name: entry["jaccard_void_ignored"] / n for name, entry in totals.items()},
        "num_images": len(dataset),
    }
    protocol = {
        "images": "VOC2012 ImageSets/Segmentation/val.txt",
        "preprocessing": f"Resize(({size}, {size})) bilinear; masks nearest (CRATE / Leopart's attention-map evaluation)",
        "prediction": "patches with score > mean + std, each over its pixels",
        "ground_truth": "foreground = label != 0 (void 255 counts as foreground, as in the reference code; "
        "jaccard_void_ignored drops void pixels)",
        "metric": "per-image Jaccard of the foreground, averaged over the images",
        "maps": {name: MAP_NAMES[name] for name in totals},
    }
    return metrics, protocol


def run_zero_shot(model: BenchmarkModel, options, device, timer) -> tuple[dict, dict]:
    from lastvit.data.benchmarks.segmentation_suites import SegmentationSuite, read_class_names, read_templates

    from .zero_shot import class_text_embeddings, confusion_matrix, mean_iou
    from .zero_shot_segmentation import predict_labels, window_cosines

    if model.kind != "clip":
        raise BenchmarkError(
            f"{options.benchmark} needs an image-text model (a LastViT-CLIP folder with its tokenizer); "
            f"{options.model} is a {model.kind}."
        )
    name = options.benchmark.removesuffix("-zeroshot")
    transform_for = functools.partial(short_side_resize, mean=model.mean, std=model.std)
    dataset = SegmentationSuite(name, options.data_dir)
    protocol_settings = dataset.protocol
    dataset.transform = functools.partial(transform_for, short_side=protocol_settings.short_side)
    dataset.limit(options.limit)
    classes = read_class_names(protocol_settings.names_file)
    queries = [query for names in classes for query in names]
    query_classes = [index for index, names in enumerate(classes) for _ in names]
    templates = read_templates()
    crop = model.image_size
    stride = int(crop * protocol_settings.stride_fraction)
    model.model.to(device)
    with torch.no_grad(), _autocast(device):  # 8 names (640 prompts) per text-tower call
        text = torch.cat(
            [
                class_text_embeddings(model.model, model.tokenizer, queries[start : start + 8], templates).float()
                for start in range(0, len(queries), 8)
            ]
        )
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for batch in stream(dataset, options, timer, options.benchmark):
        for image, target in zip(batch["pixel_values"], batch["target"]):
            with timer.model(), torch.no_grad(), _autocast(device):
                cosines = window_cosines(model.model, image.to(device), text, crop, stride, options.batch_size)
                labels = predict_labels(
                    cosines,
                    query_classes,
                    target.shape,
                    protocol_settings.logit_scale,
                    protocol_settings.prob_threshold,
                    protocol_settings.area_threshold,
                ).cpu()
            confusion += confusion_matrix(labels.numpy(), target, len(classes))
    scores = mean_iou(confusion)
    metrics = {"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"], "num_images": len(dataset)}
    metrics["per_class_iou"] = {  # None: the class is in neither the prediction nor the ground truth
        names[0]: None if np.isnan(iou) else iou for names, iou in zip(classes, scores["per_class_iou"])
    }
    protocol = {
        "source": "SCLIP's evaluation (github.com/wangf3014/SCLIP configs/cfg_*.py, clip_segmentor.py)",
        **protocol_settings.as_dict(),
        "resize": f"short side {protocol_settings.short_side} (long side <= 2048), keep ratio, bilinear",
        "window": f"{crop} x {crop}, stride {stride}; window cosines upsampled bilinearly and averaged",
        "num_classes": len(classes),
        "num_queries": len(queries),
        "num_templates": len(templates),
        "background": "class 0 (its names: " + ", ".join(classes[0][:4]) + ", ...)"
        if protocol_settings.background
        else "not a class (ignored pixels)",
        "metric": "mIoU over classes present in prediction or ground truth, one confusion matrix over the set, "
        "at the label maps' original resolution",
    }
    return metrics, protocol


def run_in9(model: BenchmarkModel, options, device, timer) -> tuple[dict, dict]:
    from lastvit.data.benchmarks.in9 import NUM_CLASSES, bg_gap, in_to_in9, variation_dataset, variation_folders

    num_labels = getattr(model.model.config, "num_labels", None) if model.kind == "classifier" else None
    if num_labels not in (1000, NUM_CLASSES):
        raise BenchmarkError(
            f"in9-backgrounds needs a classifier with 1000 ImageNet classes or the 9 IN-9 classes; {options.model} "
            f"is a {model.kind}" + (f" with {num_labels} classes." if num_labels else ".")
        )
    mapping = torch.as_tensor(in_to_in9()) if num_labels == 1000 else torch.arange(NUM_CLASSES)
    accuracy, counts = {}, {}
    for variation, folder in variation_folders(options.data_dir).items():
        dataset = variation_dataset(folder, eval_transform(model)).limit(options.limit)
        correct = 0
        for batch in stream(dataset, options, timer, variation):
            with timer.model(), torch.no_grad(), _autocast(device):
                logits = model.forward(batch["pixel_values"].to(device))["logits"]
            predicted = mapping[logits.argmax(dim=1).cpu()]
            correct += int((predicted == torch.as_tensor(batch["label"])).sum())
        accuracy[variation], counts[variation] = correct / max(len(dataset), 1), len(dataset)
    metrics = {"accuracy": accuracy, "bg_gap": bg_gap(accuracy), "num_images": counts}
    protocol = {
        "source": "Xiao et al. 2020, github.com/MadryLab/backgrounds_challenge (in9_eval.py)",
        "preprocessing": "224 x 224 images used as they are (other model sizes: resize + centre crop)",
        "prediction": "arg-max over the 1000 classes mapped with in_to_in9.json (outside the 9: wrong)"
        if num_labels == 1000
        else "arg-max over the 9 classes",
        "bg_gap": "accuracy(mixed_same) - accuracy(mixed_rand)",
    }
    return metrics, protocol


def _features(model: BenchmarkModel, dataset, options, device, timer, description: str):
    """Unit pooled features (fp16, CPU) and labels of every image of `dataset`."""
    features, labels = [], []
    for batch in stream(dataset, options, timer, description):
        with timer.model(), torch.no_grad(), _autocast(device):
            pooled = model.forward(batch["pixel_values"].to(device))["pooled"]
        features.append(torch.nn.functional.normalize(pooled, dim=-1).half().cpu())
        labels += batch["label"]
    return torch.cat(features), torch.as_tensor(labels)


def run_knn(model: BenchmarkModel, options, device, timer) -> tuple[dict, dict]:
    from lastvit.data.benchmarks.imagenet import class_folder_splits

    from .pretrained_eval import knn_votes

    train, val = class_folder_splits(options.data_dir, eval_transform(model))
    train.limit(options.limit), val.limit(options.limit)
    bank, bank_labels = _features(model, train, options, device, timer, "knn: train features")
    bank, bank_labels = bank.to(device).float(), bank_labels.to(device)
    correct = 0
    for batch in stream(val, options, timer, "knn: val"):
        with timer.model(), torch.no_grad(), _autocast(device):
            query = torch.nn.functional.normalize(model.forward(batch["pixel_values"].to(device))["pooled"], dim=-1)
            votes = knn_votes(bank, bank_labels, query.float(), len(train.classes), options.knn_k)
        correct += int((votes.argmax(dim=1).cpu() == torch.as_tensor(batch["label"])).sum())
    metrics = {"top1": correct / max(len(val), 1), "num_train_images": len(train), "num_images": len(val)}
    protocol = {
        "source": "DINO's weighted k-NN (Caron et al. 2021, eval_knn.py)",
        "features": "pooled global feature (pooler_output), L2-normalised",
        "k": options.knn_k,
        "temperature": 0.07,
        "preprocessing": "Resize 256/224 of the input, CenterCrop",
    }
    return metrics, protocol


def run_linear_probe(model: BenchmarkModel, options, device, timer) -> tuple[dict, dict]:
    from lastvit.data.benchmarks.imagenet import class_folder_splits

    train, val = class_folder_splits(options.data_dir, eval_transform(model))
    train.limit(options.limit), val.limit(options.limit)
    train_x, train_y = _features(model, train, options, device, timer, "linear probe: train features")
    val_x, val_y = _features(model, val, options, device, timer, "linear probe: val features")
    generator = torch.Generator().manual_seed(0)
    probe = torch.nn.Linear(train_x.shape[1], len(train.classes)).to(device)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=0.0)
    steps_per_epoch = -(-len(train_x) // 1024)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, options.probe_epochs * steps_per_epoch)
    for _ in range(options.probe_epochs):
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), 1024):
            rows = order[start : start + 1024]
            loss = torch.nn.functional.cross_entropy(probe(train_x[rows].to(device).float()), train_y[rows].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        logits = probe(val_x.to(device).float()).cpu()
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices == val_y[:, None]
    metrics = {
        "top1": float(top[:, 0].float().mean()),
        f"top{k}": float(top.any(dim=1).float().mean()),
        "num_train_images": len(train),
        "num_images": len(val),
    }
    protocol = {
        "features": "pooled global feature, L2-normalised, from the evaluation transform (no augmentation)",
        "classifier": f"linear, AdamW lr 1e-3 cosine, batch 1024, {options.probe_epochs} epochs, seed 0",
        "note": "a frozen-feature probe, not DINO's augmented 100-epoch SGD recipe",
    }
    return metrics, protocol


RUNNERS = {
    "pib": run_pib,
    "corloc": run_corloc,
    "coarse-seg": run_coarse_seg,
    "zero-shot": run_zero_shot,
    "in9": run_in9,
    "knn": run_knn,
    "linear-probe": run_linear_probe,
}


def run_benchmark(options, model: BenchmarkModel | None = None) -> dict:
    """Run `options.benchmark` (a `lastvit.data.benchmarks.options.BenchmarkOptions`) and return the
    report: ``benchmark``, ``model``, ``data_dir``, ``metrics``, ``protocol``, ``throughput``, ``device``."""
    device = resolve_device(options.device)
    if model is None:
        model = load_benchmark_model(options.model, options.trust_remote_code)
    model.model.to(device)
    timer = Throughput(device)
    info = options.info
    metrics, protocol = RUNNERS[info.kind](model, options, device, timer)
    protocol = {"normalisation": {"mean": list(model.mean), "std": list(model.std)}, **protocol}
    return {
        "benchmark": options.benchmark,
        "summary": info.summary,
        "model": str(options.model),
        "model_kind": model.kind,
        "data_dir": str(options.data_dir),
        "limit": options.limit,
        "metrics": metrics,
        "protocol": protocol,
        "paper": info.paper,
        "throughput": {**timer.report(), "num_workers": options.num_workers, "batch_size": options.batch_size},
        "device": str(device),
    }
