"""LastViTConfig: defaults, serialisation, and clear errors for invalid settings."""

import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError

from modeling_lastvit import LastViTConfig

from .tiny import tiny_config


def test_defaults_are_the_authors_released_supervised_setup():
    config = LastViTConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.image_size, config.patch_size) == (224, 16)
    assert config.pooling == "lazystrike"
    assert config.lazystrike_top_k == 1 and config.lazystrike_top_k_ratio is None
    assert config.lazystrike_sigma is None  # sqrt(D) at run time
    assert config.lazystrike_score == "repo"
    assert config.use_cls_token and config.num_register_tokens == 0


def test_dict_round_trip_keeps_every_option():
    config = tiny_config(
        num_register_tokens=4,
        layerscale_value=1e-5,
        use_swiglu_ffn=True,
        use_pre_norm=True,
        hidden_act="quick_gelu",
        pooling="lazystrike",
        lazystrike_top_k=None,
        lazystrike_top_k_ratio=0.5,
        lazystrike_sigma=3.0,
        lazystrike_score="paper",
        projection_dim=8,
        image_size=(32, 48),
    )
    again = LastViTConfig.from_dict(config.to_dict())
    for key, value in config.to_dict().items():
        if key != "transformers_version":
            assert getattr(again, key) == value or list(getattr(again, key)) == list(value), key


def test_every_config_names_all_auto_classes_for_remote_code():
    assert set(tiny_config().auto_map) >= {
        "AutoConfig",
        "AutoModel",
        "AutoModelForImageClassification",
        "AutoBackbone",
    }


def test_prefix_tokens_count_cls_and_registers():
    assert tiny_config().num_prefix_tokens == 1
    assert tiny_config(num_register_tokens=4).num_prefix_tokens == 5
    assert tiny_config(use_cls_token=False, pooling="mean", num_register_tokens=2).num_prefix_tokens == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=30, num_attention_heads=4), "divisible by `num_attention_heads`"),
        (dict(lazystrike_top_k=0), "`lazystrike_top_k` must be >= 1"),
        (dict(lazystrike_top_k=17), "exceeds the number of patches"),
        (dict(lazystrike_top_k=None, lazystrike_top_k_ratio=0.0), r"must be in \(0, 1\]"),
        (dict(lazystrike_top_k=None, lazystrike_top_k_ratio=1.5), r"must be in \(0, 1\]"),
        (dict(lazystrike_top_k=2, lazystrike_top_k_ratio=0.5), "set only one of"),
        (dict(lazystrike_top_k=None), "set `lazystrike_top_k`"),
        (dict(num_register_tokens=-1), "`num_register_tokens` must be >= 0"),
        (dict(pooling="attention"), "unknown `pooling` 'attention'"),
        (dict(pooling="cls", use_cls_token=False), "needs `use_cls_token=True`"),
        (dict(lazystrike_score="median"), "unknown `lazystrike_score`"),
        (dict(lazystrike_sigma=0.0), "`lazystrike_sigma` must be > 0"),
        (dict(image_size=30), "multiple of `patch_size`"),
        (dict(drop_path_rate=1.0), r"`drop_path_rate` must be in \[0, 1\)"),
        (dict(projection_dim=0), "`projection_dim` must be a positive integer"),
    ],
)
def test_invalid_settings_raise_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_configs_saved_with_the_removed_options_still_load():
    # (`position_embedding_interpolation` was removed, then came back for SigLIP2's bilinear resize)
    old_keys = {"lazystrike_eps": 1e-6, "lazystrike_fft_in_fp32": True}
    config = LastViTConfig.from_dict({**tiny_config().to_dict(), **old_keys})
    assert config.to_diff_dict() == {**tiny_config().to_diff_dict(), **old_keys}


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("pooling", "bogus", "unknown `pooling` 'bogus'"),
        ("lazystrike_score", "median", "unknown `lazystrike_score`"),
        ("num_attention_heads", 3, "must be divisible by `num_attention_heads`"),
    ],
)
def test_validate_catches_a_bad_value_set_after_construction(name, value, message, tmp_path):
    config = tiny_config()
    setattr(config, name, value)
    with pytest.raises(StrictDataclassClassValidationError, match=message) as raised:
        config.validate()
    assert "\n" not in str(raised.value)  # one line: the option and what to use
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        config.save_pretrained(tmp_path)  # transformers validates before it writes
