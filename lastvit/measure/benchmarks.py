"""The paper's benchmarks on the datasets' own files (``lastvit-benchmark NAME``), streamed.

Each benchmark reads its set lazily (`lastvit.data.benchmarks`), decodes and resizes in DataLoader
workers, runs the model batch by batch and keeps only running counts (hits, confusion matrices,
per-image IoUs), so memory does not grow with the set (k-NN and the linear probe keep one pooled
feature per training image, which they need). The metrics are the library's: Point-in-Box
(`metrics.localisation.point_in_box`), CorLoc and the coarse-segmentation IoU (`metrics.localisation`
over `maps.coarse_segmentation`), the mIoU (`metrics.segmentation.confusion_matrix` / `mean_iou`),
DINO's k-NN (`pretrained_eval.knn_votes`).

Maps: ``patch_score`` is the cosine of each final patch token with the pooled global feature
(LaSt-ViT Eq. 3; the LazyStrike token for LaSt-ViT); ``patch_score_cls`` the cosine with the final
CLS output, what the authors' ``evaluate_patch_hit.py`` scores (its ``x[:, 0]``, even for LaSt checkpoints).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from .benchmark_model import MAP_NAMES, BenchmarkError, BenchmarkModel, load_benchmark_model
from .benchmark_streaming import (
    Throughput,
    eval_transform,
    groups,
    pad_to_patches,
    short_side_resize,
    square_resize,
    square_resize_labels,
    stream,
)
from .forward import autocast, resolve_device
from .grid import patches_to_pixels
from .maps import coarse_segmentation, foreground_boxes
from .metrics.accuracy import top_k_accuracy, top_k_hits
from .metrics.localisation import centre_patch_baseline, corloc_hits, mask_iou, point_in_box, random_patch_baseline

__all__ = ["RUNNERS", "BenchmarkError", "BenchmarkModel", "load_benchmark_model", "run_benchmark"]


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
        with timer.model(), torch.no_grad(), autocast(device):
            maps, out = model.maps(batch["pixel_values"].to(device))
        for name, scores in maps.items():
            hits[name] = hits.get(name, 0) + int(point_in_box(scores, batch["boxes"], batch["size"], *geometry).sum())
        baselines["random_patch"] += float(random_patch_baseline(batch["boxes"], batch["size"], *geometry).sum())
        baselines["centre_patch"] += float(centre_patch_baseline(batch["boxes"], batch["size"], *geometry).sum())
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
        for indices, pixels in groups(batch):
            with timer.model(), torch.no_grad(), autocast(device):
                maps, _ = model.maps(pixels.to(device))
            grid = (pixels.shape[-2] // patch[0], pixels.shape[-1] // patch[1])
            for name, scores in maps.items():
                predicted = foreground_boxes(coarse_segmentation(scores, grid), patch)
                clipped = [_clip_box(box, batch["size"][i]) for box, i in zip(predicted, indices)]
                found = corloc_hits(clipped, [batch["boxes"][i] for i in indices])
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
        with timer.model(), torch.no_grad(), autocast(device):
            maps, _ = model.maps(batch["pixel_values"].to(device))
        targets = np.stack(batch["target"])
        valid = targets != 255
        for name, scores in maps.items():
            predicted = patches_to_pixels(coarse_segmentation(scores, grid), patch)
            entry = totals.setdefault(name, {"jaccard": 0.0, "jaccard_void_ignored": 0.0})
            entry["jaccard"] += float(mask_iou(predicted, targets != 0).sum())
            entry["jaccard_void_ignored"] += float(mask_iou(predicted & valid, (targets != 0) & valid).sum())
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
        "metric": "per-image Jaccard of the foreground, averaged over every image (the reference loader drops "
        "its last incomplete batch; this does not)",
        "maps": {name: MAP_NAMES[name] for name in totals},
    }
    return metrics, protocol


def run_zero_shot(model: BenchmarkModel, options, device, timer) -> tuple[dict, dict]:
    from lastvit.data.benchmarks.segmentation_suites import SegmentationSuite, read_class_names, read_templates

    from .metrics.segmentation import confusion_matrix, mean_iou
    from .zero_shot_segmentation import predict_labels, window_cosines

    _require_clip(model, options)
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
    text = _text_embeddings(model, queries, templates, device)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for batch in stream(dataset, options, timer, options.benchmark):
        for image, target in zip(batch["pixel_values"], batch["target"]):
            with timer.model(), torch.no_grad(), autocast(device):
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


def run_zero_shot_classification(model: BenchmarkModel, options, device, timer) -> tuple[dict, dict]:
    from lastvit.data.benchmarks.imagenet import ImageNetBoxes
    from lastvit.data.benchmarks.segmentation_suites import read_class_names, read_templates

    _require_clip(model, options)
    names = [synonyms[0] for synonyms in read_class_names("zero_shot/imagenet_classes.txt")]
    dataset = ImageNetBoxes(options.data_dir, eval_transform(model, keep_native=False), single_object_filter=False)
    if len(dataset.synsets) != len(names):
        raise BenchmarkError(
            f"{options.data_dir} names {len(dataset.synsets)} classes; ImageNet zero-shot needs the 1000 of "
            "LOC_synset_mapping.txt (put it in the data folder)."
        )
    dataset.limit(options.limit)
    text = _text_embeddings(model, names, read_templates(), device)
    hits = torch.zeros(2)
    for batch in stream(dataset, options, timer, "imagenet-zeroshot"):
        with timer.model(), torch.no_grad(), autocast(device):
            image = model.model.get_image_features(pixel_values=batch["pixel_values"].to(device)).pooler_output
            logits = torch.nn.functional.normalize(image.float(), dim=-1) @ text.t()
        top = top_k_hits(logits.cpu(), torch.as_tensor(batch["label"]), 5)
        hits += torch.stack([top[:, 0].sum(), top.any(dim=1).sum()]).float()
    n = max(len(dataset), 1)
    metrics = {"top1": float(hits[0]) / n, "top5": float(hits[1]) / n, "num_images": len(dataset)}
    protocol = {
        "classes": "CLIP's 1000 ImageNet class names (zero_shot/imagenet_classes.txt), LOC_synset_mapping.txt order",
        "templates": "CLIP's 80 ImageNet templates; per class the mean of the normalised text embeddings, normalised",
        "preprocessing": f"Resize {round(model.image_size * 256 / 224)} (short side, bilinear) -> CenterCrop "
        f"{model.image_size}",
        "image_feature": "the projected global feature (image_embeds: the model's readout), normalised",
    }
    return metrics, protocol


def _require_clip(model: BenchmarkModel, options) -> None:
    if model.kind != "clip":
        raise BenchmarkError(
            f"{options.benchmark} needs an image-text model (a LastViT-CLIP folder with its tokenizer); "
            f"{options.model} is a {model.kind}."
        )


def _text_embeddings(model: BenchmarkModel, names: list[str], templates: list[str], device) -> torch.Tensor:
    """``[len(names), P]`` unit class embeddings (`zero_shot.class_text_embeddings`), 8 names (640 prompts)
    per call of the text tower."""
    from .zero_shot import class_text_embeddings

    with torch.no_grad(), autocast(device):
        return torch.cat(
            [
                class_text_embeddings(model.model, model.tokenizer, names[start : start + 8], templates).float()
                for start in range(0, len(names), 8)
            ]
        )


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
            with timer.model(), torch.no_grad(), autocast(device):
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
        with timer.model(), torch.no_grad(), autocast(device):
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
    # the bank stays half precision on the GPU (ImageNet: 1.28M x D x 2 bytes); the CPU multiplies in fp32
    bank_dtype = torch.float16 if device.type == "cuda" else torch.float32
    bank, bank_labels = bank.to(device, bank_dtype), bank_labels.to(device)
    correct = 0
    for batch in stream(val, options, timer, "knn: val"):
        with timer.model(), torch.no_grad(), autocast(device):
            query = torch.nn.functional.normalize(model.forward(batch["pixel_values"].to(device))["pooled"], dim=-1)
            votes = knn_votes(bank, bank_labels, query.to(bank_dtype), len(train.classes), options.knn_k).float()
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
    metrics = {
        **{f"top{k}": value for k, value in top_k_accuracy(logits, val_y, (1, 5)).items()},
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
    "zero-shot-cls": run_zero_shot_classification,
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
    from lastvit import __version__

    return {
        "benchmark": options.benchmark,
        "lastvit_version": __version__,
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
