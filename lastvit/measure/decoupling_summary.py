"""Summaries of the Lappe & Giese measurements: per-image tensors (what
`lastvit.measure.decoupling` measures) in, the JSON-ready numbers of the report out."""

from __future__ import annotations

import math

import numpy as np
import torch

from .lappe_giese import (
    gram_decomposition,
    linear_cka,
    nearest_class_mean_accuracy,
    register_image_dependence,
)

PATCH_ONLY_POOLINGS = ("lazystrike", "mean", "max")
PARTS = ("o_full", "o_patch", "o_reg", "o_cls_self")
VARIANTS = {"": "before the output projection", "_after_projection": "after the output projection and LayerScale"}
ONE_SHOT_KS = (1, 5)


def json_ready(value):
    """NaN / inf -> None, tensors and numpy scalars -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return json_ready(np.asarray(value).tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def stats(values) -> dict:
    """Mean and population std of per-image values."""
    array = np.asarray(torch.as_tensor(values).double().cpu())
    return {"mean": float(array.mean()), "std": float(array.std())}


def contribution_numbers(per_image: dict, registers: int, na: dict) -> dict:
    """Norms, CKA and the Gram decomposition of the masked contributions, in both variants."""
    numbers = {}
    skip = per_image["o_skip"]
    for suffix in VARIANTS:
        o = {name: per_image[name + suffix] for name in PARTS}
        norms = {name: value.norm(dim=-1) for name, value in {**o, "o_skip": skip}.items()}
        numbers["contribution_norms" + suffix] = {name: stats(value) for name, value in norms.items()}
        numbers["contribution_norms" + suffix]["skip_to_patch_ratio"] = stats(
            norms["o_skip"] / norms["o_patch"].clamp_min(1e-12)
        )
        cka = {f"o_full_vs_{name}": linear_cka(o["o_full"], o[name]) for name in ("o_patch", "o_cls_self")}
        cka["o_full_vs_o_skip"] = linear_cka(o["o_full"], skip)
        if suffix:  # o_skip + o_full is the CLS token after the attention sub-block only in the residual space
            cka["residual_vs_o_patch"] = linear_cka(skip + o["o_full"], o["o_patch"])
            cka["residual_vs_o_skip"] = linear_cka(skip + o["o_full"], skip)
        if registers:
            cka["o_full_vs_o_reg"] = linear_cka(o["o_full"], o["o_reg"])
        else:
            cka["o_full_vs_o_reg"] = math.nan
            na[f"cka{suffix}.o_full_vs_o_reg"] = (
                "the model has no register tokens, so o_reg is 0 and CKA is undefined."
            )
        for name, value in cka.items():
            if not math.isfinite(value) and f"cka{suffix}.{name}" not in na:
                na[f"cka{suffix}.{name}"] = "one side is constant over the images, so CKA is undefined."
        numbers["cka" + suffix] = cka
        gram = gram_decomposition(o["o_patch"], o["o_reg"] + o["o_cls_self"])
        numbers["gram" + suffix] = {
            **gram.shares,
            "cross": gram.shares["patch_reg"] + gram.shares["reg_patch"],
            "patch_cosine": stats(gram.patch_cosine),
            "register_part": "o_reg + o_cls_self" if registers else "o_cls_self (no registers)",
        }
    return numbers


def register_numbers(per_image: dict) -> dict:
    numbers = {"layer": "output of the penultimate block (the last block's input)", "per_register": []}
    views = {"raw": "penultimate_registers", "after_norm1": "penultimate_registers_norm1"}
    measured = {view: register_image_dependence(per_image[key]) for view, key in views.items()}
    for r in range(per_image["penultimate_registers"].shape[1]):
        numbers["per_register"].append(
            {view: {name: float(value[r]) for name, value in m._asdict().items()} for view, m in measured.items()}
        )
    for view, m in measured.items():
        numbers[view] = {
            "most_often_highest_norm": int(m.top_norm_share.argmax()),
            "highest_norm_share": float(m.top_norm_share.max()),
            "mean_pairwise_cosine": float(m.mean_pairwise_cosine.mean()),
            "min_pairwise_cosine": float(m.mean_pairwise_cosine.min()),
        }
    return numbers


def norm_numbers(per_image: dict, norm_threshold: float | None, norm_threshold_std: float) -> dict:
    all_norms = per_image["patch_norms"]
    if norm_threshold is None:
        threshold = float(all_norms.mean() + norm_threshold_std * all_norms.std(correction=0))
        rule = f"mean + {norm_threshold_std:g} std of all final patch-token norms of the set"
    else:
        threshold, rule = float(norm_threshold), "given (--norm-threshold)"
    high = (all_norms > threshold).sum(dim=1).float()
    numbers = {
        "tokens": "final patch tokens (after the final LayerNorm, what the pooler reads)",
        "threshold": threshold,
        "threshold_rule": rule,
        "max_norm": stats(all_norms.amax(dim=1)),
        "overall_max_norm": float(all_norms.max()),
        "mean_norm": stats(all_norms.mean(dim=1)),
        "max_abs_value": stats(per_image["max_abs_value"]),
        "high_norm_per_image": stats(high),
        "high_norm_total": int(high.sum()),
        "images_with_high_norm": float((high > 0).double().mean()),
        "pre_norm_max_norm": stats(per_image["pre_norm_max_norm"]),
    }
    if "register_norms" in per_image:
        numbers["register_norm"] = stats(per_image["register_norms"])
    return numbers


def readout_numbers(config, per_image: dict) -> dict:
    readout = {
        "pooling": config.pooling,
        "patch_only_by_construction": config.pooling in PATCH_ONLY_POOLINGS,
        "cka_pooled_vs_patch_mean": linear_cka(per_image["pooled"], per_image["patch_mean"]),
    }
    if config.pooling in PATCH_ONLY_POOLINGS:
        readout["note"] = (
            f"The pooled feature ({config.pooling}) is computed from the final patch tokens only, never from the CLS "
            "or register tokens: Lappe & Giese's patch integration assumption holds at the readout by construction "
            "(the patch tokens themselves still mixed with every token in earlier layers)."
        )
    else:
        readout["note"] = (
            "The pooled feature is the final CLS token: whether it integrates the patches is what the CKA and Gram "
            "numbers above measure."
        )
    if config.use_cls_token:
        readout["cka_pooled_vs_final_cls"] = linear_cka(per_image["pooled"], per_image["final_cls"])
    if "selected_mean" in per_image:
        readout["cka_pooled_vs_selected_patches"] = linear_cka(per_image["pooled"], per_image["selected_mean"])
        readout["selected_patches_max_abs_diff"] = float(per_image["selection_error"].max())
        if config.pooler_dense_act:
            readout["selected_patches_note"] = "compared before the dense pooler layer; CKA uses the pooler output"
    return readout


def one_shot_numbers(train: dict, test: dict, train_labels, test_labels, source: str | None = None) -> dict:
    """The one-shot decoding test from measured o_* of the training and test images: a cosine
    nearest-class-mean readout fitted on o_full of the training images (one per class: the mean is
    that image's vector), tested on o_full (the ceiling), o_patch, o_reg and o_cls_self."""
    train_labels, test_labels = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
    classes = sorted(set(train_labels.tolist()))
    per_class = np.bincount(train_labels.numpy())
    numbers = {
        "readout": "cosine nearest class mean fitted on o_full of the training images (one image per class: "
        "the class mean is that image's vector, i.e. cosine nearest neighbour)",
        "num_classes": len(classes),
        "train_images": len(train_labels),
        "test_images": len(test_labels),
        "train_images_per_class": int(per_class[per_class > 0].max()),
        "chance": {f"top{k}": min(k, len(classes)) / len(classes) for k in ONE_SHOT_KS},
        "source": source,
    }
    for suffix in VARIANTS:
        accuracy = {}
        for name in PARTS:
            hits = nearest_class_mean_accuracy(
                train["o_full" + suffix], train_labels, test[name + suffix], test_labels, ONE_SHOT_KS
            )
            accuracy[name] = {f"top{k}": value for k, value in hits.items()}
        numbers["accuracy" + suffix] = accuracy
    return numbers
