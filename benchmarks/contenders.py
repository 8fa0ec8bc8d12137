"""What is timed: the shapes, the contenders (LastViT and the transformers / timm models it is measured
against) and how each is built, plus the checks that a LastViT and its peer compute the same thing."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    hidden_size: int
    num_heads: int
    num_layers: int
    mlp_size: int
    image_size: int
    patch_size: int

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def vit_config(self) -> dict:
        """The shape as ViTConfig / LastViTConfig arguments (the two share these names)."""
        return {
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_heads,
            "num_hidden_layers": self.num_layers,
            "intermediate_size": self.mlp_size,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
        }


SHAPES = {
    "S/16": Shape("S/16", 384, 6, 12, 1536, 224, 16),
    "B/16": Shape("B/16", 768, 12, 12, 3072, 224, 16),
    "L/16": Shape("L/16", 1024, 16, 24, 4096, 224, 16),
    # Only for --quick and the smoke tests: a 2-block, 64-wide model on 32x32 inputs.
    "tiny": Shape("tiny", 64, 4, 2, 256, 32, 8),
}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GPU_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Contender:
    key: str
    label: str
    build: Callable[[Shape], nn.Module]
    feature: Callable[[object], torch.Tensor]
    """The global feature a training loss reads from the model's output."""
    peer: str | None = None
    """Key of the transformers model computing the same thing (for LastViT contenders)."""
    timed: bool = True
    """Timed in the CPU inference rounds (the K=N/2 model is not: its pooler is timed alone)."""
    train: bool = True
    """Timed in the CPU training rounds (the GPU section times every contender)."""
    memory: bool = True
    heavy: bool = True
    """Also timed in heavy CPU groups (B/16 b16), where the K=1 model is left out to keep the run short:
    its pooler is timed alone there."""


def _lastvit(shape: Shape, **options) -> nn.Module:
    from modeling_lastvit import LastViTConfig, LastViTModel

    return LastViTModel(LastViTConfig(**shape.vit_config(), **options))


def _vit(shape: Shape) -> nn.Module:
    from transformers import ViTConfig, ViTModel

    # layer_norm_eps: LastViT's; it only changes numerics, and lets the outputs be compared
    config = ViTConfig(**shape.vit_config(), layer_norm_eps=1e-6)
    return ViTModel(config, add_pooling_layer=False)


def _dinov2_registers(shape: Shape) -> nn.Module:
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(
        hidden_size=shape.hidden_size,
        num_attention_heads=shape.num_heads,
        num_hidden_layers=shape.num_layers,
        mlp_ratio=shape.mlp_size // shape.hidden_size,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        num_register_tokens=4,
        layerscale_value=1.0,
    )
    return Dinov2WithRegistersModel(config)


def _timm_vit(shape: Shape) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    # num_classes=0: no head, the forward returns the (final-norm) CLS token, as LastViT cls pools
    return VisionTransformer(
        img_size=shape.image_size,
        patch_size=shape.patch_size,
        embed_dim=shape.hidden_size,
        depth=shape.num_layers,
        num_heads=shape.num_heads,
        mlp_ratio=shape.mlp_size / shape.hidden_size,
        num_classes=0,
        global_pool="token",
    )


def _cls_token(output) -> torch.Tensor:
    return output.last_hidden_state[:, 0]


def _pooled(output) -> torch.Tensor:
    return output.pooler_output


def _itself(output) -> torch.Tensor:
    return output


REGISTERS = {"num_register_tokens": 4, "layerscale_value": 1.0}

CONTENDERS = {
    c.key: c
    for c in (
        Contender("vit", "ViTModel", _vit, _cls_token),
        # A/A control: the same model with the same weights, built a second time. Its ratio to the first
        # instance is what the machine's noise (and where each instance's memory landed) alone produces.
        Contender("vit-2", "ViTModel, 2nd instance (A/A control)", _vit, _cls_token, peer="vit", memory=False),
        Contender("lastvit-cls", "LastViT cls", lambda s: _lastvit(s, pooling="cls"), _pooled, peer="vit"),
        Contender("dinov2-reg", "Dinov2WithRegistersModel", _dinov2_registers, _pooled),
        Contender(
            "lastvit-cls-reg",
            "LastViT cls+reg4+LS",
            lambda s: _lastvit(s, pooling="cls", **REGISTERS),
            _pooled,
            peer="dinov2-reg",
        ),
        Contender(
            "lastvit-lazy-k1",
            "LastViT LazyStrike K=1 +reg4+LS",
            lambda s: _lastvit(s, pooling="lazystrike", lazystrike_top_k=1, **REGISTERS),
            _pooled,
            peer="dinov2-reg",
            heavy=False,
        ),
        Contender(
            "lastvit-lazy-khalf",
            "LastViT LazyStrike K=N/2 +reg4+LS",
            lambda s: _lastvit(
                s, pooling="lazystrike", lazystrike_top_k=None, lazystrike_top_k_ratio=0.5, **REGISTERS
            ),
            _pooled,
            peer="dinov2-reg",
            timed=False,
            train=False,
        ),
    )
}
TIMM = Contender("timm", "timm VisionTransformer", _timm_vit, _itself, timed=False, train=False, memory=False)
"""timm's ViT (fused attention through torch's SDPA): a GPU-section contender when timm imports."""

