"""LastViTModel, heads and backbone: outputs, pooling semantics, attention backends, training paths."""

import logging

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.testing_utils import CaptureLogger

from modeling_lastvit import LastViTBackbone, LastViTForImageClassification, LastViTModel
from modeling_lastvit import modeling_lastvit as modeling_module
from modeling_lastvit.pooling_lastvit import lazystrike_pool

from .tiny import tiny_config

NUM_PATCHES = 16  # 32x32 input, 8x8 patches


def images(batch=2, height=32, width=32):
    return torch.randn(batch, 3, height, width)


def build(cls=LastViTModel, **overrides):
    return cls(tiny_config(**overrides)).eval()


@pytest.mark.parametrize("registers", [0, 3])
def test_outputs_carry_all_tokens_the_pooled_feature_and_votes(registers):
    model = build(num_register_tokens=registers, lazystrike_top_k=2)
    out = model(images(), output_hidden_states=True)
    assert isinstance(out, BaseModelOutputWithPooling)
    assert out.last_hidden_state.shape == (2, 1 + registers + NUM_PATCHES, 32)
    assert out.pooler_output.shape == (2, 32)
    assert out.patch_votes.shape == (2, NUM_PATCHES)
    assert (out.patch_votes.sum(dim=1) == 2 * 32).all()
    assert len(out.hidden_states) == 1 + 2  # embeddings + one per block
    assert out.pooling_indices is None


def test_pooled_feature_is_lazystrike_of_the_final_patch_tokens_only():
    model = build(num_register_tokens=3, lazystrike_top_k=3)
    out = model(images(), return_pooling_indices=True)
    patches = model.split_tokens(out.last_hidden_state).patches
    expected = lazystrike_pool(patches, top_k=3)
    torch.testing.assert_close(out.pooler_output, expected.pooled)
    assert torch.equal(out.pooling_indices, expected.indices)
    assert out.pooling_indices.max() < NUM_PATCHES


def test_cls_and_register_tokens_are_never_selected_even_when_they_would_win():
    """Give the CLS and register tokens extreme values: a readout that looked at them would pick them."""
    model = build(num_register_tokens=3, lazystrike_top_k=1)
    sequence = torch.randn(2, 4 + NUM_PATCHES, 32)
    sequence[:, :4] = 1e6
    pooled = model.pooler(sequence)
    assert (pooled.pooled.abs() < 1e3).all()
    torch.testing.assert_close(pooled.pooled, lazystrike_pool(sequence[:, 4:], top_k=1).pooled)


def test_top_k_equal_num_patches_makes_the_model_mean_pool():
    lazy = build(lazystrike_top_k=NUM_PATCHES, num_register_tokens=2)
    mean = build(pooling="mean", num_register_tokens=2)
    mean.load_state_dict(lazy.state_dict())
    x = images()
    torch.testing.assert_close(lazy(x).pooler_output, mean(x).pooler_output, rtol=1e-6, atol=1e-6)


def test_cls_mean_and_max_pooling_read_the_right_tokens():
    x = images()
    cls_out = build(pooling="cls", num_register_tokens=2)(x)
    torch.testing.assert_close(cls_out.pooler_output, cls_out.last_hidden_state[:, 0])
    assert cls_out.patch_votes is None

    mean_out = build(pooling="mean", num_register_tokens=2)(x)
    torch.testing.assert_close(mean_out.pooler_output, mean_out.last_hidden_state[:, 3:].mean(1))

    max_out = build(pooling="max", num_register_tokens=2)(x)
    torch.testing.assert_close(max_out.pooler_output, max_out.last_hidden_state[:, 3:].amax(1))
    assert (max_out.patch_votes.sum(dim=1) == 32).all()  # one patch per channel


def test_without_cls_token_the_sequence_is_registers_then_patches():
    model = build(use_cls_token=False, num_register_tokens=2, pooling="lazystrike")
    out = model(images())
    assert out.last_hidden_state.shape[1] == 2 + NUM_PATCHES
    tokens = model.split_tokens(out.last_hidden_state)
    assert tokens.cls is None and tokens.registers.shape[1] == 2 and tokens.patches.shape[1] == NUM_PATCHES


def test_split_tokens_and_patch_map_helpers():
    model = build(num_register_tokens=2)
    x = images(height=32, width=48)
    out = model(x)
    tokens = model.split_tokens(out.last_hidden_state)
    torch.testing.assert_close(tokens.cls, out.last_hidden_state[:, 0])
    feature_map = model.patches_to_map(tokens.patches, 32, 48)
    assert feature_map.shape == (2, 32, 4, 6)
    # row-major: patch (row 1, col 2) is token 1 * 6 + 2
    torch.testing.assert_close(feature_map[:, :, 1, 2], tokens.patches[:, 8])
    assert model.patches_to_map(out.patch_votes, 32, 48).shape == (2, 4, 6)
    with pytest.raises(ValueError, match="pass the patches only"):
        model.patches_to_map(out.last_hidden_state, 32, 48)


