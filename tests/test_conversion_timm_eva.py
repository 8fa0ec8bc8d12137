"""`--from timm-eva`: timm `Eva` state dicts (EVA-01, EVA02 with fused or split attention, packed or split SwiGLU with
and without sub-LN, EVA02-CLIP's attention sub-LN, timm's DINOv3 ports) convert with outputs equal to timm's own
`Eva.forward` at two input sizes.

timm is imported for real (through the test-only torchvision stand-in where torchvision does not load, see
tests/torchvision_standin.py); every parity test asserts the stand-in was not touched after timm's import."""

import pytest
import torch

from lastvit.conversion import ConversionError, ConversionOptions, convert_timm_state_dict
from lastvit.conversion.timm_eva import convert_timm_eva_state_dict

from .conversion_helpers import NATIVE, assert_close, assert_matches_timm, perturbed, pixels
from .torchvision_standin import import_timm, uses_after_import

try:
    timm, USED_STANDIN = import_timm()
except ImportError as error:  # timm not installed
    pytest.skip(
        f"timm is not importable ({error}); `pip install --no-deps timm` (as .ci/run does) runs these tests",
        allow_module_level=True,
    )

from functools import partial

from timm.layers import LayerNorm
from timm.models.eva import Eva

BASE = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, dynamic_img_size=True)
EVA02 = dict(
    mlp_ratio=4 * 2 / 3, swiglu_mlp=True, use_rot_pos_emb=True, ref_feat_shape=(16, 16)
)  # timm's, every EVA02
DINOV3 = dict(
    init_values=1e-5,
    rope_type="dinov3",
    rope_temperature=100,
    rope_rotate_half=True,
    use_rot_pos_emb=True,
    use_abs_pos_emb=False,
    num_reg_tokens=2,
    use_fc_norm=False,
    norm_layer=partial(LayerNorm, eps=1e-5),
)
# name -> (timm Eva arguments, conversion options the state dict cannot tell)
TIMM_EVAS = {
    "eva02-tiny-fused-packed-swiglu-avg": (
        dict(EVA02, ref_feat_shape=(3, 3), num_classes=3),
        dict(rope_reference_grid=3),
    ),
    "eva02-base-split-swiglu-sub-ln": (dict(EVA02, qkv_fused=False, scale_mlp=True, num_classes=3), {}),
    "eva02-clip-attention-sub-ln-token": (
        dict(EVA02, qkv_fused=False, scale_mlp=True, scale_attn_inner=True, global_pool="token", num_classes=0),
        dict(global_pool="token"),
    ),
    "eva01-layerscale-no-rope": (dict(mlp_ratio=2.0, init_values=0.1, num_classes=3), {}),
    "dinov3-token-no-qkv-bias": (
        dict(DINOV3, mlp_ratio=2.0, qkv_bias=False, global_pool="token", num_classes=0),
        dict(global_pool="token"),
    ),
    "dinov3-swiglu-avg": (dict(DINOV3, mlp_ratio=2.0, swiglu_mlp=True, swiglu_align_to=8, num_classes=3), {}),
    "rope-reg1-no-cls-avg": (
        dict(
            mlp_ratio=2.0,
            init_values=1e-5,
            class_token=False,
            num_reg_tokens=1,
            use_rot_pos_emb=True,
            use_abs_pos_emb=False,
            ref_feat_shape=(3, 3),
            num_classes=0,
        ),
        dict(rope="eva", rope_reference_grid=3),
    ),
}


def timm_eva(name):
    torch.manual_seed(5)
    return perturbed(Eva(**BASE, **TIMM_EVAS[name][0]))


def convert(name, **options):
    model = timm_eva(name)
    options = {"num_heads": 4, **TIMM_EVAS[name][1], **options}
    return model, convert_timm_eva_state_dict(model.state_dict(), ConversionOptions(**options))


@pytest.mark.parametrize("size", [NATIVE, (48, 40)], ids=["native", "48x40"])
@pytest.mark.parametrize("name", list(TIMM_EVAS))
def test_timm_evas_convert_with_outputs_equal_to_timms_forward(name, size):
    model, result = convert(name)
    assert_matches_timm(result.model, model, pixels(size), name, has_head=bool(TIMM_EVAS[name][0]["num_classes"]))
    assert uses_after_import() == []


