"""`--from hf`: transformers ViT, DeiT, DINOv2 (+ registers) and CLIP vision models convert with outputs
identical to transformers' own forward, at the native and two other input sizes, with their heads and
preprocessing; a missing or broken model folder is a one-line error naming it."""

import pytest
import torch
import transformers

from lastvit.conversion import ConversionError, ConversionOptions, convert_hf_model
from modeling_lastvit import LastViTForImageClassification, LastViTModel
from modeling_lastvit.pooling_lastvit import lazystrike_pool

from .conversion_helpers import (
    CLIP_MEAN,
    HF_PROCESSORS,
    HF_SOURCES,
    NATIVE,
    SIZE_IDS,
    SIZES,
    TINY,
    assert_close,
    hf_source,
    pixels,
    random_image,
)


def hf_output_pairs(name, source, converted, x):
    """(what, source tensor, converted tensor) for every output the source defines."""
    interpolate = {"interpolate_pos_encoding": True} if tuple(x.shape[-2:]) != NATIVE and "Dinov2" not in name else {}
    base = converted.lastvit if isinstance(converted, LastViTForImageClassification) else converted
    with torch.no_grad():
        ours = base(x, output_hidden_states=True)
        if name == "CLIPModel":
            theirs = source.get_image_features(pixel_values=x, output_hidden_states=True, **interpolate)
        else:
            theirs = source(pixel_values=x, output_hidden_states=True, **interpolate)
        pairs = [
            (f"hidden_states[{i}]", a, b) for i, (a, b) in enumerate(zip(theirs.hidden_states, ours.hidden_states))
        ]
        if "ForImageClassification" in name:
            return pairs + [("logits", theirs.logits, converted(x).logits)]
        if name.startswith("CLIP"):  # CLIP's last_hidden_state precedes post_layernorm
            pairs.append(("last_hidden_state vs hidden_states[-1]", theirs.last_hidden_state, ours.hidden_states[-1]))
            if name == "CLIPVisionModel":
                return pairs + [("pooler_output", theirs.pooler_output, ours.pooler_output)]
            embeds = theirs.image_embeds if name == "CLIPVisionModelWithProjection" else theirs.pooler_output
            return pairs + [("image_embeds", embeds, ours.image_embeds)]
        return pairs + [
            ("last_hidden_state", theirs.last_hidden_state, ours.last_hidden_state),
            ("pooler_output", theirs.pooler_output, ours.pooler_output),
        ]


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("name", list(HF_SOURCES))
def test_transformers_models_convert_with_identical_outputs(name, size):
    source = hf_source(name)
    converted = convert_hf_model(source, ConversionOptions()).model
    assert isinstance(converted, LastViTForImageClassification) == ("ForImageClassification" in name)
    for what, expected, actual in hf_output_pairs(name, source, converted, pixels(size)):
        assert_close(actual, expected, f"{name} {what}")


def test_deit_distillation_token_is_hosted_as_the_first_register():
    source = hf_source("DeiTModel")
    converted = convert_hf_model(source, ConversionOptions()).model
    emb = source.embeddings
    assert converted.config.num_register_tokens == 1
    torch.testing.assert_close(
        converted.embeddings.register_tokens, emb.distillation_token + emb.position_embeddings[:, 1:2]
    )
    torch.testing.assert_close(converted.embeddings.position_embeddings[:, 1:], emb.position_embeddings[:, 2:])


def test_transformers_encoder_read_out_with_lazystrike_skips_cls_and_registers():
    source = hf_source("Dinov2WithRegistersModel")
    converted = convert_hf_model(source, ConversionOptions(pooling="lazystrike", top_k=2)).model
    x = pixels()
    with torch.no_grad():
        tokens = source(pixel_values=x).last_hidden_state
        out = converted(x)
    assert_close(out.last_hidden_state, tokens, "last_hidden_state")
    assert_close(out.pooler_output, lazystrike_pool(tokens[:, 1 + 2 :], top_k=2).pooled, "LazyStrike pooled")


def test_head_is_kept_dropped_or_replaced_by_num_labels():
    source = hf_source("ViTForImageClassification")
    kept = convert_hf_model(source, ConversionOptions(num_labels=3))
    assert isinstance(kept.model, LastViTForImageClassification)
    torch.testing.assert_close(kept.model.classifier.weight, source.classifier.weight)
    dropped = convert_hf_model(source, ConversionOptions(num_labels=0))
    assert type(dropped.model) is LastViTModel and any("dropped" in note for note in dropped.notes)
    replaced = convert_hf_model(source, ConversionOptions(num_labels=7))
    assert replaced.model.classifier.out_features == 7
    assert any("newly initialised" in note for note in replaced.notes)
    fresh = convert_hf_model(hf_source("Dinov2ForImageClassification"), ConversionOptions(num_labels=5))
    assert fresh.model.config.classifier_input == "pooled"  # the DINOv2 [CLS, mean] input belongs to its own head


@pytest.mark.parametrize("name", list(HF_PROCESSORS))
def test_transformers_preprocessing_is_copied_exactly(name):
    source_processor = HF_PROCESSORS[name]()
    result = convert_hf_model(hf_source(name), ConversionOptions(), source_processor)
    image = random_image()
    expected = source_processor(image, return_tensors="pt").pixel_values
    torch.testing.assert_close(
        result.image_processor(image, return_tensors="pt").pixel_values, expected, rtol=0, atol=1e-6
    )


def test_transformers_source_without_a_processor_gets_the_family_default_and_a_note():
    result = convert_hf_model(hf_source("CLIPVisionModel"), ConversionOptions())
    assert list(result.image_processor.image_mean) == CLIP_MEAN
    assert any("no image processor" in note for note in result.notes)


def test_unsupported_transformers_architecture_is_a_clear_error():
    model = transformers.ViTForMaskedImageModeling(transformers.ViTConfig(**TINY, intermediate_size=64))
    with pytest.raises(ConversionError, match="the hf converter takes"):
        convert_hf_model(model, ConversionOptions())
