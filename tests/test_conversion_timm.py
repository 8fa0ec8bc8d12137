"""`--from timm`: timm `VisionTransformer` state dicts (CLS / registers, no_embed_class, norm_pre, LayerScale, every
global_pool with and without fc_norm, dynamic image size) convert with outputs equal to timm's own forward.

timm is imported for real and its own `VisionTransformer.forward` is the reference. On machines where torchvision
does not load (the CPU torch wheel), `tests/torchvision_standin.py` stands in for the torchvision names timm imports
at import time; every test asserts the stand-in was not touched after timm's import, i.e. timm's ViT code ran
unchanged. Without timm installed the tests are skipped."""

import pytest
import torch

from lastvit.conversion import ConversionError, ConversionOptions, convert_timm_state_dict

from .conversion_helpers import NATIVE, assert_matches_timm, perturbed, pixels
from .torchvision_standin import import_timm, uses_after_import

try:
    timm, USED_STANDIN = import_timm()
except ImportError as error:  # timm not installed
    pytest.skip(
        f"timm is not importable ({error}); `pip install --no-deps timm` (as .ci/run does) runs these tests",
        allow_module_level=True,
    )

from timm.models.vision_transformer import VisionTransformer

BASE = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0, dynamic_img_size=True)
TIMM_VITS = {
    "cls-reg2-token-layerscale": dict(reg_tokens=2, global_pool="token", init_values=0.1, num_classes=3),
    "reg4-map-no-cls": dict(class_token=False, reg_tokens=4, global_pool="map", num_classes=3),
    "cls-map": dict(global_pool="map", num_classes=0),
    "no-embed-class-avg-fc-norm": dict(no_embed_class=True, reg_tokens=1, global_pool="avg", num_classes=3),
    "avgmax-fc-norm": dict(reg_tokens=2, global_pool="avgmax", num_classes=3),
    "max-no-fc-norm": dict(global_pool="max", fc_norm=False, num_classes=3),
    "pre-norm-token-no-head": dict(pre_norm=True, global_pool="token", num_classes=0),
    "no-cls-avg": dict(class_token=False, global_pool="avg", num_classes=0),
}
EXPLICIT_POOL = {"avgmax-fc-norm": "avgmax", "max-no-fc-norm": "max"}  # not recorded in the state dict


def timm_vit(name):
    torch.manual_seed(5)
    return perturbed(VisionTransformer(**BASE, **TIMM_VITS[name]))


def convert(name, **options):
    model = timm_vit(name)
    options.setdefault("num_heads", 4)
    options.setdefault("global_pool", EXPLICIT_POOL.get(name))
    return model, convert_timm_state_dict(model.state_dict(), ConversionOptions(**options))


@pytest.mark.parametrize("size", [NATIVE, (48, 40)], ids=["native", "48x40"])
@pytest.mark.parametrize("name", list(TIMM_VITS))
def test_timm_vits_convert_with_outputs_equal_to_timms_forward(name, size):
    model, result = convert(name)
    assert_matches_timm(result.model, model, pixels(size), name, has_head=bool(TIMM_VITS[name]["num_classes"]))
    assert uses_after_import() == []  # the torchvision stand-in (if any) was only touched while timm imported


def test_registers_absorb_their_position_slots_and_no_embed_class_zeroes_the_cls_slot():
    model, result = convert("cls-reg2-token-layerscale")
    emb = result.model.lastvit.embeddings
    torch.testing.assert_close(emb.register_tokens, model.reg_token + model.pos_embed[:, 1:3], rtol=0, atol=0)
    model, result = convert("no-embed-class-avg-fc-norm")
    positions = result.model.lastvit.embeddings.position_embeddings
    assert positions.shape[1] == 16 + 1 and not positions[:, 0].any()
    assert result.model.config.use_fc_norm and result.model.config.pooling == "mean"


def test_global_pool_is_read_from_the_keys_unless_given():
    assert convert("reg4-map-no-cls")[1].model.config.pooling == "map"
    assert convert("no-embed-class-avg-fc-norm", global_pool=None)[1].model.config.pooling == "mean"
    assert convert("cls-reg2-token-layerscale")[1].model.config.pooling == "cls"
    with pytest.raises(ConversionError, match="needs a CLS token"):
        convert("no-cls-avg", global_pool="token")
    with pytest.raises(ConversionError, match="attention-pool head"):
        convert("cls-map", global_pool="avg")


def test_a_map_model_read_out_with_lazystrike_drops_its_head():
    _, result = convert("reg4-map-no-cls", pooling="lazystrike", top_k=1)
    assert result.model.lastvit.pooler.map_head is None
    assert (
        result.dropped["attention-pooling head (the readout is now lazystrike)"] == 13
    )  # latent, q, kv, proj, norm, MLP
    assert result.source_pooling == "map" and "map" in result.source_readout


def test_unsupported_timm_blocks_are_refused_naming_the_key():
    model = VisionTransformer(**BASE, qk_norm=True, num_classes=0)
    with pytest.raises(ConversionError, match="qk_norm"):
        convert_timm_state_dict(model.state_dict(), ConversionOptions(num_heads=4))


def test_how_timm_was_imported_is_recorded():
    """Documents the route: the real torchvision when it loads, else the stand-in (import-time names only)."""
    import sys

    timm_modules = [module for name, module in sys.modules.items() if name.startswith("timm.layers")]
    assert timm_modules
    if USED_STANDIN:  # left sys.modules once timm had imported: only timm's own references remain
        assert "torchvision" not in sys.modules or sys.modules["torchvision"].__version__ != "0.0.0+standin"
