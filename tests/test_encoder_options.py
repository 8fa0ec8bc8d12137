"""Encoder options of newer ViT families (2-D RoPE, no absolute positions, RMSNorm, gated MLP, patch norm, MAP
readout): each is off by default, validated in the config with one clear line, and off means the plain ViT's
modules and state dict unchanged. Parity with the sources is in tests/test_conversion_hf_recent.py."""

import math

import pytest
import torch
from torch import nn

from modeling_lastvit import LastViTModel
from modeling_lastvit.modeling_lastvit import LastViTRMSNorm, LastViTRotaryEmbedding, apply_rotary_to_patches

from .tiny import tiny_config

ENCODER_OPTIONS = {
    "use_gated_mlp": False,
    "norm_type": "layer_norm",
    "use_patch_norm": False,
    "position_embedding_type": "learned",
    "rope_type": None,
    "rope_reference_grid": None,
    "use_attention_sub_norm": False,
    "use_mlp_sub_norm": False,
    "map_head_query_projection": True,
    "map_head_mlp": True,
}


def test_every_new_option_defaults_to_the_plain_vit():
    config = tiny_config()
    assert {name: getattr(config, name) for name in ENCODER_OPTIONS} == ENCODER_OPTIONS


def test_options_off_leave_the_plain_vit_modules_and_state_dict_unchanged():
    model = LastViTModel(tiny_config())
    assert model.rotary_embeddings is None and model.embeddings.patch_norm is None
    assert model.pooler.map_head is None
    assert {type(m).__name__ for m in model.modules()} == {
        "LastViTModel",
        "LastViTEmbeddings",
        "LastViTPatchEmbeddings",
        "Conv2d",
        "Dropout",
        "LastViTEncoder",
        "ModuleList",
        "LastViTLayer",
        "LayerNorm",
        "LastViTAttention",
        "Linear",
        "Identity",
        "LastViTMLP",
        "GELUActivation",
        "LastViTPooler",
        "LazyStrikePooler",
    }
    assert not [key for key in model.state_dict() if "map_head" in key or "patch_norm" in key or "rotary" in key]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(norm_type="batch_norm"), "unknown `norm_type` 'batch_norm'"),
        (dict(position_embedding_type="sincos"), "unknown `position_embedding_type` 'sincos'"),
        (dict(use_gated_mlp=True, use_swiglu_ffn=True), "set only one of `use_gated_mlp`"),
        (dict(rope_type="axial"), "unknown `rope_type` 'axial'"),
        (
            dict(rope_type="dinov3", rope_reference_grid=16),
            "`rope_reference_grid` only applies with `rope_type='eva'`",
        ),
        (dict(rope_type="eva", rope_reference_grid=0), "`rope_reference_grid` must be positive"),
        (dict(use_mlp_sub_norm=True), "set `use_gated_mlp=True` too"),
        (dict(position_embedding_type="sincos_2d", hidden_size=30, num_attention_heads=3), "divisible by 4, got 30"),
        (dict(rope_type="dinov3", hidden_size=24, num_attention_heads=4), "head dimension divisible by 4, got 6"),
        (dict(rope_type="dinov3", rope_theta=0.0), "`rope_theta` must be > 0"),
        (dict(pooling="pool"), "unknown `pooling` 'pool'"),
    ],
)
def test_invalid_encoder_options_raise_one_clear_line(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        tiny_config(**overrides)
    assert "\n" not in str(error.value)


def test_rope_rotates_patch_tokens_only_and_keeps_cls_and_registers():
    config = tiny_config(rope_type="dinov3", position_embedding_type="none", num_register_tokens=2)
    cos, sin = LastViTRotaryEmbedding(config)(torch.zeros(1, 3, 32, 24), torch.float32)
    assert cos.shape == sin.shape == (4 * 3, config.head_dim)
    query, key = torch.randn(2, 4, 3 + 12, 8), torch.randn(2, 4, 3 + 12, 8)
    rotated_q, rotated_k = apply_rotary_to_patches(query, key, cos, sin)
    torch.testing.assert_close(rotated_q[:, :, :3], query[:, :, :3], rtol=0, atol=0)
    torch.testing.assert_close(rotated_k[:, :, :3], key[:, :, :3], rtol=0, atol=0)
    # a rotation: every (i, i + head_dim / 2) pair keeps its length
    norms = lambda x: x[..., :4].pow(2) + x[..., 4:].pow(2)
    torch.testing.assert_close(norms(rotated_q[:, :, 3:]), norms(query[:, :, 3:]))


def test_rope_angles_follow_dinov3s_normalised_patch_centres():
    config = tiny_config(rope_type="dinov3", rope_theta=100.0)
    cos, _ = LastViTRotaryEmbedding(config)(torch.zeros(1, 3, 16, 8), torch.float32)  # a 2 x 1 grid
    # head_dim 8: 2 frequencies per axis, 1 and 100 ** -0.5; y centres -0.5 and 0.5, x centre 0
    frequencies = torch.tensor([1.0, 100**-0.5])
    expected_top = torch.cat([torch.cos(2 * math.pi * -0.5 * frequencies), torch.ones(2)]).tile(2)
    torch.testing.assert_close(cos[0], expected_top)


def test_eva_rope_angles_are_patch_indices_scaled_to_the_reference_grid_times_the_frequencies():
    config = tiny_config(rope_type="eva", rope_theta=10000.0, rope_reference_grid=4)
    cos, sin = LastViTRotaryEmbedding(config)(torch.zeros(1, 3, 16, 8), torch.float32)  # a 2 x 1 grid
    # head_dim 8: 2 frequencies per axis, 1 and 10000 ** -0.5; rows 0 and 1 scaled by 4 / 2, column 0
    frequencies = torch.tensor([1.0, 10000**-0.5])
    torch.testing.assert_close(cos[1], torch.cat([torch.cos(2.0 * frequencies), torch.ones(2)]).tile(2))
    torch.testing.assert_close(sin[0], torch.zeros(8))


def test_sub_norms_sit_before_the_output_projections():
    config = tiny_config(use_gated_mlp=True, hidden_act="silu", use_mlp_sub_norm=True, use_attention_sub_norm=True)
    layer = LastViTModel(config).encoder.layer[0]
    assert layer.attention.sub_norm.normalized_shape == (32,)
    assert layer.mlp.sub_norm.normalized_shape == (config.intermediate_size,)
    x = torch.randn(2, 5, 32)
    mlp = layer.mlp
    hidden = nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x)
    torch.testing.assert_close(mlp(x), mlp.down_proj(mlp.sub_norm(hidden)))


