"""Convert ViT-family checkpoints into LastViT checkpoints, with exact parity (`lastvit-convert`).

Every source becomes one `LastViTModel` (or `LastViTForImageClassification` when it has a head) by
options and a key map, never by a subclass. With the source's own pooling (`--pooling source`, the
default) the converted model reproduces the source's forward; with `--pooling lazystrike` it is the
same encoder read out by LazyStrike (how the authors' released LaSt-ViT checkpoints are read).

Sources (`--from`):

- ``hf``: a transformers model, loaded with `from_pretrained` (a local folder, or a Hub id for users
  who are online): `ViTModel` / `ViTForImageClassification`, `DeiTModel` / `DeiTForImageClassification`
  / `DeiTForImageClassificationWithTeacher`, `Dinov2Model` / `Dinov2WithRegistersModel` and their
  `...ForImageClassification`, `CLIPVisionModel` / `CLIPVisionModelWithProjection` / `CLIPModel`
  (vision tower and projection; the text tower is dropped).
- ``torchvision``: a torchvision `VisionTransformer` state dict (`conv_proj`, `class_token`,
  `encoder.pos_embedding`, `encoder.layers.encoder_layer_{i}...`, `encoder.ln`, `heads.head`),
  including the authors' supervised LaSt-ViT (`ViT_190k.pth`; detectron2 files with a `model.` prefix).
- ``dino``: a facebookresearch/dino ViT checkpoint (`cls_token`, `pos_embed`, `patch_embed.proj`,
  `blocks.{i}...`, `norm`), a bare backbone or a training checkpoint with `teacher` / `student` dicts
  (`--checkpoint-key`, default `teacher`); `module.` / `backbone.` prefixes are stripped and the
  DINO projection head (`head.*`) is dropped. Including the authors' LaSt-ViT DINO (`dino0080.pth`).
- ``openclip``: an OpenAI CLIP or open_clip checkpoint's visual tower (`visual.conv1`,
  `visual.class_embedding`, `visual.positional_embedding`, `visual.ln_pre`,
  `visual.transformer.resblocks.{i}...`, `visual.ln_post`, `visual.proj`); the text tower is dropped.
  Pickled dicts and TorchScript archives both work. Including the authors' `openai_b_16.pt`.

How outputs correspond (tested in `tests/test_conversion.py`):

- `last_hidden_state` is LastViT's final LayerNorm applied to every token. For ViT, DeiT and DINOv2
  this is exactly the source's `last_hidden_state`. CLIP applies its `post_layernorm` (= LastViT's
  final LayerNorm) only to the CLS token, and its `last_hidden_state` is the encoder output BEFORE that
  norm: compare it with LastViT's `hidden_states[-1]`. `hidden_states` match layer by layer everywhere.
- `pooler_output`: ViT/DeiT base models' `pooler` (dense + tanh on CLS) becomes `pooler_dense_act="tanh"`;
  DINOv2's and CLIP's pooled CLS token is `pooling="cls"`. CLIP's projection gives `image_embeds`.
- DeiT's distillation token is hosted as register token 0 with the value `distillation_token + its
  position embedding` (registers have no position embedding; DeiT never resizes that one), so the
  token order [CLS, distillation, patches] is unchanged. The distilled head's averaged
  `(cls_classifier(CLS) + distillation_classifier(dist)) / 2` is one linear layer on both tokens
  (`classifier_input="pooled_and_first_register"`); DINOv2's classifiers read CLS and the patch mean
  (`classifier_input="pooled_and_patch_mean"`).
- Other resolutions: transformers sources resize exactly as transformers does (bicubic to the target
  grid; antialias for DINOv2 with registers). DINO resizes as the original repository does (bicubic,
  scale factor with a 0.1 offset). torchvision and OpenAI CLIP cannot run at other sizes themselves;
  there LastViT's resize is used (bicubic to the target grid, as transformers' CLIP does).

Loading is safe by default (`checkpoint_loading.py`): `torch.load(..., weights_only=True)`
(with `argparse.Namespace` allowed, which DINO checkpoints hold), and TorchScript archives are read by
a restricted unpickler that only rebuilds tensors. `--trust-pickle` opts in to full unpickling /
`torch.jit.load`, which can run arbitrary code from the file: use it only for files you trust.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import math
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .checkpoint_loading import CheckpointLoadError, load_checkpoint
from ..configuration_lastvit import POOLING_TYPES, SCORE_RULES, LastViTConfig
from lastvit.files import write_folder as write_whole_folder
from ..image_processing_lastvit import LastViTImageProcessor
from ..modeling_lastvit import LastViTForImageClassification, LastViTModel

SOURCES = ("hf", "torchvision", "dino", "openclip")
POOLING_CHOICES = ("source",) + POOLING_TYPES
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
OPENAI_CLIP_MEAN, OPENAI_CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
PIL_BILINEAR, PIL_BICUBIC = 2, 3

# Heads per width of the standard ViT family members (torchvision, DINO, OpenAI CLIP / open_clip); the
# state dicts do not record it. Anything else needs --num-heads.
STANDARD_NUM_HEADS = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}
_MAX_LISTED_KEYS = 12


class ConversionError(ValueError):
    """The source does not have the layout the chosen converter expects, or the options do not fit it."""


@dataclass
class ConversionOptions:
    """How to read out the converted model. `pooling="source"` keeps the source's own readout."""

    pooling: str = "source"
    top_k: int | None = None
    top_k_ratio: float | None = None
    sigma: float | None = None
    score: str | None = None
    num_labels: int | None = None  # None: keep the source's head (if any); 0: drop it; N: keep or replace
    num_heads: int | None = None  # state-dict sources only (their files do not record it)
    clip_activation: str = "quick_gelu"  # openclip only: OpenAI CLIP uses QuickGELU, most open_clip models GELU

    def validate(self) -> None:
        if self.pooling not in POOLING_CHOICES:
            raise ConversionError(f"unknown pooling {self.pooling!r}; use one of {POOLING_CHOICES}.")
        lazystrike_flags = [
            name for name in ("top_k", "top_k_ratio", "sigma", "score") if getattr(self, name) is not None
        ]
        if lazystrike_flags and self.pooling != "lazystrike":
            flags = ", ".join("--" + name.replace("_", "-") for name in lazystrike_flags)
            raise ConversionError(f"{flags} only apply with --pooling lazystrike (got --pooling {self.pooling}).")
        if self.top_k is not None and self.top_k_ratio is not None:
            raise ConversionError("give either --top-k (a count) or --top-k-ratio (a fraction), not both.")
        if self.score is not None and self.score not in SCORE_RULES:
            raise ConversionError(f"unknown LazyStrike score {self.score!r}; use one of {SCORE_RULES}.")
        if self.num_labels is not None and self.num_labels < 0:
            raise ConversionError(f"--num-labels must be >= 0, got {self.num_labels}.")
        if self.num_heads is not None and self.num_heads < 1:
            raise ConversionError(f"--num-heads must be >= 1, got {self.num_heads}.")
        if self.clip_activation not in ("quick_gelu", "gelu"):
            raise ConversionError(f"--clip-activation must be 'quick_gelu' or 'gelu', got {self.clip_activation!r}.")


