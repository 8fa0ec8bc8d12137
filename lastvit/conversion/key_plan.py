"""The shared machinery of every converter: a key plan that accounts for every source tensor, the
block and attention copies the ViT family shares, the head rules, and the model/result builder.

A converter (one module per source format) reads the source's shapes, fills a `KeyPlan` (which LastViT
tensor comes from which source tensors, and which source tensors are dropped on purpose), and hands the
plan, the config and the head to `build_result`. `KeyPlan.execute` refuses to convert part of a
checkpoint: it lists the missing and unexpected source keys instead.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from transformers.image_utils import IMAGENET_DEFAULT_STD as IMAGENET_STD
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from modeling_lastvit.configuration_lastvit import LastViTConfig
from modeling_lastvit.image_processing_lastvit import LastViTImageProcessor
from modeling_lastvit.modeling_lastvit import LastViTForImageClassification, LastViTModel

from .options import SOURCE_NAMES, STANDARD_NUM_HEADS, ConversionError, ConversionOptions

PIL_BILINEAR, PIL_BICUBIC = 2, 3
_MAX_LISTED_KEYS = 12


@dataclass
class ConversionResult:
    """A converted model with the preprocessing of its source and what the conversion did."""

    model: LastViTModel | LastViTForImageClassification
    image_processor: LastViTImageProcessor
    source: str
    description: str
    notes: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> number of source tensors dropped
    source_pooling: str = "cls"  # the LastViT pooling that reproduces the source's own readout
    source_readout: str | None = None  # the source's readout in words, for the card


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
                f"{preview_keys(checkpoint.keys())}."
            )
        checkpoint = checkpoint[checkpoint_key]
    else:
        for key in ("state_dict", "model", "module"):
            if isinstance(checkpoint.get(key), dict) and _has_tensors(checkpoint[key]):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not _has_tensors(checkpoint):
        found = preview_keys(checkpoint.keys()) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(
            f"found no tensors at this level of the checkpoint ({found}); pick the dict that holds the weights "
            "with --checkpoint-key."
        )
    return {key: value for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}


def _has_tensors(mapping: dict) -> bool:
    return any(isinstance(value, torch.Tensor) for value in mapping.values())


def preview_keys(keys: Iterable, limit: int = _MAX_LISTED_KEYS) -> str:
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


class FusedQKVBlock(NamedTuple):
    """Names of the parameters of one source block (below its prefix) with a fused q/k/v projection."""

    norm1: str
    qkv_weight: str
    qkv_bias: str
    o_proj: str
    norm2: str
    fc1: str
    fc2: str


class KeyPlan:
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

    def copy_fused_qkv_block(self, index: int, prefix: str, names: FusedQKVBlock, qkv_bias: bool = True) -> None:
        """One pre-norm source block whose q/k/v come from one fused projection, into LastViT's layer `index`."""
        dst = f"encoder.layer.{index}."
        self.copy_linear(f"{dst}norm1", prefix + names.norm1)
        self.split_qkv(f"{dst}attention", prefix + names.qkv_weight, prefix + names.qkv_bias if qkv_bias else None)
        self.copy_linear(f"{dst}attention.o_proj", prefix + names.o_proj)
        self.copy_linear(f"{dst}norm2", prefix + names.norm2)
        self.copy_linear(f"{dst}mlp.fc1", prefix + names.fc1)
        self.copy_linear(f"{dst}mlp.fc2", prefix + names.fc2)

    def drop_targets(self, prefix: str, reason: str) -> None:
        """Drop the planned LastViT tensors under `prefix` (e.g. a head another readout replaces), with their sources."""
        kept = []
        for target, keys, fn in self.entries:
            if target.startswith(prefix):
                self.dropped[reason].extend(key for key in keys if key not in self.dropped[reason])
            else:
                kept.append((target, keys, fn))
        self.entries = kept

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
            lines = [f"The checkpoint does not have the layout of a {SOURCE_NAMES[self.source]}:"]
            if missing:
                lines.append(f"  missing keys ({len(missing)}): {preview_keys(missing)}")
            if unexpected:
                lines.append(f"  unexpected keys ({len(unexpected)}): {preview_keys(unexpected)}")
            lines.append(f"  its keys: {preview_keys(self.state_dict)}")
            lines.append("Check --from (and --checkpoint-key for files that hold several models).")
            raise ConversionError("\n".join(lines))
        converted = {}
        for target, keys, fn in self.entries:
            tensor = fn(*(self.state_dict[key] for key in keys))
            converted[target] = tensor.float() if tensor.is_floating_point() else tensor
        return converted


