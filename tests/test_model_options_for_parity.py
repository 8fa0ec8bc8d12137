"""Model options that exist so converted checkpoints reproduce their source exactly: a dense pooler
(ViT / DeiT `pooler`, torchvision `pre_logits`), wider classifier inputs (DINOv2, distilled DeiT) and
DINO's scale-factor resize of the position embeddings."""

import pytest
import torch

from modeling_lastvit import LastViTConfig, LastViTForImageClassification, LastViTModel

from .tiny import tiny_config


def images(batch=2, height=32, width=32):
    return torch.randn(batch, 3, height, width)


def test_dense_pooler_is_dense_then_activation_after_the_pooling_rule():
    for pooling in ("cls", "lazystrike"):
        model = LastViTModel(tiny_config(pooling=pooling, pooler_dense_act="tanh")).eval()
        assert {"pooler.dense.weight", "pooler.dense.bias"} <= set(model.state_dict())
        out = model(images())
        raw = model.pooler.pool(out.last_hidden_state).pooled
        torch.testing.assert_close(out.pooler_output, torch.tanh(model.pooler.dense(raw)))
        if pooling == "cls":
            torch.testing.assert_close(raw, out.last_hidden_state[:, 0])
        else:
            assert out.patch_votes is not None  # the votes still describe the LazyStrike selection


def test_without_a_dense_pooler_the_pooler_has_no_parameters():
    model = LastViTModel(tiny_config())
    assert not [name for name in model.state_dict() if name.startswith("pooler.")]


def test_pooler_dense_size_sets_the_width_of_everything_that_reads_pooler_output():
    config = tiny_config(pooler_dense_act="tanh", pooler_dense_size=12, projection_dim=8, num_labels=3)
    assert config.pooled_feature_size == 12 and config.classifier_input_size == 12
    model = LastViTForImageClassification(config).eval()
    out = model.lastvit(images())
    assert out.pooler_output.shape == (2, 12) and out.image_embeds.shape == (2, 8)
    assert model(images()).logits.shape == (2, 3)


def test_classifier_can_read_the_pooled_feature_and_the_patch_mean_as_dinov2_does():
    model = LastViTForImageClassification(
        tiny_config(pooling="cls", num_register_tokens=2, classifier_input="pooled_and_patch_mean", num_labels=3)
    ).eval()
    assert model.classifier.in_features == 2 * 32
    x = images()
    tokens = model.lastvit(x).last_hidden_state
    expected = model.classifier(torch.cat((tokens[:, 0], tokens[:, 3:].mean(1)), dim=-1))  # registers excluded
    torch.testing.assert_close(model(x).logits, expected)


def test_classifier_can_read_the_pooled_feature_and_the_first_register_as_distilled_deit_does():
    model = LastViTForImageClassification(
        tiny_config(pooling="cls", num_register_tokens=1, classifier_input="pooled_and_first_register", num_labels=3)
    ).eval()
    x = images()
    tokens = model.lastvit(x).last_hidden_state
    weight, bias = model.classifier.weight, model.classifier.bias
    # one linear layer on [cls, register] == the sum of two heads, one on each token
    expected = tokens[:, 0] @ weight[:, :32].T + tokens[:, 1] @ weight[:, 32:].T + bias
    torch.testing.assert_close(model(x).logits, expected)


def test_interpolation_offset_resizes_by_scale_factor_like_the_original_dino():
    config = tiny_config(position_embedding_interpolation_offset=0.1)
    embeddings = LastViTModel(config).embeddings
    assert embeddings.interpolate_pos_encoding(4, 4) is embeddings.position_embeddings  # native grid untouched
    resized = embeddings.interpolate_pos_encoding(6, 5)
    grid = embeddings.position_embeddings[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    reference = torch.nn.functional.interpolate(grid, scale_factor=(6.1 / 4, 5.1 / 4), mode="bicubic")
    torch.testing.assert_close(resized[:, 1:], reference.flatten(2).transpose(1, 2), rtol=0, atol=0)
    by_size = torch.nn.functional.interpolate(grid, size=(6, 5), mode="bicubic", align_corners=False)
    assert (by_size.flatten(2).transpose(1, 2) - resized[:, 1:]).abs().max() > 1e-4  # a real difference


def test_new_options_survive_a_dict_round_trip():
    config = tiny_config(
        pooler_dense_act="tanh",
        pooler_dense_size=12,
        classifier_input="pooled_and_first_register",
        num_register_tokens=1,
        position_embedding_interpolation_offset=0.1,
    )
    again = LastViTConfig.from_dict(config.to_dict())
    assert (again.pooler_dense_act, again.pooler_dense_size, again.classifier_input) == (
        "tanh",
        12,
        "pooled_and_first_register",
    )
    assert again.position_embedding_interpolation_offset == 0.1


def test_defaults_keep_the_plain_model():
    config = LastViTConfig()
    assert config.pooler_dense_act is None and config.pooler_dense_size is None
    assert config.classifier_input == "pooled" and config.position_embedding_interpolation_offset is None
    assert config.pooled_feature_size == config.classifier_input_size == 768


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(position_embedding_interpolation_offset=0.0), r"must be in \(0, 1\) or None"),
        (dict(position_embedding_interpolation_offset=1.0), r"must be in \(0, 1\) or None"),
        (dict(pooler_dense_act="tanhh"), "unknown `pooler_dense_act` 'tanhh'"),
        (dict(pooler_dense_size=8), "needs a dense pooler"),
        (dict(pooler_dense_act="tanh", pooler_dense_size=0), "`pooler_dense_size` must be a positive integer"),
        (dict(classifier_input="cls_and_mean"), "unknown `classifier_input`"),
        (dict(classifier_input="pooled_and_first_register"), "needs `num_register_tokens >= 1`"),
    ],
)
def test_invalid_parity_options_raise_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)
