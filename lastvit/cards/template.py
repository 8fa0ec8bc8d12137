"""The one model-card template (huggingface_hub's `ModelCard`) and the facts every card shares: the
paper, its citation, and a plain-language description of a `LastViTConfig`. Released, converted,
trained and fine-tuned cards are all rendered by `render_model_card`.

Cards say only what the code does. Numbers from the paper are quoted as the paper's; a `model-index`
is written only for results this package measured (pass them as `eval_results`).
"""

from __future__ import annotations

import json

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling_lastvit import LastViTConfig

PAPER = 'Shi, Yu and Yang, "Vision Transformers Need More Than Registers", CVPR 2026, arXiv:2602.22394'
PAPER_URL = "https://arxiv.org/abs/2602.22394"
AUTHORS_REPO = "https://github.com/ChengShiest/LAST-ViT"
# The entry the authors' README gives.
CITATION = """@article{shi2026vision,
  title={Vision Transformers Need More Than Registers},
  author={Shi, Cheng and Yu, Yizhou and Yang, Sibei},
  journal={arXiv preprint arXiv:2602.22394},
  year={2026}
}"""


BASE_TAGS = ["lastvit", "vision", "vit", "custom_code"]


def describe_config(config: LastViTConfig) -> list[str]:
    """Plain-language bullet points of what a LastViT config computes."""
    height, width = config.image_size_hw
    patch_h, patch_w = config.patch_size_hw
    num_patches = (height // patch_h) * (width // patch_w)
    tokens = (["the CLS token"] if config.use_cls_token else []) + (
        [f"{config.num_register_tokens} register token{'s' if config.num_register_tokens > 1 else ''}"]
        if config.num_register_tokens
        else []
    )
    norm = "RMSNorm" if config.norm_type == "rms_norm" else "LayerNorm"
    mlp = "gated MLP" if config.use_gated_mlp else "MLP"
    lines = [
        f"Encoder: pre-norm ViT, width {config.hidden_size}, {config.num_hidden_layers} blocks, "
        f"{config.num_attention_heads} heads, {mlp} {config.intermediate_size} ({config.hidden_act}), "
        f"{norm} eps {config.layer_norm_eps:g}"
        + (f", {norm} on the patch tokens" if config.use_patch_norm else "")
        + (f", {norm} before the first block" if config.use_pre_norm else "")
        + (", LayerScale" if config.layerscale_value is not None else "")
        + (f", 2-D rotary position embeddings ({config.rope_type}) on the patch tokens" if config.rope_type else "")
        + ".",
        f"Input: {height}x{width} px, {patch_h}x{patch_w} patches ({num_patches} patch tokens"
        + (f" plus {' and '.join(tokens)}" if tokens else "")
        + "); other sizes divisible by the patch size work"
        + (" (position embeddings are resized)." if config.position_embedding_type == "learned" else "."),
    ]
    if config.pooling == "lazystrike":
        k = (
            f"K = {config.lazystrike_top_k_ratio:g} x patches"
            if config.lazystrike_top_k_ratio is not None
            else f"K = {config.lazystrike_top_k}"
        )
        sigma = "sqrt(D)" if config.lazystrike_sigma is None else f"{config.lazystrike_sigma:g}"
        readout = (
            f"LazyStrike over the final patch tokens ({k}, score `{config.lazystrike_score}`, sigma = {sigma}); "
            "the CLS token still runs through every block but is not read out"
        )
    else:
        readout = {
            "cls": "the final CLS token",
            "mean": "the mean of the final patch tokens",
            "max": "the per-channel max over the final patch tokens",
            "map": "multi-head attention pooling of the final patch tokens by a learned probe (MAP head)",
            "avgmax": "the average of the mean and the per-channel max over the final patch tokens",
        }[config.pooling]
    if config.use_fc_norm:
        readout += f", then the final {norm} (on the pooled feature, not on the tokens)"
    if config.pooler_dense_act:
        readout += f", then a dense layer and {config.pooler_dense_act}"
    lines.append(f"Global feature (`pooler_output`): {readout}.")
    if config.projection_dim:
        lines.append(f"Projection: bias-free linear map to {config.projection_dim} (`image_embeds`).")
    if config.num_labels and "LastViTForImageClassification" in (config.architectures or []):
        inputs = {
            "pooled": "the global feature",
            "pooled_and_patch_mean": "the global feature and the patch mean",
            "pooled_and_first_register": "the global feature and the first register token",
        }
        lines.append(f"Classifier: linear, {config.num_labels} classes, on {inputs[config.classifier_input]}.")
    return lines


def render_model_card(
    *,
    title: str,
    summary: str,
    details: list[str],
    command: str,
    sections: list[tuple[str, str]],
    pipeline_tag: str,
    license: str | None = None,
    datasets: list[str] | None = None,
    eval_results: list[EvalResult] | None = None,
    model_name: str | None = None,
    tags: list[str] | None = None,
) -> ModelCard:
    """The shared template: YAML metadata, summary, model details, the exact conversion command, then
    `sections` (title, markdown body) and the citation. `eval_results` (numbers measured by this
    package only) become the `model-index`; `model_name` is required with them. `tags` add to the
    shared ones."""
    data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=BASE_TAGS + [t for t in tags or [] if t not in BASE_TAGS],
        datasets=datasets,
        eval_results=eval_results,
        model_name=model_name if eval_results else None,
    )
    body = [f"# {title}", "", summary, "", "## Model details", ""]
    body += [f"- {line}" for line in details]
    body += ["", "## How this folder is made", "", "```bash", command, "```", ""]
    for heading, text in sections:
        body += [f"## {heading}", "", text.strip(), ""]
    body += [
        "## Citation",
        "",
        f"If you use LaSt-ViT, please cite the paper ({PAPER}):",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def usage_text(folder: str, classifier: bool) -> str:
    auto = "AutoModelForImageClassification" if classifier else "AutoModel"
    read = (
        "logits = model(**inputs).logits"
        if classifier
        else "out = model(**inputs)\n"
        "global_feature, votes = out.pooler_output, out.patch_votes  # votes: LazyStrike only"
    )
    return f"""```python
from PIL import Image
from transformers import AutoImageProcessor, {auto}

processor = AutoImageProcessor.from_pretrained("{folder}", trust_remote_code=True)
model = {auto}.from_pretrained("{folder}", trust_remote_code=True).eval()
inputs = processor(Image.open("image.jpg"), return_tensors="pt")
{read}
```

The folder carries its own code (`trust_remote_code=True`); with this package installed
(`import modeling_lastvit`) the Auto classes resolve `model_type="lastvit"` directly. LazyStrike has no
parameters, so K can be changed when loading, e.g.
`from_pretrained(path, trust_remote_code=True, lazystrike_top_k=None, lazystrike_top_k_ratio=0.5)`."""


def clip_usage_text(labels: tuple[str, str], tower_note: str) -> str:
    """The zero-shot pipeline snippet of a LastViT-CLIP card; `tower_note` says where its image tower is."""
    return f"""```python
from PIL import Image
from transformers import pipeline

classify = pipeline("zero-shot-image-classification", model="<this folder>", trust_remote_code=True)
classify(Image.open("image.png"), candidate_labels={json.dumps(list(labels))}, hypothesis_template="a photo of a {{}}.")
```

`AutoModel.from_pretrained(folder, trust_remote_code=True)` gives the `LastViTCLIPModel`
(`get_image_features`, `get_text_features`, `get_patch_features` for zero-shot segmentation);
{tower_note}"""


def common_tail(folder: str, classifier: bool, limitations: str, licence: str) -> list[tuple[str, str]]:
    return [
        ("How to use", usage_text(folder, classifier)),
        (
            "Intended use",
            (
                "Research on where ViTs aggregate global information: patch-level features, LazyStrike vote maps, "
                "localisation metrics such as Point-in-Box, dense probing, and as an initialisation for "
                "fine-tuning with LazyStrike. Not evaluated for any deployed application."
            ),
        ),
        ("Limitations", limitations),
        ("Licence", licence),
    ]
