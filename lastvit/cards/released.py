"""The cards of the authors' three released LaSt-ViT checkpoints, committed in `model_cards/<name>/`.

Regenerate them (a maintainer's step after changing this module or the template) with

    python -c "from lastvit.cards.released import write_released_cards; write_released_cards('model_cards')"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import ModelCard

from modeling_lastvit import LastViTConfig

from .template import AUTHORS_REPO, PAPER, PAPER_URL, common_tail, describe_config, render_model_card

# Download links as listed in the authors' README (the supervised weights sit in a second release).
RELEASE_URLS = {
    "ViT_190k.pth": f"{AUTHORS_REPO}/releases/download/weights2/ViT_190k.pth",
    "dino0080.pth": f"{AUTHORS_REPO}/releases/download/weights/dino0080.pth",
    "openai_b_16.pt": f"{AUTHORS_REPO}/releases/download/weights/openai_b_16.pt",
}


@dataclass(frozen=True)
class ReleasedCheckpoint:
    name: str
    title: str
    source: str  # lastvit-convert --from
    file_name: str
    flags: tuple[str, ...]
    config: dict  # the LastViTConfig the conversion gives (checked against the converter in the tests)
    classifier: bool
    what: str
    training: str
    reported: str
    limitations: str
    datasets: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return RELEASE_URLS[self.file_name]

    @property
    def command(self) -> str:
        return " ".join(
            [
                "lastvit-convert",
                "--from",
                self.source,
                "--input",
                self.file_name,
                "--output",
                self.name,
                *self.flags,
                "--released",
                self.name,
            ]
        )


_K_CAVEAT = (
    "The K these weights were trained with is not stated in the paper or the repository; the command uses K = 1, "
    "the value in the repository README's LazyStrike snippet and in the released supervised configuration. The "
    "paper's Tab. 8 (OpenCLIP ViT-B/16) finds K = 98 (half of the 196 patches) best for zero-shot ImageNet and K = 49 "
    "about as good. LazyStrike has no parameters, so K can be changed when loading."
)

_COMMON_LIMITATIONS = (
    "- This package has not evaluated these weights; every number above is the paper's.\n"
    "- The converter's parity is tested on small randomly initialised models with the same key layout, against "
    "independent re-implementations of the source forward (within 1e-5 absolute in fp32; "
    "`tests/test_conversion_torchvision.py`, `tests/test_conversion_dino.py`, `tests/test_conversion_openclip.py` "
    "in this package's repository), not on the released file itself, which no test downloads. When it writes a "
    "folder, the converter checks that the folder reloads to identical outputs and records that in its card.\n"
    "- The paper evaluates at 224 px. Other input sizes divisible by 16 work, with the position embeddings "
    "resized by the rule in the first point above."
)

RELEASED_CHECKPOINTS: dict[str, ReleasedCheckpoint] = {
    spec.name: spec
    for spec in (
        ReleasedCheckpoint(
            name="lastvit-vit-b16-supervised",
            title="LaSt-ViT ViT-B/16, label-supervised (ImageNet-1k)",
            source="torchvision",
            file_name="ViT_190k.pth",
            flags=("--pooling", "lazystrike", "--top-k", "1"),
            config={"layer_norm_eps": 1e-6, "pooling": "lazystrike", "lazystrike_top_k": 1, "num_labels": 1000},
            classifier=True,
            datasets=("imagenet-1k",),
            what=(
                "A ViT-B/16 image classifier trained from scratch on ImageNet-1k with LazyStrike replacing the CLS "
                "readout: the classifier reads, for every channel, the patch whose value is most stable under a "
                "channel-axis low-pass filter (K = 1), instead of the CLS token. The authors released it as "
                f"[`ViT_190k.pth`]({RELEASE_URLS['ViT_190k.pth']}) ({AUTHORS_REPO}); it is a torchvision `VisionTransformer` "
                "state dict (detectron2 may wrap it, with a `model.` prefix)."
            ),
            training=(
                "From the authors' `cls_pretrain/conf.py` (detectron2 LazyConfig) as summarised from the paper and "
                "code: torchvision ViT-B/16 from scratch at 224 px (12 blocks, 12 heads, width 768, MLP 3072), "
                "cross-entropy; AdamW, lr 1e-3, weight decay 0.3, betas (0.9, 0.95); warm-up over 1% of the "
                "iterations (factor 0.1), then cosine decay to 0.001; batch 512 per GPU x 8 = 4096; "
                "`max_iter = 100 * 1281167 // 512 // 8 = 31,278` (about 100 epochs); augmentation only "
                "RandomResizedCrop(224) and horizontal flip; evaluation Resize(256), CenterCrop(224), ImageNet "
                "mean/std. The file name (`190k`) does not match 31,278 iterations, so the real schedule is uncertain."
            ),
            reported=(
                "Reported by the paper (not measured by this package):\n\n"
                "| Metric (paper table) | ViT-B/16 | LaSt-ViT-B/16 |\n|---|---|---|\n"
                "| Point-in-Box, ImageNet val (Tab. 3) | 42.7 | 55.1 |\n"
                "| Coarse segmentation, VOC12 val (Tab. 6) | 22.3 | 32.8 |\n\n"
                "Point-in-Box is the share of single-object images whose highest-scoring patch (cosine to the "
                "global feature) lies inside the ground-truth box."
            ),
            limitations=(
                "- Resizing: bicubic to the target grid (torchvision's ViT itself runs only at 224 px).\n"
                "- Trained at 224 px on ImageNet-1k only, with a light-augmentation recipe; the paper studies its "
                "localisation (patch features, Point-in-Box) and this card quotes no accuracy for it.\n"
                "- The converted folder has no class names (`id2label` is `LABEL_0` ... `LABEL_999` in ImageNet "
                "index order).\n" + _COMMON_LIMITATIONS
            ),
        ),
        ReleasedCheckpoint(
            name="lastvit-dino-vit-b16",
            title="LaSt-ViT ViT-B/16, self-supervised with DINO",
            source="dino",
            file_name="dino0080.pth",
            flags=("--pooling", "lazystrike", "--top-k", "1", "--checkpoint-key", "teacher"),
            config={
                "layer_norm_eps": 1e-6,
                "pooling": "lazystrike",
                "lazystrike_top_k": 1,
                "position_embedding_interpolation_offset": 0.1,
            },
            classifier=False,
            what=(
                "A ViT-B/16 feature extractor trained with DINO self-distillation "
                "(github.com/facebookresearch/dino) with LazyStrike replacing the CLS output of the backbone. "
                f"The authors released it as [`dino0080.pth`]({RELEASE_URLS['dino0080.pth']}) ({AUTHORS_REPO}). The "
                "converter takes the teacher network (the one DINO evaluates) and drops the DINO projection head."
            ),
            training=(
                "The paper only says that the CLS pooling is replaced while training with the upstream "
                "facebookresearch/dino code; the recipe is not given, nor whether training started from scratch or "
                "from a DINO checkpoint (the file name suggests epoch 80 of a DINO run). Where exactly LazyStrike "
                "sits is our reading: on the final, normed patch tokens that feed the DINO head, for student and "
                "teacher alike.\n\n" + _K_CAVEAT
            ),
            reported=(
                "Reported by the paper (not measured by this package):\n\n"
                "| Metric (paper table) | DINO ViT-B/16 | LaSt-ViT DINO ViT-B/16 |\n|---|---|---|\n"
                "| Point-in-Box, ImageNet val (Tab. 3) | 44.5 | 69.7 |\n\n"
                "Tab. 1 of the paper lists the DINO ViT baseline at 45.3 rather than 44.5. The paper's DINO "
                "coarse-segmentation and CorLoc results (Tabs. 6-7) are for ViT-S/16, not this model."
            ),
            limitations=(
                "- A feature extractor: no classifier. Use the global feature, the patch tokens or the "
                "LazyStrike vote map (`patch_votes`).\n"
                "- Resizing: as the original DINO code does (bicubic, scale factor with a 0.1 offset), so features "
                "at other sizes match the DINO codebase.\n" + _COMMON_LIMITATIONS
            ),
        ),
        ReleasedCheckpoint(
            name="lastvit-clip-vit-b16",
            title="LaSt-ViT CLIP ViT-B/16 (visual tower)",
            source="openclip",
            file_name="openai_b_16.pt",
            flags=("--pooling", "lazystrike", "--top-k", "1", "--clip-activation", "quick_gelu"),
            config={
                "layer_norm_eps": 1e-5,
                "hidden_act": "quick_gelu",
                "use_pre_norm": True,
                "projection_dim": 512,
                "pooling": "lazystrike",
                "lazystrike_top_k": 1,
            },
            classifier=False,
            what=(
                "The visual tower of an OpenAI CLIP ViT-B/16 trained with open_clip "
                "(github.com/mlfoundations/open_clip) with LazyStrike replacing the CLS pooling. The authors "
                f"released it as [`openai_b_16.pt`]({RELEASE_URLS['openai_b_16.pt']}) ({AUTHORS_REPO}); the converter "
                "reads pickled open_clip checkpoints and TorchScript archives (without running their code), keeps "
                "the visual tower (`ln_pre`, blocks with QuickGELU, `ln_post`, `proj`) and drops the text tower."
            ),
            training=(
                "The paper only says that the CLS pooling is replaced while training with the upstream open_clip "
                "code; the recipe is not given. Where LazyStrike sits is our reading: on the `ln_post`-normed patch "
                "tokens, followed by `proj` (`image_embeds`), the same `ln_post` / `proj` that zero-shot "
                "segmentation applies to every patch token.\n\n" + _K_CAVEAT
            ),
            reported=(
                "Reported by the paper (not measured by this package):\n\n"
                "| Metric (paper table) | CLIP ViT-B/16 | LaSt-ViT CLIP ViT-B/16 |\n|---|---|---|\n"
                "| Point-in-Box, ImageNet val (Tab. 3) | 39.8 | 50.1 |\n"
                "| Zero-shot segmentation mIoU, VOC20 (Tab. 4) | 49.0 | 75.0 |\n"
                "| Zero-shot segmentation mIoU, COCO-Object (Tab. 4) | 8.8 | 13.3 |\n"
                "| Zero-shot segmentation mIoU, ADE20K (Tab. 4) | 3.1 | 8.3 |\n"
                "| Zero-shot segmentation mIoU, Cityscapes (Tab. 4) | 6.5 | 12.1 |\n"
                "| Zero-shot segmentation mIoU, Context59 (Tab. 4) | 11.2 | 15.2 |\n"
                "| Zero-shot segmentation mIoU, COCO-Stuff (Tab. 4) | 7.2 | 11.8 |\n"
                "| Open-vocabulary detection OV-COCO novel AP50, F-ViT with frozen backbone (Tab. 5) | 17.5 | 33.3 |\n"
                "| Open-vocabulary detection LVIS mask AP, rare classes (Tab. 5) | 11.5 | 22.8 |"
            ),
            limitations=(
                "- Visual tower only: zero-shot classification and segmentation need the matching text tower, "
                "which stays in the original file (load it with open_clip); `image_embeds` live in that joint space.\n"
                "- The MLP activation is QuickGELU, as in OpenAI's CLIP weights that open_clip starts from.\n"
                "- Preprocessing is OpenAI CLIP's: bicubic resize of the short side to 224, centre crop, "
                "CLIP mean/std.\n"
                "- Resizing: bicubic to the target grid, as transformers' CLIP does (OpenAI's code runs only "
                "at 224 px).\n" + _COMMON_LIMITATIONS
            ),
        ),
    )
}


def _released_sections(spec: ReleasedCheckpoint) -> list[tuple[str, str]]:
    return [
        ("What it is", spec.what),
        ("How it was trained", spec.training),
        ("Results reported by the paper", spec.reported),
    ]


_RELEASED_LICENCE = (
    "MIT, the licence of the authors' repository that distributes these weights (" + AUTHORS_REPO + "). The "
    "upstream training code has its own licence (torchvision BSD-3-Clause, facebookresearch/dino Apache-2.0, "
    "open_clip and OpenAI CLIP MIT); check them for your use."
)


def released_model_card(name: str, parity_lines: list[str] | None = None) -> ModelCard:
    """The card of one of the authors' released checkpoints, as committed in `model_cards/<name>/`."""
    spec = RELEASED_CHECKPOINTS[name]
    config = LastViTConfig(
        **spec.config, architectures=["LastViTForImageClassification" if spec.classifier else "LastViTModel"]
    )
    sections = _released_sections(spec)
    if parity_lines:
        sections.append(("Conversion check", "\n".join(parity_lines)))
    sections += common_tail(spec.name, spec.classifier, spec.limitations, _RELEASED_LICENCE)
    return render_model_card(
        title=spec.title,
        summary=(
            f"LaSt-ViT (LazyStrike ViT) from {PAPER} ([paper]({PAPER_URL})), converted to a Transformers "
            "`LastViT` checkpoint. This card describes the authors' released weights; the numbers in it are the "
            "paper's."
        ),
        details=describe_config(config),
        command=spec.command,
        sections=sections,
        pipeline_tag="image-classification" if spec.classifier else "image-feature-extraction",
        license="mit",
        datasets=list(spec.datasets) or None,
    )


def write_released_cards(directory: str | Path) -> list[Path]:
    """Write `model_cards/<name>/README.md` for every released checkpoint; returns the paths."""
    paths = []
    for name in RELEASED_CHECKPOINTS:
        path = Path(directory) / name / "README.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(released_model_card(name).content)
        paths.append(path)
    return paths
