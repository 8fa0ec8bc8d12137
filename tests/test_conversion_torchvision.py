"""`--from torchvision`: torchvision `VisionTransformer` state dicts (and the authors' supervised LaSt-ViT,
a detectron2 file) convert with identical logits; other layouts are readable errors."""

import pytest
import torch

from lastvit.conversion import ConversionError, ConversionOptions, convert_torchvision_state_dict
from lastvit.conversion.sources import convert_checkpoint

from .conversion_helpers import (
    SIZE_IDS,
    SIZES,
    assert_close,
    detectron2_file,
    dino_reference,
    pixels,
    torchvision_reference,
)
from .reference_vits import authors_lazystrike


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_torchvision_vit_converts_with_identical_logits(size):
    reference = torchvision_reference()
    converted = convert_torchvision_state_dict(reference.state_dict(), ConversionOptions(num_heads=4)).model
    x = pixels(size)
    with torch.no_grad():
        assert_close(converted(x).logits, reference(x), "logits")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_authors_supervised_lastvit_forward_is_reproduced_with_lazystrike_k1(tmp_path, size):
    reference = torchvision_reference()
    path = detectron2_file(tmp_path / "ViT_190k.pth", reference)
    result, parity = convert_checkpoint(
        "torchvision", str(path), ConversionOptions(pooling="lazystrike", top_k=1, num_heads=4)
    )
    assert parity is None
    config = result.model.config
    assert (config.pooling, config.lazystrike_top_k, config.lazystrike_score, config.lazystrike_sigma) == (
        "lazystrike",
        1,
        "repo",
        None,
    )
    x = pixels(size)
    with torch.no_grad():
        out = result.model(x)
        assert_close(out.logits, reference(x, lazystrike_k=1), "LaSt-ViT logits")
        assert_close(out.pooler_output, authors_lazystrike(result.model.lastvit(x).last_hidden_state[:, 1:]), "pooled")


def test_torchvision_pre_logits_become_a_dense_tanh_pooler():
    reference = torchvision_reference(representation_size=24)
    converted = convert_torchvision_state_dict(reference.state_dict(), ConversionOptions(num_heads=4)).model
    assert (converted.config.pooler_dense_act, converted.config.pooled_feature_size) == ("tanh", 24)
    x = pixels()
    with torch.no_grad():
        assert_close(converted(x).logits, reference(x), "logits")


def test_torchvision_legacy_mlp_names_are_accepted():
    reference = torchvision_reference()
    renamed = {
        k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
        for k, v in reference.state_dict().items()
    }
    converted = convert_torchvision_state_dict(renamed, ConversionOptions(num_heads=4)).model
    with torch.no_grad():
        assert_close(converted(pixels()).logits, reference(pixels()), "logits")


def test_a_checkpoint_of_another_layout_is_a_readable_error():
    dino = dino_reference().state_dict()
    with pytest.raises(ConversionError, match="no 'conv_proj.weight'.*--from torchvision"):
        convert_torchvision_state_dict(dino, ConversionOptions(num_heads=4))


def test_missing_and_unexpected_keys_are_listed():
    state = torchvision_reference().state_dict()
    state.pop("encoder.layers.encoder_layer_1.ln_2.bias")
    state["encoder.layers.encoder_layer_0.extra_gate"] = torch.zeros(3)
    with pytest.raises(ConversionError) as error:
        convert_torchvision_state_dict(state, ConversionOptions(num_heads=4))
    message = str(error.value)
    assert "missing keys (1): [encoder.layers.encoder_layer_1.ln_2.bias]" in message
    assert "unexpected keys (1): [encoder.layers.encoder_layer_0.extra_gate]" in message


def test_a_non_standard_width_needs_num_heads():
    with pytest.raises(ConversionError, match="pass --num-heads"):
        convert_torchvision_state_dict(torchvision_reference().state_dict(), ConversionOptions())