def test_rms_norm_is_weight_times_x_over_root_mean_square():
    norm = LastViTRMSNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(3, 6)
    torch.testing.assert_close(
        norm(x), torch.arange(1.0, 7.0) * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    )


def test_map_head_equals_torch_multihead_attention_on_the_projected_probe():
    config = tiny_config(pooling="map", map_head_mlp=False)
    model = LastViTModel(config).eval()
    head = model.pooler.map_head
    reference = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        head.probe.normal_()
        reference.in_proj_weight.copy_(torch.cat([head.q_proj.weight, head.k_proj.weight, head.v_proj.weight]))
        reference.in_proj_bias.copy_(torch.cat([head.q_proj.bias, head.k_proj.bias, head.v_proj.bias]))
        reference.out_proj.load_state_dict(head.o_proj.state_dict())
        tokens = torch.randn(2, 16, 32)
        expected = reference(head.probe.expand(2, -1, -1), tokens, tokens)[0][:, 0]
        torch.testing.assert_close(head(tokens), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        dict(rope_type="dinov3", position_embedding_type="none", num_register_tokens=2),
        dict(norm_type="rms_norm", use_patch_norm=True, use_gated_mlp=True, hidden_act="silu"),
        dict(use_cls_token=False, pooling="map", position_embedding_type="sincos_2d"),
        dict(use_cls_token=False, pooling="map", map_head_query_projection=False, map_head_mlp=False),
        dict(
            rope_type="eva",
            rope_reference_grid=16,
            use_gated_mlp=True,
            hidden_act="silu",
            use_mlp_sub_norm=True,
            use_attention_sub_norm=True,
        ),
    ],
    ids=["dinov3", "aimv2-encoder", "siglip", "aimv2-head", "eva02"],
)
def test_option_sets_run_at_any_input_size_and_train(options):
    model = LastViTModel(tiny_config(**options))
    out = model(torch.randn(2, 3, 48, 40), output_hidden_states=True)
    assert out.pooler_output.shape == (2, 32) and len(out.hidden_states) == 3
    out.pooler_output.sum().backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if "pooler" in name)