def test_a_fixed_size_eva02_with_its_cached_rope_converts_with_equal_outputs():
    """timm's EVA02 models are built with a fixed input size (RoPE cached for the native grid, ref_feat_shape 16)."""
    torch.manual_seed(5)
    model = perturbed(
        Eva(**{**BASE, "dynamic_img_size": False}, **EVA02, qkv_fused=False, scale_mlp=True, num_classes=3)
    )
    converted = convert_timm_eva_state_dict(model.state_dict(), ConversionOptions(num_heads=4)).model
    x = pixels()
    with torch.no_grad():
        assert_close(converted(x).logits, model(x), "fixed-size EVA02 logits")
        assert_close(converted.lastvit(x).last_hidden_state, model.forward_features(x), "fixed-size EVA02 tokens")
    assert uses_after_import() == []


def test_the_options_eva02_needs_are_read_from_its_keys():
    config = convert("eva02-base-split-swiglu-sub-ln")[1].model.config
    assert (config.rope_type, config.rope_theta, config.rope_reference_grid) == ("eva", 10000.0, 16)
    assert config.use_gated_mlp and config.use_mlp_sub_norm and config.hidden_act == "silu"
    assert not config.use_attention_sub_norm and config.use_fc_norm and config.pooling == "mean"
    clip = convert("eva02-clip-attention-sub-ln-token")[1].model.config
    assert clip.use_attention_sub_norm and clip.pooling == "cls" and not clip.use_fc_norm
    dinov3 = convert("dinov3-token-no-qkv-bias")[1]
    assert (dinov3.model.config.rope_type, dinov3.model.config.layer_norm_eps) == ("dinov3", 1e-5)
    assert dinov3.model.config.position_embedding_type == "none" and dinov3.model.config.num_register_tokens == 2
    assert list(dinov3.image_processor.image_mean) == [0.485, 0.456, 0.406]
    eva01 = convert("eva01-layerscale-no-rope")[1].model.config
    assert eva01.rope_type is None and not eva01.use_gated_mlp and eva01.layerscale_value is not None


def test_evas_interleaved_rope_becomes_rotate_half_by_permuting_query_and_key_channels():
    model, result = convert("eva02-tiny-fused-packed-swiglu-avg")
    q, k, v = model.blocks[0].attn.qkv.weight.chunk(3)
    layer = result.model.lastvit.encoder.layer[0].attention
    order = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])  # head_dim 8
    for ours, theirs in ((layer.q_proj.weight, q), (layer.k_proj.weight, k)):
        torch.testing.assert_close(ours, theirs.reshape(4, 8, -1)[:, order].reshape(32, -1), rtol=0, atol=0)
    torch.testing.assert_close(layer.v_proj.weight, v, rtol=0, atol=0)
    assert not layer.k_proj.bias.any()  # EVA's key has no bias


def test_a_timm_eva_read_out_with_lazystrike_keeps_every_encoder_tensor():
    _, result = convert("eva02-base-split-swiglu-sub-ln", pooling="lazystrike", top_k=1, num_labels=0)
    assert result.model.config.pooling == "lazystrike" and result.source_pooling == "mean"
    assert "fc_norm" in result.source_readout


def test_unsupported_timm_eva_variants_are_refused_naming_the_key():
    for extra, match in ((dict(qk_norm=True), "qk_norm"), (dict(attn_type="rope"), "AttentionRope")):
        model = Eva(**BASE, num_classes=0, **extra)
        with pytest.raises(ConversionError, match=match):
            convert_timm_eva_state_dict(model.state_dict(), ConversionOptions(num_heads=4))
    model = Eva(**BASE, **EVA02, global_pool="map", num_classes=0)
    with pytest.raises(ConversionError, match="SwiGLU MLP with an attention-pool head"):
        convert_timm_eva_state_dict(model.state_dict(), ConversionOptions(num_heads=4))


def test_a_timm_eva_state_dict_given_to_the_vit_converter_is_pointed_to_timm_eva():
    with pytest.raises(ConversionError, match="--from timm-eva"):
        convert_timm_state_dict(timm_eva("eva02-tiny-fused-packed-swiglu-avg").state_dict(), ConversionOptions())


def test_eva_only_flags_are_refused_for_other_sources(tmp_path):
    from lastvit.conversion import convert_checkpoint

    with pytest.raises(ConversionError, match="--rope only apply with --from timm-eva"):
        convert_checkpoint("timm", str(tmp_path / "missing.pth"), ConversionOptions(rope="eva"))