def test_projection_gives_image_embeds():
    out = build(projection_dim=8)(images())
    assert out.image_embeds.shape == (2, 8)


@pytest.mark.parametrize(
    "family",
    [
        {},  # ViT / DeiT / torchvision
        {
            "layerscale_value": 1e-5,
            "num_register_tokens": 4,
            "position_embedding_antialias": True,
        },  # DINOv2 + registers
        {"layerscale_value": 1.0, "use_swiglu_ffn": True},  # DINOv2-g
        {"use_pre_norm": True, "hidden_act": "quick_gelu", "projection_dim": 16, "pooling": "cls"},  # CLIP vision
        {"drop_path_rate": 0.1, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
    ],
)
def test_one_encoder_hosts_every_vit_family_and_trains(family):
    model = LastViTForImageClassification(tiny_config(num_labels=3, **family)).train()
    loss = model(images(), labels=torch.tensor([0, 2])).loss
    loss.backward()
    # every parameter the logits depend on trains (CLIP's projection feeds image_embeds, not the classifier)
    grads = {name: p.grad for name, p in model.named_parameters() if "visual_projection" not in name}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())


def test_sdpa_and_eager_attention_give_equal_outputs():
    sdpa = build(num_register_tokens=2, attn_implementation="sdpa")
    eager = build(num_register_tokens=2, attn_implementation="eager")
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    x = images()
    a, b = sdpa(x), eager(x)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.pooler_output, b.pooler_output, rtol=1e-5, atol=1e-5)


def test_attention_maps_with_eager():
    model = build(num_register_tokens=2, attn_implementation="eager")
    attentions = model(images(), output_attentions=True).attentions
    assert len(attentions) == 2 and attentions[0].shape == (2, 4, 19, 19)
    torch.testing.assert_close(attentions[0].sum(-1), torch.ones(2, 4, 19))


def test_attention_maps_under_sdpa_run_that_call_eagerly_and_warn_once():
    """transformers' contract (ViT, Dinov2WithRegisters) is that `output_attentions=True` never raises; here the
    call computes real maps eagerly, equal to an eager model's, and says so once."""
    eager = build(num_register_tokens=2, attn_implementation="eager")
    sdpa = build(num_register_tokens=2, attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    x = images()
    expected = eager(x, output_attentions=True)
    logging.Logger.warning_once.cache_clear()  # warning_once remembers messages across tests
    with CaptureLogger(modeling_module.logger) as captured:
        got = sdpa(x, output_attentions=True)
        sdpa(x, output_attentions=True)
    assert captured.out.count("run eager attention") == 1
    assert sdpa.config._attn_implementation == "sdpa"  # only those calls ran eagerly
    assert len(got.attentions) == 2
    for a, b in zip(got.attentions, expected.attentions):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state)


def test_calls_without_attention_maps_do_not_warn():
    model = build(attn_implementation="sdpa")
    logging.Logger.warning_once.cache_clear()
    with CaptureLogger(modeling_module.logger) as captured:
        out = model(images())
    assert captured.out == "" and out.attentions is None


def test_gradient_checkpointing_gives_equal_gradients():
    plain = LastViTForImageClassification(tiny_config(num_labels=3, num_register_tokens=2)).train()
    ckpt = LastViTForImageClassification(tiny_config(num_labels=3, num_register_tokens=2)).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.activation_checkpointing_enable()
    assert ckpt.lastvit.encoder.layer[0].gradient_checkpointing
    x, y = images(), torch.tensor([1, 2])
    plain(x, labels=y).loss.backward()
    ckpt(x, labels=y).loss.backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("height, width", [(48, 48), (16, 40), (64, 32)])