PEER_PAIRS = (("lastvit-cls", "vit"), ("lastvit-cls-reg", "dinov2-reg"))
GPU_PEER_PAIRS = PEER_PAIRS + (("lastvit-cls", "timm"),)
CONTROL = ("vit-2", "vit")
POOLERS = (("1", {"lazystrike_top_k": 1}), ("N/2", {"lazystrike_top_k": None, "lazystrike_top_k_ratio": 0.5}))
"""The LazyStrike settings whose pooler is timed alone, on the final tokens of the CLS+reg4+LS model."""


def timm_available() -> bool:
    """timm is installed and the torchvision it imports loads (installed is not enough: without a working
    torchvision, timm fails at import). Checked through torchvision, so that a timm a test imported with a
    stand-in for torchvision does not count: the benchmark's own process could not import it."""
    if importlib.util.find_spec("timm") is None:
        return False
    try:
        importlib.import_module("torchvision")
    except (ImportError, RuntimeError, OSError, AttributeError):
        return False
    return True


def lazystrike_pooler(model: nn.Module, **options) -> nn.Module:
    """The pooler of `model`'s configuration with LazyStrike `options` (no second model needed)."""
    from modeling_lastvit.modeling_lastvit import LastViTPooler

    config = copy.deepcopy(model.config)
    for name, value in {"pooling": "lazystrike", **options}.items():
        setattr(config, name, value)
    device = next(model.parameters()).device
    return LastViTPooler(config).to(device)


def load_variants(path: str) -> list[Contender]:
    """Extra contenders from a Python file defining ``CONTENDERS``: a list of `Contender`s (e.g.
    prototypes of model changes, with `peer` naming the contender they should beat), timed in the same
    rounds. The file imports the class with ``from benchmarks.contenders import Contender``."""
    if not Path(path).is_file():
        raise SystemExit(f"--variants: no Python file at {path!r}.")
    spec = importlib.util.spec_from_file_location("lastvit_bench_variants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    variants = getattr(module, "CONTENDERS", None)
    if not variants or not all(isinstance(v, Contender) for v in variants):
        raise SystemExit(
            f"--variants: {path} must define CONTENDERS, a non-empty list of benchmarks.contenders.Contender."
        )
    return list(variants)


class UnsupportedAttention(RuntimeError):
    """The contender cannot run the requested attention implementation (not installed, not supported)."""


def build_model(
    contender: Contender,
    shape: Shape,
    dtype: torch.dtype,
    train: bool = False,
    attn: str = "sdpa",
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The contender at `shape`, seeded, with attention implementation `attn`, in `dtype` on `device`
    (built there: initialising ViT-L on the CPU first would take longer than timing it on a GPU)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = contender.build(shape)
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation(attn)
        except (ImportError, ValueError) as error:
            raise UnsupportedAttention(str(error).splitlines()[0]) from error
        if model.config._attn_implementation != attn:
            raise RuntimeError(f"{contender.label} did not switch to {attn} attention.")
    elif attn != "sdpa":  # timm: fused attention is torch's SDPA, nothing else
        raise UnsupportedAttention(f"it runs only torch's SDPA attention, not {attn!r}.")
    return model.to(dtype).train(train)


def copy_peer_weights(lastvit: nn.Module, peer: nn.Module) -> None:
    """Load a ViTModel / Dinov2WithRegistersModel state dict into the matching LastViT (strict)."""
    renamed = {}
    for key, value in peer.state_dict().items():
        if key == "embeddings.mask_token":
            continue
        key = re.sub(r"^layers\.", "encoder.layer.", key)
        key = key.replace(".layernorm_before.", ".norm1.").replace(".layernorm_after.", ".norm2.")
        renamed[key] = value
    lastvit.load_state_dict(renamed, strict=True)