def require_key(state_dict: dict[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state_dict:
        raise ConversionError(
            f"The checkpoint has no {key!r}, so it is not a {SOURCE_NAMES[source]} (--from {source}). "
            f"Its keys: {preview_keys(state_dict)}. Check --from, and --checkpoint-key for files that hold several models."
        )
    return state_dict[key]


def count_blocks(state_dict: dict[str, torch.Tensor], pattern: str, source: str) -> int:
    indices = {int(match.group(1)) for key in state_dict if (match := re.match(pattern, key))}
    if not indices:
        raise ConversionError(
            f"found no transformer blocks (keys matching {pattern!r}) in the {SOURCE_NAMES[source]}."
        )
    if indices != set(range(len(indices))):
        raise ConversionError(f"the block indices of the {SOURCE_NAMES[source]} are not 0..L-1: {sorted(indices)}.")
    return len(indices)


def square_grid(num_patches: int, what: str) -> int:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ConversionError(f"{what} covers {num_patches} patches, which is not a square grid.")
    return side


def resolve_num_heads(hidden_size: int, requested: int | None, source: str) -> int:
    heads = requested or STANDARD_NUM_HEADS.get(hidden_size)
    if heads is None:
        raise ConversionError(
            f"a {SOURCE_NAMES[source]} checkpoint does not record its number of attention heads and width "
            f"{hidden_size} is not a standard one ({sorted(STANDARD_NUM_HEADS)}): pass --num-heads."
        )
    if hidden_size % heads:
        raise ConversionError(f"--num-heads {heads} does not divide the width {hidden_size}.")
    return heads


def zeros_like_bias(weight: torch.Tensor) -> torch.Tensor:
    return torch.zeros(weight.shape[0], dtype=weight.dtype)


# ------------------------------------------------------------------------------------------------
# Heads and the final config
# ------------------------------------------------------------------------------------------------


@dataclass
class SourceHead:
    weight: torch.Tensor | None  # None: a new, freshly initialised head
    bias: torch.Tensor | None
    num_labels: int
    classifier_input: str = "pooled"
    id2label: dict[int, str] | None = None


def resolve_head(source_head: SourceHead | None, options: ConversionOptions, notes: list[str]) -> SourceHead | None:
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
    return SourceHead(weight=None, bias=None, num_labels=options.num_labels)


def build_model(
    base_config: dict[str, Any],
    encoder: dict[str, torch.Tensor],
    head: SourceHead | None,
    options: ConversionOptions,
) -> LastViTModel | LastViTForImageClassification:
    config_kwargs = dict(base_config)
    source_pooling = config_kwargs.pop("pooling", "cls")  # a converter names the source's readout; CLS if not
    config_kwargs["pooling"] = source_pooling if options.pooling == "source" else options.pooling
    if config_kwargs["pooling"] == "map" and source_pooling != "map":
        raise ConversionError("--pooling map needs a source with an attention-pooling (MAP) head; this one has none.")
    if config_kwargs["pooling"] != "map":  # the source's MAP head is not part of another readout
        encoder = {key: value for key, value in encoder.items() if not key.startswith("pooler.map_head.")}
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


def encoder_config(**kwargs) -> dict[str, Any]:
    return dict(num_channels=3, **kwargs)


def dropped_counts(plan: KeyPlan) -> dict[str, int]:
    return {reason: len(keys) for reason, keys in plan.dropped.items() if keys}


def build_result(
    plan: KeyPlan,
    base_config: dict[str, Any],
    head: SourceHead | None,
    options: ConversionOptions,
    image_processor: LastViTImageProcessor,
    description: str,
    notes: list[str],
) -> ConversionResult:
    """Run `plan` and build the model: the last step of every converter of a non-transformers layout."""
    return ConversionResult(
        model=build_model(base_config, plan.execute(), head, options),
        image_processor=image_processor,
        source=plan.source,
        description=description,
        notes=notes,
        dropped=dropped_counts(plan),
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


def imagenet_full_crop_processor(image_size: int) -> LastViTImageProcessor:
    """Bicubic resize of the short side to the input size, centre crop (crop 1.0), ImageNet mean/std (timm's DINOv3)."""
    return _processor({"shortest_edge": image_size}, image_size, PIL_BICUBIC, IMAGENET_MEAN, IMAGENET_STD)