def test_any_input_size_divisible_by_the_patch_size_works(height, width):
    model = build(num_register_tokens=2, lazystrike_top_k=None, lazystrike_top_k_ratio=0.25)
    out = model(images(height=height, width=width))
    num_patches = (height // 8) * (width // 8)
    assert out.last_hidden_state.shape == (2, 3 + num_patches, 32)
    assert (out.patch_votes.sum(1) == max(1, round(0.25 * num_patches)) * 32).all()


def test_position_embeddings_are_used_as_is_at_the_native_grid_and_resized_otherwise():
    embeddings = build().embeddings
    assert embeddings.interpolate_pos_encoding(4, 4) is embeddings.position_embeddings
    resized = embeddings.interpolate_pos_encoding(2, 6)
    assert resized.shape == (1, 1 + 12, 32)
    torch.testing.assert_close(resized[:, :1], embeddings.position_embeddings[:, :1])  # CLS untouched
    grid = embeddings.position_embeddings[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    reference = torch.nn.functional.interpolate(grid, size=(2, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resized[:, 1:], reference.flatten(2).transpose(1, 2))


def test_a_fixed_top_k_larger_than_the_patches_of_a_small_input_is_a_clear_error():
    model = build(lazystrike_top_k=8)
    with pytest.raises(ValueError, match="exceeds the 4 patches"):
        model(images(height=16, width=16))


@pytest.mark.parametrize(
    "pixel_values, message",
    [
        (torch.randn(2, 1, 32, 32), "expects 3 input channels"),
        (torch.randn(2, 3, 30, 32), "not divisible by the patch size"),
        (torch.randn(0, 3, 32, 32), "empty batch"),
        (torch.randn(3, 32, 32), "shape \\(batch, channels, height, width\\)"),
        (None, "needs `pixel_values`"),
    ],
)
def test_bad_inputs_give_clear_errors(pixel_values, message):
    with pytest.raises(ValueError, match=message):
        build()(pixel_values)


def test_init_weights_covers_every_parameter():
    model = build(
        LastViTForImageClassification, num_labels=3, num_register_tokens=2, layerscale_value=0.5, projection_dim=8
    )
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    model.apply(model._init_weights)
    assert not [name for name, p in model.named_parameters() if torch.isnan(p).any()]
    emb = model.lastvit.embeddings
    assert emb.register_tokens.std() > 0  # registers start different from each other
    assert (model.lastvit.encoder.layer[0].layer_scale1.lambda1 == 0.5).all()


def test_classification_losses_follow_problem_type():
    x = images()
    single = build(LastViTForImageClassification, num_labels=3)
    out = single(x, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])))
    assert out.pooler_output.shape == (2, 32) and out.patch_votes.shape == (2, NUM_PATCHES)

    multi = build(LastViTForImageClassification, num_labels=3, problem_type="multi_label_classification")
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = multi(x, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))

    regression = build(LastViTForImageClassification, num_labels=1)
    targets = torch.tensor([0.5, -1.0])
    out = regression(x, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(), targets))


def test_classifier_reads_the_pooled_feature_and_returns_tuples_on_request():
    model = build(LastViTForImageClassification, num_labels=3)
    x = images()
    pooled = model.lastvit(x).pooler_output
    torch.testing.assert_close(model(x).logits, model.classifier(pooled))
    assert isinstance(model(x, return_dict=False), tuple)
    headless = build(LastViTForImageClassification, num_labels=0)
    headless.lastvit.load_state_dict(model.lastvit.state_dict())
    torch.testing.assert_close(headless(x).logits, pooled)


def test_backbone_returns_normed_patch_maps_of_the_chosen_stages_without_prefix_tokens():
    config = tiny_config(num_register_tokens=2, out_features=["stem", "stage2"])
    backbone = LastViTBackbone(config).eval()
    model = LastViTModel(tiny_config(num_register_tokens=2)).eval()
    model.load_state_dict(backbone.state_dict(), strict=False)
    x = images(height=32, width=48)
    out = backbone(x)
    assert [tuple(f.shape) for f in out.feature_maps] == [(2, 32, 4, 6)] * 2
    assert out.hidden_states is None  # only on request
    reference = model(x)
    last_patches = model.split_tokens(reference.last_hidden_state).patches
    torch.testing.assert_close(out.feature_maps[1], model.patches_to_map(last_patches, 32, 48))
    assert backbone.channels == [32, 32]


def test_bf16_autocast_runs_and_scores_in_fp32():
    model = build(num_register_tokens=2, lazystrike_top_k=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(), return_pooling_indices=True)
    assert torch.isfinite(out.pooler_output.float()).all()
    patches = model.split_tokens(out.last_hidden_state).patches
    assert torch.equal(out.pooling_indices, lazystrike_pool(patches.float(), top_k=2).indices)


def test_eval_forward_is_deterministic():
    model = build(drop_path_rate=0.2, hidden_dropout_prob=0.2)
    x = images()
    torch.testing.assert_close(model(x).pooler_output, model(x).pooler_output, rtol=0, atol=0)


@pytest.mark.parametrize("act", ["gelu", "quick_gelu", "silu"])
def test_inference_without_autograd_matches_the_autograd_forward(act):
    """Without autograd the MLP activates in place to save memory; the outputs must not change."""
    model = build(hidden_act=act, num_register_tokens=2)
    x = images()
    with torch.no_grad():
        inference = model(x).last_hidden_state
    torch.testing.assert_close(inference, model(x).last_hidden_state.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("pooling", ["cls", "lazystrike"])
@pytest.mark.parametrize("size", [(32, 32), (48, 32)], ids=["native-grid", "resized-positions"])
def test_forward_reads_no_tensor_value_on_the_host(pooling, size):
    """Under FakeTensorMode any `.item()`, `.tolist()` or `if tensor:` raises: a forward only queues work, with
    no host-device synchronisation on a GPU (batch-1 latency)."""
    model = build(pooling=pooling, num_register_tokens=2, lazystrike_top_k=2)
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = model(images(2, *size), return_pooling_indices=pooling == "lazystrike")
    assert out.pooler_output.shape == (2, 32)
