"""The Lappe & Giese report: `analysis.json` (every number), `analysis.md` (tables with a line on each
measurement, and the figures) and PNG figures, written atomically from what
`lastvit.measure.decoupling.analyze` returns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .decoupling import AnalysisError, AnalysisResults, json_ready

JSON_NAME, MARKDOWN_NAME = "analysis.json", "analysis.md"

# One line per measurement, for the report's first table.
EXPLAIN = {
    "attention_share.cls_self": "last-layer CLS attention to itself (head-averaged, post-softmax)",
    "attention_share.registers": "last-layer CLS attention summed over register tokens",
    "attention_share.patches": "last-layer CLS attention summed over patch tokens (the three shares sum to 1)",
    "attention_share_without_self.registers": (
        "register share of CLS attention with self-attention left out (Lappe & Giese's reg/patch split)"
    ),
    "cls_cosine.penultimate": "cos(CLS after block L-1, CLS after block L): near 1 = CLS done before the last block",
    "cls_cosine.last_layer_jump": "1 - that cosine: how much the last layer still moves the CLS token",
    "token_norms.max_norm": "largest final (post-LN) patch-token L2 norm per image",
    "token_norms.mean_norm": "mean final patch-token L2 norm",
    "token_norms.max_abs_value": "largest absolute entry of any final patch token per image (LaSt-ViT Fig. 6)",
    "token_norms.high_norm_per_image": "patch tokens per image with norm above the threshold",
    "token_norms.images_with_high_norm": "share of images with at least one high-norm patch token",
    "token_norms.register_norm": "mean final register-token L2 norm",
    "readout.cka_pooled_vs_patch_mean": "linear CKA of the pooled feature with the mean of the final patch tokens",
    "readout.cka_pooled_vs_final_cls": "linear CKA of the pooled feature with the final (post-LN) CLS token",
    "readout.cka_pooled_vs_selected_patches": (
        "linear CKA of the pooled feature with the mean of the patches it selected (1 by construction)"
    ),
    "localisation.cls_attention_pib": "Point-in-Box: the arg-max of last-layer CLS->patch attention is in the GT box",
    "localisation.readout_pib": "Point-in-Box of the readout map (LazyStrike/max votes, else cos(patch, global))",
    "localisation.random_patch_pib": "Point-in-Box of a random patch (baseline)",
}

# The masked contributions, in two columns: before the output projection (the paper) and after it.
CONTRIBUTIONS = {
    "contribution_norms.o_full": "‖o_full‖: the CLS token's attention output",
    "contribution_norms.o_patch": "‖o_patch‖: the part carried by attention to patches",
    "contribution_norms.o_reg": "‖o_reg‖: the part carried by attention to registers",
    "contribution_norms.o_cls_self": "‖o_cls_self‖: the part carried by CLS attention to itself",
    "contribution_norms.o_skip": "‖o_skip‖: the CLS residual input of the last layer (the skip path; one value)",
    "contribution_norms.skip_to_patch_ratio": "‖o_skip‖ / ‖o_patch‖ per image (Lappe & Giese §4; > 1: skip dominates)",
    "cka.o_full_vs_o_patch": "linear CKA over images: does the patch part alone explain o_full? (1 = yes)",
    "cka.o_full_vs_o_reg": "linear CKA of o_full with the register part",
    "cka.o_full_vs_o_cls_self": "linear CKA of o_full with the CLS self part",
    "cka.o_full_vs_o_skip": "linear CKA of o_full with the skip path",
    "cka.residual_vs_o_patch": "CKA of o_skip + o_full (the CLS after the attention sub-block) with patch-only",
    "cka.residual_vs_o_skip": "CKA of o_skip + o_full with skip-only",
    "gram.patch_patch": (
        "share of ‖XXᵀ‖² in X_p X_pᵀ (rows: images; X = o_full, X_p = o_patch): the only term attention maps explain"
    ),
    "gram.cross": "share in the cross terms X_p X_rᵀ + X_r X_pᵀ (X_r = o_reg + o_cls_self)",
    "gram.reg_reg": "share in X_r X_rᵀ (registers and CLS self); patch_patch + cross + reg_reg = 1",
    "gram.patch_cosine": "cos(o_patch, o_full) per image",
}

PROJECTION_NOTE = (
    "Two variants. **Before the output projection** (the default, the paper's Eq. 1-2): "
    "o_S = Σ_{i∈S} a_i v_i, the attention-weighted values, heads concatenated. **After the output projection**: "
    "LayerScale(W_o o_S + b_o m_S), what the branch adds to the CLS token's residual stream (m_S: the attention "
    "mass on S, which assigns the bias). Linear CKA and norms are not invariant to the anisotropic map W_o and "
    "LayerScale, so the two columns differ; small LayerScale values (DINOv2) shrink the branch after the "
    "projection and inflate the skip-to-patch ratio there. ‖o_skip‖ is the same in both columns; the "
    "`residual_vs_*` rows exist only after the projection, where o_skip + o_full is the real CLS token."
)


def _format(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, dict) and "mean" in value:
        return f"{_format(value['mean'])} ± {_format(value['std'])}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _lookup(numbers: dict, dotted: str):
    value = numbers
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _cell(text: str) -> str:
    return text.replace("|", chr(92) + "|")


def _contribution_lines(numbers: dict) -> list[str]:
    lines = ["## Masked contributions (Lappe & Giese Eq. 1-2, §3-4)", "", PROJECTION_NOTE, ""]
    lines += ["| measurement | before projection (paper) | after projection | what it says |", "|---|---|---|---|"]
    for key, explanation in CONTRIBUTIONS.items():
        section, name = key.split(".")
        before = _lookup(numbers, f"{section}.{name}")
        after = _lookup(numbers, f"{section}_after_projection.{name}")
        if before is None and after is None and f"{section}.{name}" not in numbers["not_applicable"]:
            continue
        lines.append(f"| `{key}` | {_format(before)} | {_format(after)} | {_cell(explanation)} |")
    return lines + [""]


def _one_shot_lines(one_shot: dict) -> list[str]:
    chance = one_shot["chance"]
    lines = [
        "## One-shot decoding test (Lappe & Giese §3)",
        "",
        (
            f"Readout: {one_shot['readout']}. {one_shot['num_classes']} classes, {one_shot['train_images']} training "
            f"and {one_shot['test_images']} test images ({one_shot.get('source') or 'given by the caller'}). The readout "
            "is fitted on o_full of the training images and applied to each part of the test images: if the global "
            "output were integrated from the patches, o_patch would decode about as well as o_full (the ceiling). "
            f"Chance: top-1 {_format(chance['top1'])}, top-5 {_format(chance['top5'])}."
        ),
        "",
        "| tested on | top-1 | top-5 | top-1 after projection | top-5 after projection |",
        "|---|---|---|---|---|",
    ]
    before, after = one_shot["accuracy"], one_shot["accuracy_after_projection"]
    for name in before:
        b, a = before[name], after[name]
        lines.append(f"| `{name}` | {_format(b['top1'])} | {_format(b['top5'])} | {_format(a['top1'])} | "
                     f"{_format(a['top5'])} |")  # fmt: skip
    return lines + [""]


def _register_lines(registers: dict) -> list[str]:
    lines = [
        "## Register image-dependence (Lappe & Giese §3)",
        "",
        (
            f"Register tokens at the {registers['layer']}, raw and after the last block's norm1 (what its q/k/v see). "
            "Highest-norm share: how often this register has the largest norm of all registers. Mean pairwise cosine: "
            "between the register's vectors of two different images (1 = the same vector for every image). Raw "
            "cosines near 1 with lower normalised ones mean a few large dimensions hide image information that the "
            "LayerNorm exposes."
        ),
        "",
        (
            "| register | highest-norm share | mean norm rank | mean norm | mean pairwise cosine | "
            "after norm1: highest-norm share | after norm1: mean pairwise cosine |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for index, entry in enumerate(registers["per_register"]):
        raw, normed = entry["raw"], entry["after_norm1"]
        lines.append(
            f"| {index} | {_format(raw['top_norm_share'])} | {_format(raw['mean_rank'])} | {_format(raw['mean_norm'])}"
            f" | {_format(raw['mean_pairwise_cosine'])} | {_format(normed['top_norm_share'])} | "
            f"{_format(normed['mean_pairwise_cosine'])} |"
        )
    return lines + [""]


def render_markdown(numbers: dict, title: str | None = None) -> str:
    """`analysis.md` from the numbers (JSON-ready, with ``numbers["figures"]``)."""
    model, data = numbers["model"], numbers["data"]
    lines = [f"# {title or 'Lappe & Giese analysis'}", ""]
    if data.get("model_path"):
        lines += [f"Model: `{data['model_path']}`", ""]
    layout = "CLS" if model["use_cls_token"] else "no CLS"
    boxes = " (with ground-truth boxes)" if data.get("has_boxes") else ""
    lines += [
        f"- architecture: {model['num_hidden_layers']} blocks, width {model['hidden_size']}, "
        + f"{model['num_attention_heads']} heads, {layout}, {model['num_register_tokens']} registers, "
        + f"LayerScale {'on' if model['layerscale'] else 'off'}, pooling `{model['pooling']}`",
        f"- input {model['input_size'][0]}x{model['input_size'][1]} px, patches "
        + f"{model['patch_size'][0]}x{model['patch_size'][1]} ({model['num_patches']} per image)",
        f"- images: {data['num_images']} from {data.get('source', 'the caller')}{boxes}",
        f"- measured at the last layer (block {numbers['analysed_layer'] + 1}); mean ± std over images "
        + "where a value is per image",
        "",
        "## Numbers",
        "",
        "| measurement | value | what it says |",
        "|---|---|---|",
    ]
    for key, explanation in EXPLAIN.items():
        value = _lookup(numbers, key)
        if value is None and key not in numbers["not_applicable"]:
            continue  # a measurement this model does not have (e.g. register norms without registers)
        lines.append(f"| `{key}` | {_format(value)} | {_cell(explanation)} |")
    norms = numbers["token_norms"]
    lines += ["", f"High-norm threshold: {norms['threshold']:.4g} ({norms['threshold_rule']}).", ""]
    if "cls_cosine" in numbers:
        cosine = numbers["cls_cosine"]
        curve = ", ".join(f"{name}: {mean:.3f}" for name, mean in zip(cosine["layer_names"], cosine["mean"]))
        lines += [f"Layerwise cos(CLS_l, CLS_L), mean over images: {curve}.", ""]
    if "cka" in numbers:
        lines += _contribution_lines(numbers)
    if "one_shot" in numbers:
        lines += _one_shot_lines(numbers["one_shot"])
    if "register_dependence" in numbers:
        lines += _register_lines(numbers["register_dependence"])
    lines += ["## Readout (the LaSt-ViT link)", "", numbers["readout"]["note"], ""]
    if "cls_note" in numbers:
        lines += [numbers["cls_note"], ""]
    if numbers["not_applicable"]:
        lines += ["## Not applicable", ""]
        by_reason: dict[str, list[str]] = {}
        for name, reason in numbers["not_applicable"].items():
            by_reason.setdefault(reason, []).append(f"`{name}`")
        lines += [f"- {', '.join(names)}: {reason}" for reason, names in by_reason.items()]
        lines.append("")
    if numbers.get("checks"):
        lines += ["## Checks", ""]
        lines += [f"- `{name}`: {_format(value)}" for name, value in numbers["checks"].items()]
        lines.append("")
    captions = {
        "cls_attention": "Last-layer CLS→patch attention (head-averaged) over the image; green: ground-truth box, "
        "white: arg-max patch.",
        "readout_map": f"Readout map: {numbers['readout_map']}.",
        "cls_cosine": "Cosine of each layer's CLS token with the final one (mean ± std over images).",
        "norm_histogram": "Final patch-token L2 norms over all images; dashed: the high-norm threshold.",
    }
    figures = numbers.get("figures") or {}
    if figures:
        lines += ["## Figures", ""]
        for kind, names in figures.items():
            lines += [captions.get(kind, kind), ""]
            lines += [f"![{kind} {i}]({name})" for i, name in enumerate(names)]
            lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def _plot_cls_cosine(cosine: torch.Tensor, path: Path) -> Path:
    """Mean (and +-1 std band) of cos(CLS_l, CLS_L) over images, per layer."""
    from lastvit.measure.plots import _figure, _save

    mean, std = cosine.mean(dim=0).numpy(), cosine.std(dim=0, correction=0).numpy()
    layers = np.arange(len(mean))
    figure = _figure(5, 4)
    axis = figure.subplots()
    axis.plot(layers, mean, marker="o", color="tab:blue", label="mean over images")
    axis.fill_between(layers, mean - std, mean + std, color="tab:blue", alpha=0.2, label="+-1 std")
    axis.set_xticks(layers)
    axis.set_xticklabels(["emb"] + [str(i) for i in layers[1:]])
    axis.set_xlabel("layer (block output)")
    axis.set_ylabel("cos(CLS_l, CLS_L)")
    axis.set_ylim(min(-0.05, float((mean - std).min()) - 0.05), 1.05)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title("layerwise CLS cosine to the final CLS")
    return _save(figure, path)


def draw_figures(results: AnalysisResults, folder: Path, progress: bool = False) -> dict[str, list[str]]:
    """The report's PNGs in `folder`: attention and readout maps over the first images, the layerwise
    CLS cosine and the norm histogram. Returns ``{kind: [file names]}``."""
    from tqdm.auto import tqdm

    from lastvit.measure.plots import plot_norm_histogram, plot_patch_map

    arrays = results.arrays
    figures: dict[str, list[str]] = {"cls_attention": [], "readout_map": [], "cls_cosine": [], "norm_histogram": []}
    images, boxes = arrays["images"], arrays["boxes"]
    display = {"mean": arrays["image_mean"], "std": arrays["image_std"], "grid": arrays["grid"]}
    jobs = []
    for i in range(len(images)):
        box = boxes[i] if boxes is not None else None
        if "cls_patch_attention" in arrays:
            title = f"image {i}: last-layer CLS->patch attention"
            jobs.append(("cls_attention", i, arrays["cls_patch_attention"][i], box, title))
        jobs.append(("readout_map", i, arrays["readout_map"][i], box, f"image {i}: {results.numbers['readout_map']}"))
    for kind, i, values, box, title in tqdm(jobs, desc="figures", unit="png", disable=not progress):
        name = f"{kind}_{i}.png"
        plot_patch_map(images[i], values, folder / name, box=box, title=title, **display)
        figures[kind].append(name)
    if "cls_cosine" in arrays:
        _plot_cls_cosine(arrays["cls_cosine"], folder / "cls_cosine.png")
        figures["cls_cosine"].append("cls_cosine.png")
    threshold = results.numbers["token_norms"]["threshold"]
    path = folder / "norm_histogram.png"
    plot_norm_histogram(arrays["patch_norms"], path, threshold=threshold, title="final patch-token norms")
    figures["norm_histogram"].append("norm_histogram.png")
    return {kind: names for kind, names in figures.items() if names}


def write_report(
    results: AnalysisResults,
    output_dir,
    *,
    overwrite: bool = False,
    title: str | None = None,
    progress: bool = True,
) -> Path:
    """Write `analysis.json`, `analysis.md` and the PNG figures into `output_dir`, atomically (into a
    staging folder that is then renamed into place). A non-empty `output_dir` is refused unless
    `overwrite`. Returns the folder."""
    from lastvit.files import write_folder

    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise AnalysisError(f"{output_dir} is a file; choose a folder for the report.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise AnalysisError(
            f"{output_dir} already holds files; pass --overwrite (overwrite=True) to replace them or choose another "
            "folder."
        )

    def write(folder: Path) -> None:
        numbers = dict(results.numbers)
        numbers["figures"] = draw_figures(results, folder, progress)
        (folder / JSON_NAME).write_text(AnalysisResults(numbers).to_json() + "\n")
        (folder / MARKDOWN_NAME).write_text(render_markdown(json_ready(numbers), title) + "\n")

    write_folder(output_dir, write)
    return output_dir


__all__ = ["JSON_NAME", "MARKDOWN_NAME", "draw_figures", "render_markdown", "write_report"]