@dataclass
class ConversionResult:
    """A converted model with the preprocessing of its source and what the conversion did."""

    model: LastViTModel | LastViTForImageClassification
    image_processor: LastViTImageProcessor
    source: str
    description: str
    notes: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> number of source tensors dropped


# ------------------------------------------------------------------------------------------------
# Finding the weights in a loaded checkpoint
# ------------------------------------------------------------------------------------------------


def extract_state_dict(checkpoint: Any, checkpoint_key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint: `checkpoint[checkpoint_key]` if given, else the first
    of `state_dict` / `model` / `module` (open_clip, detectron2, DDP wrappers) that holds tensors, else
    the checkpoint itself. Non-tensor entries at that level are ignored."""
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"expected a dict of tensors in the checkpoint, found a {type(checkpoint).__name__}.")
    if checkpoint_key is not None:
        if checkpoint_key not in checkpoint:
            raise ConversionError(
                f"--checkpoint-key {checkpoint_key!r} is not in the checkpoint; its top-level keys are "
                f"{_preview(checkpoint.keys())}."
            )
        checkpoint = checkpoint[checkpoint_key]
    else:
        for key in ("state_dict", "model", "module"):
            if isinstance(checkpoint.get(key), dict) and _has_tensors(checkpoint[key]):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not _has_tensors(checkpoint):
        found = _preview(checkpoint.keys()) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(
            f"found no tensors at this level of the checkpoint ({found}); pick the dict that holds the weights "
            "with --checkpoint-key."
        )
    return {key: value for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}


def _has_tensors(mapping: dict) -> bool:
    return any(isinstance(value, torch.Tensor) for value in mapping.values())


def _preview(keys: Iterable, limit: int = _MAX_LISTED_KEYS) -> str:
    keys = [str(key) for key in keys]
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)} in all)"


def strip_prefixes(state_dict: dict[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    """Strip each prefix that EVERY key carries (repeatedly, e.g. `module.` then `model.`)."""
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in prefixes:
            if all(key.startswith(prefix) for key in state_dict):
                state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
                changed = True
    return state_dict


# ------------------------------------------------------------------------------------------------
# Key plans: which source tensors make which LastViT tensor; every key accounted for
# ------------------------------------------------------------------------------------------------


class _FusedQKVBlock(NamedTuple):
    """Names of the parameters of one source block (below its prefix) with a fused q/k/v projection."""

    norm1: str
    qkv_weight: str
    qkv_bias: str
    o_proj: str
    norm2: str
    fc1: str
    fc2: str


_DINO_BLOCK = _FusedQKVBlock("norm1", "attn.qkv.weight", "attn.qkv.bias", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
_OPENCLIP_BLOCK = _FusedQKVBlock(
    "ln_1", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"
)


class _KeyPlan:
    """Maps source tensors to LastViT tensors. `execute` fails with a readable list of missing and
    unexpected source keys instead of converting part of a checkpoint silently."""

    def __init__(self, source: str, state_dict: dict[str, torch.Tensor]):
        self.source = source
        self.state_dict = state_dict
        self.entries: list[tuple[str, tuple[str, ...], Callable[..., torch.Tensor]]] = []
        self.dropped: dict[str, list[str]] = collections.defaultdict(list)

    def copy(self, target: str, key: str) -> None:
        self.entries.append((target, (key,), lambda tensor: tensor))

    def map(self, target: str, keys: Sequence[str], fn: Callable[..., torch.Tensor]) -> None:
        self.entries.append((target, tuple(keys), fn))

    def copy_all(self, pairs: Iterable[tuple[str, str]]) -> None:
        for target, key in pairs:
            self.copy(target, key)

    def copy_linear(self, target: str, key: str, bias: bool = True) -> None:
        self.copy(f"{target}.weight", f"{key}.weight")
        if bias:
            self.copy(f"{target}.bias", f"{key}.bias")

    def split_qkv(self, target: str, weight_key: str, bias_key: str | None) -> None:
        """A fused [3D, D] in-projection (q, k, v stacked) into LastViT's q_proj / k_proj / v_proj."""
        for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
            self.map(f"{target}.{name}.weight", [weight_key], lambda t, i=index: t.chunk(3, dim=0)[i])
            if bias_key is not None:
                self.map(f"{target}.{name}.bias", [bias_key], lambda t, i=index: t.chunk(3, dim=0)[i])

    def copy_attention(self, target: str, key: str, out_proj: str = "o_proj", qkv_bias: bool = True) -> None:
        """Separate q/k/v projections (`key`.q_proj ...) and the output projection `key`.`out_proj`."""
        for name in ("q_proj", "k_proj", "v_proj"):
            self.copy_linear(f"{target}.{name}", f"{key}.{name}", bias=qkv_bias)
        self.copy_linear(f"{target}.o_proj", f"{key}.{out_proj}")

    def copy_fused_qkv_block(self, index: int, prefix: str, names: _FusedQKVBlock, qkv_bias: bool = True) -> None:
        """One pre-norm source block whose q/k/v come from one fused projection, into LastViT's layer `index`."""
        dst = f"encoder.layer.{index}."
        self.copy_linear(f"{dst}norm1", prefix + names.norm1)
        self.split_qkv(f"{dst}attention", prefix + names.qkv_weight, prefix + names.qkv_bias if qkv_bias else None)
        self.copy_linear(f"{dst}attention.o_proj", prefix + names.o_proj)
        self.copy_linear(f"{dst}norm2", prefix + names.norm2)
        self.copy_linear(f"{dst}mlp.fc1", prefix + names.fc1)
        self.copy_linear(f"{dst}mlp.fc2", prefix + names.fc2)

    def drop(self, reason: str, predicate: Callable[[str], bool]) -> None:
        for key in self.state_dict:
            if predicate(key):
                self.dropped[reason].append(key)

    def execute(self) -> dict[str, torch.Tensor]:
        used = {key for _, keys, _ in self.entries for key in keys}
        dropped = {key for keys in self.dropped.values() for key in keys}
        missing = sorted(used - set(self.state_dict))
        unexpected = sorted(set(self.state_dict) - used - dropped)
        if missing or unexpected:
            lines = [f"The checkpoint does not have the layout of a {_SOURCE_NAMES[self.source]}:"]
            if missing:
                lines.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
            if unexpected:
                lines.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
            lines.append(f"  its keys: {_preview(self.state_dict)}")
            lines.append("Check --from (and --checkpoint-key for files that hold several models).")
            raise ConversionError("\n".join(lines))
        converted = {}
        for target, keys, fn in self.entries:
            tensor = fn(*(self.state_dict[key] for key in keys))
            converted[target] = tensor.float() if tensor.is_floating_point() else tensor
        return converted


_SOURCE_NAMES = {
    "hf": "transformers model",
    "torchvision": "torchvision VisionTransformer",
    "dino": "facebookresearch/dino ViT",
    "openclip": "OpenAI CLIP / open_clip visual tower",
}


def _require(state_dict: dict[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state_dict:
        raise ConversionError(
            f"The checkpoint has no {key!r}, so it is not a {_SOURCE_NAMES[source]} (--from {source}). "
            f"Its keys: {_preview(state_dict)}. Check --from, and --checkpoint-key for files that hold several models."
        )
    return state_dict[key]


def _block_count(state_dict: dict[str, torch.Tensor], pattern: str, source: str) -> int:
    indices = {int(match.group(1)) for key in state_dict if (match := re.match(pattern, key))}
    if not indices:
        raise ConversionError(
            f"found no transformer blocks (keys matching {pattern!r}) in the {_SOURCE_NAMES[source]}."
        )
    if indices != set(range(len(indices))):
        raise ConversionError(f"the block indices of the {_SOURCE_NAMES[source]} are not 0..L-1: {sorted(indices)}.")
    return len(indices)


def _square_grid(num_patches: int, what: str) -> int:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ConversionError(f"{what} covers {num_patches} patches, which is not a square grid.")
    return side


def _num_heads(hidden_size: int, requested: int | None, source: str) -> int:
    heads = requested or STANDARD_NUM_HEADS.get(hidden_size)
    if heads is None:
        raise ConversionError(
            f"a {_SOURCE_NAMES[source]} checkpoint does not record its number of attention heads and width "
            f"{hidden_size} is not a standard one ({sorted(STANDARD_NUM_HEADS)}): pass --num-heads."
        )
    if hidden_size % heads:
        raise ConversionError(f"--num-heads {heads} does not divide the width {hidden_size}.")
    return heads


def _zeros_like_bias(weight: torch.Tensor) -> torch.Tensor:
    return torch.zeros(weight.shape[0], dtype=weight.dtype)


# ------------------------------------------------------------------------------------------------
# Heads and the final config
# ------------------------------------------------------------------------------------------------


@dataclass
class _Head:
    weight: torch.Tensor | None  # None: a new, freshly initialised head
    bias: torch.Tensor | None
    num_labels: int
    classifier_input: str = "pooled"
    id2label: dict[int, str] | None = None


def _resolve_head(source_head: _Head | None, options: ConversionOptions, notes: list[str]) -> _Head | None:
    if options.num_labels is None:
        return source_head
    if options.num_labels == 0:
        if source_head is not None:
            notes.append("The source's classification head was dropped (--num-labels 0).")
        return None
    if source_head is not None and source_head.num_labels == options.num_labels:
        return source_head
    if source_head is not None:
        notes.append(
            f"The source's {source_head.num_labels}-way head was replaced by a new {options.num_labels}-way head."
        )
    notes.append(f"The {options.num_labels}-way classifier is newly initialised: fine-tune it before use.")
    return _Head(weight=None, bias=None, num_labels=options.num_labels)


def _build_model(
    base_config: dict[str, Any],
    encoder: dict[str, torch.Tensor],
    head: _Head | None,
    options: ConversionOptions,
) -> LastViTModel | LastViTForImageClassification:
    config_kwargs = dict(base_config)
    config_kwargs["pooling"] = "cls" if options.pooling == "source" else options.pooling
    if options.top_k_ratio is not None:
        config_kwargs.update(lazystrike_top_k=None, lazystrike_top_k_ratio=options.top_k_ratio)
    elif options.top_k is not None:
        config_kwargs["lazystrike_top_k"] = options.top_k
    if options.sigma is not None:
        config_kwargs["lazystrike_sigma"] = options.sigma
    if options.score is not None:
        config_kwargs["lazystrike_score"] = options.score
    if head is not None:
        config_kwargs.update(num_labels=head.num_labels, classifier_input=head.classifier_input)
        if head.id2label:
            config_kwargs["id2label"] = {int(k): v for k, v in head.id2label.items()}
            config_kwargs["label2id"] = {v: int(k) for k, v in head.id2label.items()}
    try:
        config = LastViTConfig(**config_kwargs)
    except ValueError as error:
        raise ConversionError(f"the converted settings are not a valid LastViT: {error}") from error

    model = (LastViTForImageClassification(config) if head is not None else LastViTModel(config)).eval()
    state = dict(encoder)
    if head is not None:
        state = {f"lastvit.{key}": value for key, value in state.items()}
        if head.weight is not None:
            state["classifier.weight"], state["classifier.bias"] = head.weight.float(), head.bias.float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [
        key for key in missing if not (head is not None and head.weight is None and key.startswith("classifier."))
    ]
    if missing or unexpected:  # a converter bug rather than a bad file: say so plainly
        raise ConversionError(
            f"internal error: the converted tensors do not fit the LastViT model (missing {missing}, "
            f"unexpected {unexpected}); please report this with the source checkpoint's key list."
        )
    return model


def _encoder_config(**kwargs) -> dict[str, Any]:
    return dict(num_channels=3, **kwargs)


def _note_dropped(plan: _KeyPlan) -> dict[str, int]:
    return {reason: len(keys) for reason, keys in plan.dropped.items() if keys}


def _convert(
    plan: _KeyPlan,
    base_config: dict[str, Any],
    head: _Head | None,
    options: ConversionOptions,
    image_processor: LastViTImageProcessor,
    description: str,
    notes: list[str],
) -> ConversionResult:
    """Run `plan` and build the model: the last step of every converter of a non-transformers layout."""
    return ConversionResult(
        model=_build_model(base_config, plan.execute(), head, options),
        image_processor=image_processor,
        source=plan.source,
        description=description,
        notes=notes,
        dropped=_note_dropped(plan),
    )


def _processor(size: dict, crop: int | None, resample: int, mean, std) -> LastViTImageProcessor:
    return LastViTImageProcessor(
        do_resize=True,
        size=size,
        resample=resample,
        do_center_crop=crop is not None,
        crop_size={"height": crop, "width": crop} if crop is not None else {"height": 224, "width": 224},
        image_mean=list(mean),
        image_std=list(std),
    )


def imagenet_eval_processor(image_size: int, resample: int) -> LastViTImageProcessor:
    """Resize the short side to image_size / 0.875 (256 for 224), centre-crop, ImageNet mean/std."""
    return _processor({"shortest_edge": int(image_size / 0.875)}, image_size, resample, IMAGENET_MEAN, IMAGENET_STD)


def clip_eval_processor(image_size: int) -> LastViTImageProcessor:
    """OpenAI CLIP's preprocessing: bicubic resize of the short side to the input size, centre crop, CLIP mean/std."""
    return _processor({"shortest_edge": image_size}, image_size, PIL_BICUBIC, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


# ------------------------------------------------------------------------------------------------
# torchvision VisionTransformer (and the authors' supervised LaSt-ViT)
# ------------------------------------------------------------------------------------------------


def convert_torchvision_state_dict(
    state_dict: dict[str, torch.Tensor], options: ConversionOptions
) -> ConversionResult:
    """A torchvision `VisionTransformer` state dict (optionally with detectron2's `model.` / DDP's
    `module.` prefix) to LastViT. torchvision: LayerNorm eps 1e-6, exact GELU, q/k/v fused in
    `in_proj_weight`, `heads.head` on the final CLS token (`heads.pre_logits` + tanh if present)."""
    options.validate()
    source = "torchvision"
    sd = strip_prefixes(state_dict, ("module.", "model."))
    conv = _require(sd, "conv_proj.weight", source)
    pos = _require(sd, "encoder.pos_embedding", source)
    hidden, patch = conv.shape[0], conv.shape[-1]
    grid = _square_grid(pos.shape[1] - 1, "encoder.pos_embedding")
    layers = _block_count(sd, r"encoder\.layers\.encoder_layer_(\d+)\.", source)
    block0 = "encoder.layers.encoder_layer_0."
    fc1 = "mlp.0" if f"{block0}mlp.0.weight" in sd else "mlp.linear_1"  # torchvision < 0.13 names
    fc2 = "mlp.3" if fc1 == "mlp.0" else "mlp.linear_2"
    qkv_bias = f"{block0}self_attention.in_proj_bias" in sd

    plan = _KeyPlan(source, sd)
    plan.copy_all(
        [
            ("embeddings.cls_token", "class_token"),
            ("embeddings.position_embeddings", "encoder.pos_embedding"),
            ("embeddings.patch_embeddings.projection.weight", "conv_proj.weight"),
            ("embeddings.patch_embeddings.projection.bias", "conv_proj.bias"),
            ("layernorm.weight", "encoder.ln.weight"),
            ("layernorm.bias", "encoder.ln.bias"),
        ]
    )
    block = _FusedQKVBlock(
        "ln_1", "self_attention.in_proj_weight", "self_attention.in_proj_bias", "self_attention.out_proj", "ln_2", fc1, fc2
    )
    for i in range(layers):
        plan.copy_fused_qkv_block(i, f"encoder.layers.encoder_layer_{i}.", block, qkv_bias)

    base = _encoder_config(
        image_size=grid * patch,
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=_num_heads(hidden, options.num_heads, source),
        intermediate_size=_require(sd, f"{block0}{fc1}.weight", source).shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=qkv_bias,
    )
    notes: list[str] = []
    source_head = None
    if "heads.head.weight" in sd:
        head_weight = sd["heads.head.weight"]
        source_head = _Head(head_weight, sd.get("heads.head.bias"), head_weight.shape[0])
    head = _resolve_head(source_head, options, notes)
    if head is source_head and head is not None:
        plan.drop("classification head (converted separately)", lambda k: k.startswith("heads.head."))
        if "heads.pre_logits.weight" in sd:
            plan.copy_linear("pooler.dense", "heads.pre_logits")
            base.update(pooler_dense_act="tanh", pooler_dense_size=sd["heads.pre_logits.weight"].shape[0])
    else:
        plan.drop("classification head (dropped or replaced)", lambda k: k.startswith("heads."))

    return _convert(plan, base, head, options, imagenet_eval_processor(grid * patch, PIL_BILINEAR), f"torchvision VisionTransformer (patch {patch}, width {hidden}, {layers} blocks)", notes)


# ------------------------------------------------------------------------------------------------
# facebookresearch/dino ViT (and the authors' LaSt-ViT DINO)
# ------------------------------------------------------------------------------------------------


def convert_dino_state_dict(state_dict: dict[str, torch.Tensor], options: ConversionOptions) -> ConversionResult:
    """A facebookresearch/dino `VisionTransformer` state dict (a `teacher` / `student` dict of a training
    checkpoint or the released backbone) to LastViT: LayerNorm eps 1e-6, GELU, fused `attn.qkv`, the
    final `norm`, and DINO's position-embedding resize (bicubic, scale factor with a 0.1 offset)."""
    options.validate()
    source = "dino"
    sd = strip_prefixes(state_dict, ("module.",))
    sd = {key.removeprefix("backbone."): value for key, value in sd.items()}
    conv = _require(sd, "patch_embed.proj.weight", source)
    pos = _require(sd, "pos_embed", source)
    hidden, patch = conv.shape[0], conv.shape[-1]
    grid = _square_grid(pos.shape[1] - 1, "pos_embed")
    layers = _block_count(sd, r"blocks\.(\d+)\.", source)
    qkv_bias = "blocks.0.attn.qkv.bias" in sd

    plan = _KeyPlan(source, sd)
    plan.copy_all(
        [
            ("embeddings.cls_token", "cls_token"),
            ("embeddings.position_embeddings", "pos_embed"),
            ("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"),
            ("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
            ("layernorm.weight", "norm.weight"),
            ("layernorm.bias", "norm.bias"),
        ]
    )
    for i in range(layers):
        plan.copy_fused_qkv_block(i, f"blocks.{i}.", _DINO_BLOCK, qkv_bias)
    plan.drop("DINO projection head (training only)", lambda k: k.startswith("head."))

    base = _encoder_config(
        image_size=grid * patch,
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=_num_heads(hidden, options.num_heads, source),
        intermediate_size=_require(sd, "blocks.0.mlp.fc1.weight", source).shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=qkv_bias,
        position_embedding_interpolation_offset=0.1,
    )
    notes: list[str] = []
    head = _resolve_head(None, options, notes)
    return _convert(plan, base, head, options, imagenet_eval_processor(grid * patch, PIL_BICUBIC), f"facebookresearch/dino ViT (patch {patch}, width {hidden}, {layers} blocks)", notes)


# ------------------------------------------------------------------------------------------------
# OpenAI CLIP / open_clip visual tower (and the authors' LaSt-ViT CLIP)
# ------------------------------------------------------------------------------------------------


def convert_openclip_state_dict(state_dict: dict[str, torch.Tensor], options: ConversionOptions) -> ConversionResult:
    """The visual tower of an OpenAI CLIP / open_clip state dict to LastViT: `ln_pre` (use_pre_norm),
    bias-free `conv1`, fused `attn.in_proj`, `mlp.c_fc` / `mlp.c_proj` with QuickGELU (OpenAI; GELU with
    `clip_activation="gelu"`), LayerNorm eps 1e-5, `ln_post` as the final LayerNorm and `proj` as the
    bias-free projection (`image_embeds`). Text-tower tensors are dropped."""
    options.validate()
    source = "openclip"
    sd = strip_prefixes(state_dict, ("module.",))
    prefix = "visual." if any(key.startswith("visual.") for key in sd) else ""
    v = prefix
    conv = _require(sd, f"{v}conv1.weight", source)
    pos = _require(sd, f"{v}positional_embedding", source)
    hidden, patch = conv.shape[0], conv.shape[-1]
    grid = _square_grid(pos.shape[0] - 1, "positional_embedding")
    layers = _block_count(sd, rf"{re.escape(v)}transformer\.resblocks\.(\d+)\.", source)
    block0 = f"{v}transformer.resblocks.0."
    layerscale = f"{block0}ls_1.gamma" in sd

    plan = _KeyPlan(source, sd)
    plan.map("embeddings.cls_token", [f"{v}class_embedding"], lambda t: t.reshape(1, 1, -1))
    plan.map("embeddings.position_embeddings", [f"{v}positional_embedding"], lambda t: t.unsqueeze(0))
    plan.copy("embeddings.patch_embeddings.projection.weight", f"{v}conv1.weight")
    plan.map("embeddings.patch_embeddings.projection.bias", [f"{v}conv1.weight"], _zeros_like_bias)
    plan.copy_linear("pre_layernorm", f"{v}ln_pre")
    plan.copy_linear("layernorm", f"{v}ln_post")
    for i in range(layers):
        src, dst = f"{v}transformer.resblocks.{i}.", f"encoder.layer.{i}."
        plan.copy_fused_qkv_block(i, src, _OPENCLIP_BLOCK)
        if layerscale:
            plan.copy(f"{dst}layer_scale1.lambda1", f"{src}ls_1.gamma")
            plan.copy(f"{dst}layer_scale2.lambda1", f"{src}ls_2.gamma")
    projection_dim = None
    if f"{v}proj" in sd:
        projection_dim = sd[f"{v}proj"].shape[1]
        plan.map("visual_projection.weight", [f"{v}proj"], lambda t: t.t().contiguous())
    if prefix:
        plan.drop("text tower and other non-visual tensors", lambda k: not k.startswith("visual."))

    base = _encoder_config(
        image_size=grid * patch,
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=_num_heads(hidden, options.num_heads, source),
        intermediate_size=_require(sd, f"{block0}mlp.c_fc.weight", source).shape[0],
        hidden_act=options.clip_activation,
        layer_norm_eps=1e-5,
        qkv_bias=True,
        use_pre_norm=True,
        projection_dim=projection_dim,
        layerscale_value=1.0 if layerscale else None,
    )
    notes = [
        f"MLP activation: {options.clip_activation} ("
        + (
            "OpenAI CLIP weights; use --clip-activation gelu for open_clip models trained with nn.GELU)."
            if options.clip_activation == "quick_gelu"
            else "open_clip models trained with nn.GELU)."
        )
    ]
    head = _resolve_head(None, options, notes)
    return _convert(plan, base, head, options, clip_eval_processor(grid * patch), f"CLIP visual tower (patch {patch}, width {hidden}, {layers} blocks)", notes)


# ------------------------------------------------------------------------------------------------
# transformers models
# ------------------------------------------------------------------------------------------------

HF_ARCHITECTURES = {
    "ViTModel": "vit",
    "ViTForImageClassification": "vit",
    "DeiTModel": "deit",
    "DeiTForImageClassification": "deit",
    "DeiTForImageClassificationWithTeacher": "deit",
    "Dinov2Model": "dinov2",
    "Dinov2ForImageClassification": "dinov2",
    "Dinov2WithRegistersModel": "dinov2",
    "Dinov2WithRegistersForImageClassification": "dinov2",
    "CLIPVisionModel": "clip",
    "CLIPVisionModelWithProjection": "clip",
    "CLIPModel": "clip",
}


def load_hf_model(name_or_path: str):
    """Load a supported transformers model in fp32 with the class named in its config."""
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path)
    architecture = (getattr(config, "architectures", None) or [None])[0]
    if architecture not in HF_ARCHITECTURES:
        raise ConversionError(
            f"{name_or_path} is a {architecture or config.model_type!r}; the hf converter takes "
            f"{sorted(HF_ARCHITECTURES)}."
        )
    return getattr(transformers, architecture).from_pretrained(name_or_path, dtype=torch.float32).eval()


def _hf_config(config, **overrides) -> dict[str, Any]:
    image_size, patch_size = config.image_size, config.patch_size
    return _encoder_config(
        image_size=list(image_size) if isinstance(image_size, (list, tuple)) else image_size,
        patch_size=list(patch_size) if isinstance(patch_size, (list, tuple)) else patch_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        **overrides,
    )


def _hf_id2label(config) -> dict[int, str] | None:
    return dict(config.id2label) if getattr(config, "id2label", None) else None


def convert_hf_model(model, options: ConversionOptions, image_processor=None) -> ConversionResult:
    """A transformers ViT / DeiT / DINOv2 (+ registers) / CLIP vision model (with its head) to LastViT.

    `image_processor`: the source's image processor; its resize / crop / mean / std are copied. Without
    one, the family's usual evaluation preprocessing is used (and a note says so).
    """
    options.validate()
    architecture = type(model).__name__
    family = HF_ARCHITECTURES.get(architecture)
    if family is None:
        raise ConversionError(f"the hf converter takes {sorted(HF_ARCHITECTURES)}, not {architecture}.")
    state_dict = {key: value for key, value in model.state_dict().items()}
    converter = {"vit": _plan_hf_vit, "deit": _plan_hf_vit, "dinov2": _plan_hf_dinov2, "clip": _plan_hf_clip}[family]
    plan, base, source_head = converter(model, state_dict)
    notes: list[str] = []
    head = _resolve_head(source_head, options, notes)
    if source_head is not None and head is not source_head:
        plan.dropped["classification head (dropped or replaced)"] = plan.dropped.pop("classification head", [])
    model_out = _build_model(base, plan.execute(), head, options)
    processor, note = _processor_from_hf(image_processor, family, model.config)
    if note:
        notes.append(note)
    return ConversionResult(
        model=model_out,
        image_processor=processor,
        source="hf",
        description=f"transformers {architecture}",
        notes=notes,
        dropped=_note_dropped(plan),
    )


def _plan_hf_vit(model, sd):
    """ViT and DeiT: `layers.{i}.layernorm_before / attention / layernorm_after / mlp`, final `layernorm`,
    optional `pooler` (dense + tanh); DeiT's distillation token becomes register 0."""
    config = model.config
    architecture = type(model).__name__
    is_deit = architecture.startswith("DeiT")
    prefix = _hf_prefix(model, sd)
    e = f"{prefix}embeddings."
    plan = _KeyPlan("hf", sd)
    if is_deit:  # [CLS, dist, patches] + pos -> CLS/patch positions stay, dist + its position becomes register 0
        pos = f"{e}position_embeddings"
        plan.map("embeddings.position_embeddings", [pos], lambda t: torch.cat((t[:, :1], t[:, 2:]), dim=1))
        plan.map("embeddings.register_tokens", [f"{e}distillation_token", pos], lambda d, t: d + t[:, 1:2])
    else:
        plan.copy("embeddings.position_embeddings", f"{e}position_embeddings")
    plan.copy("embeddings.cls_token", f"{e}cls_token")
    plan.copy_linear("embeddings.patch_embeddings.projection", f"{e}patch_embeddings.projection")
    plan.copy_linear("layernorm", f"{prefix}layernorm")
    for i in range(config.num_hidden_layers):
        src, dst = f"{prefix}layers.{i}.", f"encoder.layer.{i}."
        plan.copy_linear(f"{dst}norm1", f"{src}layernorm_before")
        plan.copy_attention(f"{dst}attention", f"{src}attention", qkv_bias=config.qkv_bias)
        plan.copy_linear(f"{dst}norm2", f"{src}layernorm_after")
        plan.copy_linear(f"{dst}mlp.fc1", f"{src}mlp.fc1")
        plan.copy_linear(f"{dst}mlp.fc2", f"{src}mlp.fc2")
    plan.drop("mask token (masked image modeling only)", lambda k: k == f"{e}mask_token")
    base = _hf_config(
        config,
        intermediate_size=config.intermediate_size,
        qkv_bias=config.qkv_bias,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        num_register_tokens=1 if is_deit else 0,
    )
    if f"{prefix}pooler.dense.weight" in sd:
        plan.copy_linear("pooler.dense", f"{prefix}pooler.dense")
        base.update(pooler_dense_act=config.pooler_act, pooler_dense_size=sd[f"{prefix}pooler.dense.weight"].shape[0])

    head = None
    if architecture.endswith("WithTeacher"):
        keys = [
            "cls_classifier.weight",
            "cls_classifier.bias",
            "distillation_classifier.weight",
            "distillation_classifier.bias",
        ]
        plan.drop("classification head", lambda k: k in keys)
        cls_w, cls_b, dist_w, dist_b = (sd[k] for k in keys)
        head = _Head(
            weight=0.5 * torch.cat((cls_w, dist_w), dim=1),
            bias=0.5 * (cls_b + dist_b),
            num_labels=cls_w.shape[0],
            classifier_input="pooled_and_first_register",
            id2label=_hf_id2label(config),
        )
    elif architecture.endswith("ForImageClassification"):
        plan.drop("classification head", lambda k: k.startswith("classifier."))
        head = _Head(
            sd["classifier.weight"],
            sd["classifier.bias"],
            sd["classifier.weight"].shape[0],
            id2label=_hf_id2label(config),
        )
    return plan, base, head


def _hf_prefix(model, sd) -> str:
    """`vit.` / `dinov2.` ... when `sd` is a task model's state dict, else ''."""
    prefix = f"{model.base_model_prefix}."
    return prefix if any(k.startswith(prefix) for k in sd) else ""


def _plan_hf_dinov2(model, sd):
    """DINOv2 (+ registers): `encoder.layer.{i}.norm1 / attention / layer_scale1 / norm2 / mlp / layer_scale2`;
    the classifier reads [CLS, mean of patch tokens]."""
    config = model.config
    architecture = type(model).__name__
    prefix = _hf_prefix(model, sd)
    e = f"{prefix}embeddings."
    registers = getattr(config, "num_register_tokens", 0) if "WithRegisters" in architecture else 0
    plan = _KeyPlan("hf", sd)
    plan.copy("embeddings.cls_token", f"{e}cls_token")
    plan.copy("embeddings.position_embeddings", f"{e}position_embeddings")
    if registers:
        plan.copy("embeddings.register_tokens", f"{e}register_tokens")
    plan.copy_linear("embeddings.patch_embeddings.projection", f"{e}patch_embeddings.projection")
    plan.copy_linear("layernorm", f"{prefix}layernorm")
    mlp = ("gate_proj", "up_proj", "down_proj") if config.use_swiglu_ffn else ("fc1", "fc2")
    for i in range(config.num_hidden_layers):
        src, dst = f"{prefix}encoder.layer.{i}.", f"encoder.layer.{i}."
        plan.copy_linear(f"{dst}norm1", f"{src}norm1")
        plan.copy_attention(f"{dst}attention", f"{src}attention", qkv_bias=config.qkv_bias)
        plan.copy(f"{dst}layer_scale1.lambda1", f"{src}layer_scale1.lambda1")
        plan.copy_linear(f"{dst}norm2", f"{src}norm2")
        for name in mlp:
            plan.copy_linear(f"{dst}mlp.{name}", f"{src}mlp.{name}")
        plan.copy(f"{dst}layer_scale2.lambda1", f"{src}layer_scale2.lambda1")
    plan.drop("mask token (masked image modeling only)", lambda k: k == f"{e}mask_token")
    base = _hf_config(
        config,
        intermediate_size=int(config.hidden_size * config.mlp_ratio),
        qkv_bias=config.qkv_bias,
        layerscale_value=config.layerscale_value,
        use_swiglu_ffn=config.use_swiglu_ffn,
        drop_path_rate=config.drop_path_rate,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        num_register_tokens=registers,
        position_embedding_antialias="WithRegisters" in architecture,  # as transformers resizes them
    )
    head = None
    if architecture.endswith("ForImageClassification"):
        plan.drop("classification head", lambda k: k.startswith("classifier."))
        head = _Head(
            sd["classifier.weight"],
            sd["classifier.bias"],
            sd["classifier.weight"].shape[0],
            classifier_input="pooled_and_patch_mean",
            id2label=_hf_id2label(config),
        )
    return plan, base, head


def _plan_hf_clip(model, sd):
    """CLIP vision: `pre_layrnorm`, `encoder.layers.{i}.layer_norm1 / self_attn / layer_norm2 / mlp`,
    `post_layernorm` (LastViT's final LayerNorm) and `visual_projection`; text tower dropped."""
    architecture = type(model).__name__
    config = model.config.vision_config if architecture == "CLIPModel" else model.config
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in sd) else ""
    e = f"{prefix}embeddings."
    plan = _KeyPlan("hf", sd)
    plan.map("embeddings.cls_token", [f"{e}class_embedding"], lambda t: t.reshape(1, 1, -1))
    plan.map("embeddings.position_embeddings", [f"{e}position_embedding.weight"], lambda t: t.unsqueeze(0))
    plan.copy("embeddings.patch_embeddings.projection.weight", f"{e}patch_embedding.weight")
    plan.map("embeddings.patch_embeddings.projection.bias", [f"{e}patch_embedding.weight"], _zeros_like_bias)
    plan.copy_linear("pre_layernorm", f"{prefix}pre_layrnorm")
    plan.copy_linear("layernorm", f"{prefix}post_layernorm")
    for i in range(config.num_hidden_layers):
        src, dst = f"{prefix}encoder.layers.{i}.", f"encoder.layer.{i}."
        plan.copy_linear(f"{dst}norm1", f"{src}layer_norm1")
        plan.copy_attention(f"{dst}attention", f"{src}self_attn", out_proj="out_proj")
        plan.copy_linear(f"{dst}norm2", f"{src}layer_norm2")
        plan.copy_linear(f"{dst}mlp.fc1", f"{src}mlp.fc1")
        plan.copy_linear(f"{dst}mlp.fc2", f"{src}mlp.fc2")
    projection_dim = None
    if "visual_projection.weight" in sd:
        plan.copy("visual_projection.weight", "visual_projection.weight")
        projection_dim = sd["visual_projection.weight"].shape[0]
    plan.drop("text tower", lambda k: k.startswith(("text_model.", "text_projection.")) or k == "logit_scale")
    base = _hf_config(
        config,
        intermediate_size=config.intermediate_size,
        qkv_bias=True,
        use_pre_norm=True,
        attention_probs_dropout_prob=config.attention_dropout,
        projection_dim=projection_dim,
    )
    return plan, base, None


def _processor_from_hf(source_processor, family: str, config) -> tuple[LastViTImageProcessor, str | None]:
    image_size = config.vision_config.image_size if hasattr(config, "vision_config") else config.image_size
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    if source_processor is None:
        default = (
            clip_eval_processor(image_size) if family == "clip" else imagenet_eval_processor(image_size, PIL_BICUBIC)
        )
        return default, (
            "The source had no image processor: the converted folder uses "
            + ("OpenAI CLIP's" if family == "clip" else "ImageNet")
            + " evaluation preprocessing; check it matches how the weights were trained."
        )
    kwargs = {}
    for key in ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"):
        kwargs[key] = bool(getattr(source_processor, key, None))  # unset means off in transformers' processors
    for key in ("size", "resample", "crop_size", "rescale_factor", "image_mean", "image_std"):
        value = getattr(source_processor, key, None)
        if value is not None:
            kwargs[key] = dict(value) if isinstance(value, dict) else value
    return LastViTImageProcessor(**kwargs), None


def _call_accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


@torch.no_grad()
def compare_with_hf_source(source, converted, pixel_values: torch.Tensor) -> dict[str, float]:
    """Max abs differences between a transformers source and its conversion on `pixel_values`
    (per output, using the correspondences in this module's docstring)."""
    architecture = type(source).__name__
    kwargs = {"output_hidden_states": True}
    native = converted.config.image_size_hw
    if tuple(pixel_values.shape[-2:]) != native:
        forward = source.get_image_features if architecture == "CLIPModel" else source.forward
        if _call_accepts(forward, "interpolate_pos_encoding"):
            kwargs["interpolate_pos_encoding"] = True
    if architecture == "CLIPModel":
        expected = source.get_image_features(pixel_values=pixel_values, **kwargs)
    else:
        expected = source(pixel_values=pixel_values, **kwargs)
    base = converted.lastvit if isinstance(converted, LastViTForImageClassification) else converted
    actual = base(pixel_values, output_hidden_states=True)

    def diff(a, b):
        return (a - b).abs().max().item()

    diffs = {"hidden_states": max(diff(a, b) for a, b in zip(expected.hidden_states, actual.hidden_states))}
    if isinstance(converted, LastViTForImageClassification):
        diffs["logits"] = diff(expected.logits, converted(pixel_values).logits)
    elif architecture.startswith("CLIP"):
        diffs["last_hidden_state (CLIP, pre post-LN) vs hidden_states[-1]"] = diff(
            expected.last_hidden_state, actual.hidden_states[-1]
        )
        if architecture == "CLIPVisionModel":
            diffs["pooler_output"] = diff(expected.pooler_output, actual.pooler_output)
        elif architecture == "CLIPVisionModelWithProjection":
            diffs["image_embeds"] = diff(expected.image_embeds, actual.image_embeds)
        else:
            diffs["image_embeds"] = diff(expected.pooler_output, actual.image_embeds)
    else:
        diffs["last_hidden_state"] = diff(expected.last_hidden_state, actual.last_hidden_state)
        diffs["pooler_output"] = diff(expected.pooler_output, actual.pooler_output)
    return diffs


# ------------------------------------------------------------------------------------------------
# Writing the folder, and the command line
# ------------------------------------------------------------------------------------------------


def convert(
    source: str,
    input_path: str,
    options: ConversionOptions,
    checkpoint_key: str | None = None,
    trust_pickle: bool = False,
) -> tuple[ConversionResult, dict[str, float] | None]:
    """Convert `input_path` from `source`; for transformers sources also return the parity check
    against the source's own forward on a random batch at the native resolution."""
    if source == "hf":
        source_model = load_hf_model(input_path)
        try:
            from transformers import AutoImageProcessor

            source_processor = AutoImageProcessor.from_pretrained(input_path)
        except (OSError, ValueError, KeyError):
            source_processor = None
        result = convert_hf_model(source_model, options, source_processor)
        height, width = result.model.config.image_size_hw
        pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
        return result, compare_with_hf_source(source_model, result.model, pixel_values)
    if source not in SOURCES:
        raise ConversionError(f"unknown source {source!r}; use one of {SOURCES}.")
    checkpoint = load_checkpoint(input_path, trust_pickle=trust_pickle)
    if source == "dino" and checkpoint_key is None and isinstance(checkpoint, dict) and "teacher" in checkpoint:
        checkpoint_key = "teacher"
    state_dict = extract_state_dict(checkpoint, checkpoint_key)
    convert_fn = {
        "torchvision": convert_torchvision_state_dict,
        "dino": convert_dino_state_dict,
        "openclip": convert_openclip_state_dict,
    }[source]
    result = convert_fn(state_dict, options)
    if checkpoint_key:
        result.notes.append(f"Weights taken from the checkpoint's {checkpoint_key!r} entry.")
    return result, None


def _round_trip_diff(model, folder: Path) -> float:
    reloaded = type(model).from_pretrained(folder).eval()
    height, width = model.config.image_size_hw
    pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(pixel_values), reloaded(pixel_values)
    key = "logits" if isinstance(model, LastViTForImageClassification) else "pooler_output"
    return (getattr(a, key).float() - getattr(b, key).float()).abs().max().item()


def write_folder(
    result: ConversionResult,
    output_dir: Path,
    card_text: Callable[[float], str],
    overwrite: bool = False,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Save weights (safetensors), config (with `auto_map`), image processor, remote code and the card
    into a staging folder, reload it to check the round trip, then move it into place atomically.
    Returns the round-trip max abs difference (0.0 when the saved folder reproduces the model)."""
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConversionError(
            f"{output_dir} already holds files; pass --overwrite to replace them or pick another --output."
        )
    def write(staging: Path) -> float:
        model = result.model.to(dtype)
        model.save_pretrained(staging)
        result.image_processor.save_pretrained(staging)
        round_trip = _round_trip_diff(model, staging)
        (staging / "README.md").write_text(card_text(round_trip))
        return round_trip

    round_trip = write_whole_folder(output_dir, write)
    return round_trip


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    from lastvit.cards.model_card import RELEASED_CHECKPOINTS

    parser = argparse.ArgumentParser(
        prog="lastvit-convert",
        description=(
            "Convert a ViT-family checkpoint into a LastViT folder (safetensors weights, config with auto_map, "
            "image-processor config matching the source's preprocessing, remote code and a model card). With "
            "--pooling source the converted model reproduces the source's outputs; --pooling lazystrike reads "
            "the same encoder out with LazyStrike (as the authors' released LaSt-ViT checkpoints are)."
        ),
        epilog=(
            "examples:\n"
            "  lastvit-convert --from hf --input google/vit-base-patch16-224 --output vit-b16-lastvit "
            "--pooling lazystrike\n"
            "  lastvit-convert --from torchvision --input ViT_190k.pth --output lastvit-vit-b16-supervised "
            "--pooling lazystrike --top-k 1\n"
            "Loading never runs code from the file unless --trust-pickle is given."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        choices=SOURCES,
        help="source kind: hf (a transformers model), torchvision (VisionTransformer state dict), "
        "dino (facebookresearch/dino ViT checkpoint), openclip (OpenAI CLIP / open_clip "
        "checkpoint or TorchScript archive)",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="a checkpoint file (.pth/.pt/.bin/.safetensors) or, for --from hf, a local folder or Hub id",
    )
    parser.add_argument("--output", required=True, type=Path, help="folder to write the converted checkpoint into")
    parser.add_argument(
        "--pooling",
        default="source",
        choices=POOLING_CHOICES,
        help="global readout: 'source' keeps the source's own (CLS) readout for exact parity; "
        "'lazystrike' is LaSt-ViT's; 'mean' / 'max' / 'cls' for ablations (default: source)",
    )
    parser.add_argument("--top-k", type=int, help="LazyStrike K, patches averaged per channel (default 1)")
    parser.add_argument("--top-k-ratio", type=float, help="LazyStrike K as a fraction of the patch count, e.g. 0.5")
    parser.add_argument("--sigma", type=float, help="LazyStrike Gaussian window width (default sqrt(hidden size))")
    parser.add_argument(
        "--score",
        choices=SCORE_RULES,
        help="LazyStrike stability score: 'repo' (released code, default) or 'paper' (Eq. 5)",
    )
    parser.add_argument(
        "--num-labels",
        type=int,
        help="classifier: omit to keep the source's head (if any), 0 to drop it, N for an N-way head "
        "(kept if the source's has N classes, else newly initialised)",
    )
    parser.add_argument(
        "--num-heads",
        type=int,
        help="attention heads, for torchvision / dino / openclip files of a non-standard width "
        f"(standard widths: {sorted(STANDARD_NUM_HEADS)})",
    )
    parser.add_argument(
        "--checkpoint-key",
        help="entry of the checkpoint dict that holds the weights (dino: 'teacher' by default; "
        "otherwise 'state_dict' / 'model' / 'module' are tried)",
    )
    parser.add_argument(
        "--clip-activation",
        default="quick_gelu",
        choices=("quick_gelu", "gelu"),
        help="openclip MLP activation: quick_gelu for OpenAI CLIP weights (default), gelu for "
        "open_clip models trained with nn.GELU",
    )
    parser.add_argument("--dtype", default="float32", choices=sorted(_DTYPES), help="dtype of the saved weights")
    parser.add_argument(
        "--released",
        choices=sorted(RELEASED_CHECKPOINTS),
        help="the file is one of the authors' released LaSt-ViT checkpoints: write that model card",
    )
    parser.add_argument("--model-name", help="title of the model card (default: the output folder's name)")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow full unpickling / torch.jit.load for files a weights-only load refuses. "
        "UNSAFE: a malicious file can run arbitrary code; only for files you trust",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --output folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lastvit.cards.model_card import converted_model_card

    parser = build_parser()
    args = parser.parse_args(argv)
    options = ConversionOptions(
        pooling=args.pooling,
        top_k=args.top_k,
        top_k_ratio=args.top_k_ratio,
        sigma=args.sigma,
        score=args.score,
        num_labels=args.num_labels,
        num_heads=args.num_heads,
        clip_activation=args.clip_activation,
    )
    command = "lastvit-convert " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    try:
        options.validate()
        print(f"Converting {args.input} (--from {args.source}) ...")
        result, parity = convert(args.source, args.input, options, args.checkpoint_key, args.trust_pickle)
        config = result.model.config
        if args.released and (config.hidden_size, config.num_hidden_layers, config.patch_size_hw) != (
            768,
            12,
            (16, 16),
        ):
            result.notes.append(
                f"--released {args.released} describes a ViT-B/16, but this file is width {config.hidden_size}, "
                f"{config.num_hidden_layers} blocks, patch {config.patch_size_hw[0]}: the card's details do not "
                "fit it."
            )
        name = args.model_name or args.output.name

        def card(round_trip: float) -> str:
            return converted_model_card(
                result, command=command, model_name=name, parity=parity, round_trip=round_trip, released=args.released
            ).content

        round_trip = write_folder(result, args.output, card, overwrite=args.overwrite, dtype=_DTYPES[args.dtype])
    except (ConversionError, CheckpointLoadError) as error:
        parser.exit(2, f"lastvit-convert: error: {error}\n")

    config = result.model.config
    print(f"  source     : {result.description}")
    print(
        f"  model      : {type(result.model).__name__}, pooling={config.pooling}"
        + (f", {config.num_labels} labels" if isinstance(result.model, LastViTForImageClassification) else "")
    )
    for reason, count in result.dropped.items():
        print(f"  dropped    : {count} tensors ({reason})")
    for note in result.notes:
        print(f"  note       : {note}")
    if parity:
        for output, value in parity.items():
            print(f"  parity     : max |diff| {output} = {value:.2e}")
    print(f"  round trip : max |diff| after reloading the folder = {round_trip:.2e}")
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
