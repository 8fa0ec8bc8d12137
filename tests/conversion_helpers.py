"""Shared pieces of the conversion tests (`tests/test_conversion_*.py`): tiny, randomly initialised
sources of every kind, perturbed so that no parameter keeps its (often trivial) initial value, and the
tolerance every parity test uses (1e-5 absolute in fp32)."""

import numpy as np
import torch
import transformers
from PIL import Image

from .reference_vits import ClipStub, DinoViT, TorchvisionViT

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
ATOL = 1e-5
NATIVE = (32, 32)
SIZES = [NATIVE, (48, 40), (24, 24)]  # native, upsampled non-square, downsampled
SIZE_IDS = ["native", "48x40", "24x24"]
TINY = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
IMAGENET_MEAN, CLIP_MEAN = [0.485, 0.456, 0.406], [0.48145466, 0.4578275, 0.40821073]


def pixels(size=NATIVE, batch=2, seed=3):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs diff {diff:.2e} > {ATOL}"


def perturbed(model):
    """Random tiny models start with LayerNorm = identity, zero biases and tokens: move every parameter."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return model.eval()


_CLIP_TEXT = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "vocab_size": 50,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}
HF_SOURCES = {
    "ViTModel": lambda: transformers.ViTModel(transformers.ViTConfig(**TINY, intermediate_size=64)),
    "ViTForImageClassification": lambda: transformers.ViTForImageClassification(
        transformers.ViTConfig(**TINY, intermediate_size=64, num_labels=3)
    ),
    "DeiTModel": lambda: transformers.DeiTModel(transformers.DeiTConfig(**TINY, intermediate_size=64)),
    "DeiTForImageClassification": lambda: transformers.DeiTForImageClassification(
        transformers.DeiTConfig(**TINY, intermediate_size=64, num_labels=3)
    ),
    "DeiTForImageClassificationWithTeacher": lambda: transformers.DeiTForImageClassificationWithTeacher(
        transformers.DeiTConfig(**TINY, intermediate_size=64, num_labels=3)
    ),
    "Dinov2Model": lambda: transformers.Dinov2Model(transformers.Dinov2Config(**TINY, mlp_ratio=2)),
    "Dinov2Model-swiglu": lambda: transformers.Dinov2Model(
        transformers.Dinov2Config(**TINY, mlp_ratio=4, use_swiglu_ffn=True)
    ),
    "Dinov2ForImageClassification": lambda: transformers.Dinov2ForImageClassification(
        transformers.Dinov2Config(**TINY, mlp_ratio=2, num_labels=3)
    ),
    "Dinov2WithRegistersModel": lambda: transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(**TINY, mlp_ratio=2, num_register_tokens=2)
    ),
    "Dinov2WithRegistersForImageClassification": lambda: transformers.Dinov2WithRegistersForImageClassification(
        transformers.Dinov2WithRegistersConfig(**TINY, mlp_ratio=2, num_register_tokens=2, num_labels=3)
    ),
    "CLIPVisionModel": lambda: transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(**TINY, intermediate_size=64)
    ),
    "CLIPVisionModelWithProjection": lambda: transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**TINY, intermediate_size=64, projection_dim=16)
    ),
    "CLIPModel": lambda: transformers.CLIPModel(
        transformers.CLIPConfig(
            vision_config=dict(**TINY, intermediate_size=64), text_config=_CLIP_TEXT, projection_dim=16
        )
    ),
}


def timm_outputs(model, x):
    """A timm model's block outputs (and the first block's input), final tokens, pooled feature and logits."""
    captured = []
    hooks = [model.blocks[0].register_forward_pre_hook(lambda m, args: captured.append(args[0]))]
    hooks += [block.register_forward_hook(lambda m, a, out: captured.append(out)) for block in model.blocks]
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
        logits = model.forward_head(tokens)
    for hook in hooks:
        hook.remove()
    return captured, tokens, pooled, logits


def assert_matches_timm(converted, model, x, name, has_head):
    """The converted folder's hidden states, last hidden state, pooled output (and logits where the
    timm model has a head) equal timm's own forward within ATOL."""
    from modeling_lastvit import LastViTForImageClassification

    base = converted.lastvit if isinstance(converted, LastViTForImageClassification) else converted
    hidden, tokens, pooled, logits = timm_outputs(model, x)
    with torch.no_grad():
        ours = base(x, output_hidden_states=True)
    assert len(ours.hidden_states) == len(hidden)
    for i, (expected, actual) in enumerate(zip(hidden, ours.hidden_states)):
        assert_close(actual, expected, f"{name} hidden_states[{i}]")
    assert_close(ours.last_hidden_state, tokens, f"{name} last_hidden_state")
    assert_close(ours.pooler_output, pooled, f"{name} pooler_output")
    if has_head:
        with torch.no_grad():
            assert_close(converted(x).logits, logits, f"{name} logits")
    else:
        assert not isinstance(converted, LastViTForImageClassification)


def hf_source(name):
    torch.manual_seed(0)
    return perturbed(HF_SOURCES[name]())


