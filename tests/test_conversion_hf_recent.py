"""`--from hf` for the ViT families of 2025-26: DINOv3 (RoPE, registers, gated MLP), SigLIP / SigLIP2 (no CLS,
MAP head), AIMv2 (RMSNorm, SwiGLU, attention-pool head) and I-JEPA (no CLS, patch mean) convert into plain
LastViT options with every output equal to transformers' own forward at two input sizes (1e-5 in fp32)."""

import json

import pytest
import torch

from lastvit.conversion import ConversionError, ConversionOptions, convert_hf_model
from lastvit.conversion.hf import load_hf_processor_settings, recent_output_pairs
from lastvit.conversion.hf_recent import patchify_for_siglip2, siglip2_images
from modeling_lastvit import LastViTForImageClassification
from modeling_lastvit.pooling_lastvit import lazystrike_pool

from .conversion_helpers import (
    DINOV3_PROCESSOR_CONFIG,
    NATIVE,
    RECENT_PROCESSORS,
    RECENT_SOURCES,
    assert_close,
    pixels,
    random_image,
    recent_source,
)

# Native and a larger non-square grid. AIMv2 with learned positions only runs at its native size in transformers,
# so its second size is a second source built for 48 px; AIMv2 "native" (sin-cos positions) runs at both sizes.
SIZES = [NATIVE, (48, 40)]


def test_every_recent_source_is_exercised():
    families = {name.split("-")[0] for name in RECENT_SOURCES}
    assert {"DINOv3ViTModel", "SiglipVisionModel", "SiglipModel", "Siglip2VisionModel"} <= families
    assert {"Aimv2VisionModel", "IJepaModel", "IJepaForImageClassification"} <= families


@pytest.mark.parametrize("size", SIZES, ids=["native", "48x40"])
@pytest.mark.parametrize("name", [n for n in RECENT_SOURCES if not n.startswith("Aimv2") or n.endswith("native")])
def test_recent_transformers_models_convert_with_identical_outputs(name, size):
    source = recent_source(name)
    converted = convert_hf_model(source, ConversionOptions()).model
    assert isinstance(converted, LastViTForImageClassification) == ("ForImageClassification" in name)
    pairs = recent_output_pairs(source, converted, pixels(size))
    names = {what for what, _, _ in pairs}
    assert "logits" in names or {"last_hidden_state", "hidden_states[2]"} <= names
    if name.startswith(("DINOv3", "Siglip")):
        assert "pooler_output" in names  # the source's own readout (CLS / MAP) is reproduced
    for what, expected, actual in pairs:
        assert_close(actual, expected, f"{name} {size} {what}")


@pytest.mark.parametrize("name", [n for n in RECENT_SOURCES if n.startswith("Aimv2") and not n.endswith("native")])
def test_aimv2_converts_with_identical_outputs_at_its_native_size(name):
    """AIMv2 with learned positions runs only at its native size in transformers: 32 px, and 48 px for a second
    source (with the q/k/v and MLP biases its default leaves out)."""
    source = recent_source(name)
    converted = convert_hf_model(source, ConversionOptions()).model
    size = converted.config.image_size_hw
    pairs = recent_output_pairs(source, converted, pixels(size))
    names = {what for what, _, _ in pairs}
    assert {"last_hidden_state", "pooler_output"} <= names
    if name == "Aimv2Model":
        assert "image_embeds" in names
    for what, expected, actual in pairs:
        assert_close(actual, expected, f"{name} {size} {what}")


def test_reading_a_map_model_out_with_lazystrike_drops_the_head_and_pools_the_patch_tokens():
    source = recent_source("SiglipVisionModel")
    result = convert_hf_model(source, ConversionOptions(pooling="lazystrike", top_k=2))
    assert result.model.pooler.map_head is None
    assert result.dropped == {
        "attention-pooling head (the readout is now lazystrike)": 11
    }  # probe, in/out proj, norm, MLP
    assert result.source_pooling == "map" and "attention-pooling" in result.source_readout
    x = pixels()
    with torch.no_grad():
        tokens = source(pixel_values=x).last_hidden_state
        out = result.model(x)
    assert_close(out.last_hidden_state, tokens, "last_hidden_state")
    assert_close(out.pooler_output, lazystrike_pool(tokens, top_k=2).pooled, "LazyStrike over every (patch) token")