HF_PROCESSORS = {
    "ViTForImageClassification": lambda: transformers.ViTImageProcessor(size={"height": 32, "width": 32}),
    "DeiTForImageClassificationWithTeacher": lambda: transformers.DeiTImageProcessor(
        size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32}
    ),
    "Dinov2WithRegistersForImageClassification": lambda: transformers.BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=[0.229, 0.224, 0.225],
    ),
    "CLIPVisionModelWithProjection": lambda: transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ),
}


def random_image(height=45, width=61, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def torchvision_reference(**kwargs):
    torch.manual_seed(1)
    return perturbed(TorchvisionViT(**kwargs))


def detectron2_file(path, model):
    """How detectron2 saves the authors' model: {'model': ClassificationNet state dict, ...}."""
    torch.save({"model": {f"model.{k}": v for k, v in model.state_dict().items()}, "iteration": 190000}, path)
    return path


def dino_reference():
    torch.manual_seed(2)
    return perturbed(DinoViT())


def clip_reference(act=None):
    torch.manual_seed(4)
    return perturbed(ClipStub(act=act) if act else ClipStub())


def save_torchscript_clip(path, reference):
    """An OpenAI-style TorchScript archive (fp16 weights, like OpenAI's released `.pt` files)."""
    traced = torch.jit.trace(reference, pixels(batch=1))
    traced.half()
    torch.jit.save(traced, str(path))
    return path


# The transformers ViT families of 2025-26 (`conversion/hf_recent.py`): tiny random sources. Heads of 8 channels
# (RoPE needs a multiple of 4); DINOv3 with registers, both MLP kinds and the biases it leaves out.
_SIGLIP_TEXT = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
_SIGLIP_TEXT.update(vocab_size=50, max_position_embeddings=16, pad_token_id=1, bos_token_id=0, eos_token_id=1)
_AIMV2_TEXT = {**_SIGLIP_TEXT, "eos_token_id": 1}
_TINY_SIGLIP2 = {k: v for k, v in TINY.items() if k != "image_size"} | {"num_patches": 16, "intermediate_size": 64}
RECENT_SOURCES = {
    "DINOv3ViTModel": lambda: transformers.DINOv3ViTModel(
        transformers.DINOv3ViTConfig(**TINY, intermediate_size=64, num_register_tokens=2, layerscale_value=0.5)
    ),
    "DINOv3ViTModel-gated": lambda: transformers.DINOv3ViTModel(
        transformers.DINOv3ViTConfig(
            **TINY, intermediate_size=48, use_gated_mlp=True, hidden_act="silu", mlp_bias=False, rope_theta=50.0
        )
    ),
    "SiglipVisionModel": lambda: transformers.SiglipVisionModel(
        transformers.SiglipVisionConfig(**TINY, intermediate_size=64)
    ),
    "SiglipModel": lambda: transformers.SiglipModel(
        transformers.SiglipConfig(vision_config=dict(**TINY, intermediate_size=64), text_config=_SIGLIP_TEXT)
    ),
    "Siglip2VisionModel": lambda: transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**_TINY_SIGLIP2)),
    "Aimv2VisionModel": lambda: transformers.Aimv2VisionModel(
        transformers.Aimv2VisionConfig(**TINY, intermediate_size=64)
    ),
    "Aimv2VisionModel-48px-biases": lambda: transformers.Aimv2VisionModel(
        transformers.Aimv2VisionConfig(
            **{**TINY, "image_size": 48}, intermediate_size=64, qkv_bias=True, mlp_bias=True
        )
    ),
    "Aimv2VisionModel-native": lambda: transformers.Aimv2VisionModel(
        transformers.Aimv2VisionConfig(**TINY, intermediate_size=64, is_native=True)
    ),
    "Aimv2Model": lambda: transformers.Aimv2Model(
        transformers.Aimv2Config(
            vision_config=dict(**TINY, intermediate_size=64), text_config=_AIMV2_TEXT, projection_dim=16
        )
    ),
    "IJepaModel": lambda: transformers.IJepaModel(transformers.IJepaConfig(**TINY, intermediate_size=64)),
    "IJepaForImageClassification": lambda: transformers.IJepaForImageClassification(
        transformers.IJepaConfig(**TINY, intermediate_size=64, num_labels=3)
    ),
}


def recent_source(name):
    torch.manual_seed(0)
    return perturbed(RECENT_SOURCES[name]())


RECENT_PROCESSORS = {
    "SiglipVisionModel": lambda: transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32}),
    "Aimv2VisionModel": lambda: transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ),
    "IJepaForImageClassification": lambda: transformers.ViTImageProcessorPil(size={"height": 32, "width": 32}),
}
# DINOv3's image processor needs torchvision, which does not load on the CPU test machine: its settings as saved.
DINOV3_PROCESSOR_CONFIG = {
    "image_processor_type": "DINOv3ViTImageProcessorFast",
    "do_resize": True,
    "size": {"height": 32, "width": 32},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": IMAGENET_MEAN,
    "image_std": [0.229, 0.224, 0.225],
}