def test_dinov3_read_out_with_lazystrike_skips_cls_and_registers():
    source = recent_source("DINOv3ViTModel")
    converted = convert_hf_model(source, ConversionOptions(pooling="lazystrike", top_k=1)).model
    x = pixels((48, 40))
    with torch.no_grad():
        tokens = source(pixel_values=x).last_hidden_state
        pooled = converted(x).pooler_output
    assert_close(pooled, lazystrike_pool(tokens[:, 1 + 2 :], top_k=1).pooled, "LazyStrike pooled")


def test_map_pooling_needs_a_source_with_a_map_head():
    with pytest.raises(ConversionError, match="needs a source with an attention-pooling"):
        convert_hf_model(recent_source("DINOv3ViTModel"), ConversionOptions(pooling="map"))


def test_ijepa_with_a_first_token_pooler_is_refused_with_the_fix():
    import transformers

    from .conversion_helpers import TINY

    model = transformers.IJepaModel(transformers.IJepaConfig(**TINY, intermediate_size=64), add_pooling_layer=True)
    with pytest.raises(ConversionError, match="add_pooling_layer=True"):
        convert_hf_model(model, ConversionOptions())


@pytest.mark.parametrize("name", list(RECENT_PROCESSORS))
def test_recent_preprocessing_is_copied_exactly(name):
    source_processor = RECENT_PROCESSORS[name]()
    result = convert_hf_model(recent_source(name), ConversionOptions(), source_processor)
    image = random_image()
    expected = source_processor(image, return_tensors="pt").pixel_values
    actual = result.image_processor(image, return_tensors="pt").pixel_values
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_siglip2_preprocessing_matches_for_square_images_and_says_what_differs_otherwise():
    import transformers

    source_processor = transformers.Siglip2ImageProcessorPil(max_num_patches=16, patch_size=8)
    result = convert_hf_model(recent_source("Siglip2VisionModel"), ConversionOptions(), source_processor)
    image = random_image(height=50, width=50)
    theirs = source_processor(image, return_tensors="pt")
    ours = result.image_processor(image, return_tensors="pt").pixel_values
    assert theirs.spatial_shapes.tolist() == [[4, 4]]
    torch.testing.assert_close(patchify_for_siglip2(ours, 8)["pixel_values"], theirs.pixel_values, rtol=0, atol=1e-6)
    assert any("aspect ratio" in note for note in result.notes)


def test_a_padded_siglip2_batch_of_mixed_shapes_equals_the_converted_model_image_by_image():
    """SigLIP2's variable resolution: its processor pads images of different aspect ratios into one batch with a
    `pixel_attention_mask`; each image, put back whole (`siglip2_images`) and run alone through the converted model,
    gives the valid tokens and the pooled output of that masked batch (hidden states, final tokens, MAP head)."""
    import transformers

    source = recent_source("Siglip2VisionModel")
    converted = convert_hf_model(source, ConversionOptions()).model
    processor = transformers.Siglip2ImageProcessorPil(max_num_patches=16, patch_size=8)
    batch = processor(
        [random_image(50, 50), random_image(30, 64, seed=1), random_image(70, 20, seed=2)], return_tensors="pt"
    )
    shapes = batch.spatial_shapes.tolist()
    assert len({tuple(shape) for shape in shapes}) == 3 and batch.pixel_attention_mask.sum(1).tolist() != [16] * 3
    with torch.no_grad():
        theirs = source(**batch, output_hidden_states=True)
        for index, image in enumerate(siglip2_images(batch.pixel_values, batch.spatial_shapes, 8)):
            valid = shapes[index][0] * shapes[index][1]
            assert image.shape[-2:] == (shapes[index][0] * 8, shapes[index][1] * 8)
            ours = converted(image, output_hidden_states=True)
            for layer, (expected, actual) in enumerate(zip(theirs.hidden_states, ours.hidden_states)):
                assert_close(actual[0], expected[index, :valid], f"image {index} hidden_states[{layer}]")
            assert_close(ours.last_hidden_state[0], theirs.last_hidden_state[index, :valid], f"image {index} tokens")
            assert_close(ours.pooler_output[0], theirs.pooler_output[index], f"image {index} pooler_output")


def test_a_processor_that_needs_torchvision_is_read_from_its_saved_settings(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(DINOV3_PROCESSOR_CONFIG))
    settings = load_hf_processor_settings(str(tmp_path))
    result = convert_hf_model(recent_source("DINOv3ViTModel"), ConversionOptions(), settings)
    processor = result.image_processor
    assert dict(processor.size) == {"height": 32, "width": 32} and not processor.do_center_crop
    assert list(processor.image_mean) == DINOV3_PROCESSOR_CONFIG["image_mean"] and processor.resample == 2
    assert not result.notes
