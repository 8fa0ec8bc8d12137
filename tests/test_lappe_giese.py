"""Lappe & Giese (lastvit.measure.lappe_giese and lastvit.measure.decoupling): linear CKA, the CLS
attention shares, the masked contributions before and after the output projection on a layer small
enough to compute by hand, the one-shot readout, register image-dependence, and tiny models whose
last-layer CLS attention is forced by hand-set query/key weights onto the registers or the patches,
where the whole analysis must report the regime it was built to have.
"""

import math

import numpy as np
import pytest
import torch

from lastvit import measure as A
from lastvit.measure.decoupling import AnalysisError, OneShotImages, analyze
from modeling_lastvit import LastViTModel

from .tiny import tiny_config


def test_linear_cka_of_a_representation_with_itself_is_one():
    X = torch.randn(20, 8)
    assert A.linear_cka(X, X) == pytest.approx(1.0)
    assert A.linear_cka(X.numpy(), X.numpy()) == pytest.approx(1.0)


@pytest.mark.parametrize("n, p", [(50, 6), (10, 40)])  # feature-space and Gram-matrix paths
def test_linear_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(n, p):
    X, Y = torch.randn(n, p, dtype=torch.float64), torch.randn(n, p + 3, dtype=torch.float64)
    Y[:, :p] += 2 * X  # related, so the value is not trivially small
    Q, _ = torch.linalg.qr(torch.randn(p, p, dtype=torch.float64))
    reference = A.linear_cka(X, Y)
    assert 0.0 < reference < 1.0
    assert A.linear_cka(X @ Q, Y) == pytest.approx(reference, rel=1e-10)
    assert A.linear_cka(3.7 * X + 5.0, Y) == pytest.approx(reference, rel=1e-10)  # scaling and a shift
    assert A.linear_cka(Y, X) == pytest.approx(reference, rel=1e-10)
    anisotropic = X * torch.linspace(0.1, 10, p, dtype=torch.float64)
    assert A.linear_cka(anisotropic, Y) != pytest.approx(reference, rel=1e-3)


def test_linear_cka_matches_the_trace_formula_and_flags_constant_inputs():
    X, Y = torch.randn(12, 5, dtype=torch.float64), torch.randn(12, 7, dtype=torch.float64)
    H = torch.eye(12, dtype=torch.float64) - 1 / 12
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    expected = torch.trace(K @ L) / torch.sqrt(torch.trace(K @ K) * torch.trace(L @ L))
    assert A.linear_cka(X, Y) == pytest.approx(float(expected), rel=1e-10)
    assert math.isnan(A.linear_cka(torch.ones(12, 3), Y))
    with pytest.raises(ValueError, match="same n"):
        A.linear_cka(X, Y[:5])


def eager_model(registers, layerscale):
    """A tiny eager model with non-trivial biases and LayerScale, so every term is exercised."""
    model = LastViTModel(
        tiny_config(num_register_tokens=registers, layerscale_value=layerscale, attn_implementation="eager")
    ).eval()
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.attention.o_proj.bias.normal_()
            layer.attention.v_proj.bias.normal_()
            if layerscale is not None:
                layer.layer_scale1.lambda1.uniform_(0.1, 2.0)
    return model


@pytest.mark.parametrize("registers", [0, 3])
@pytest.mark.parametrize("layerscale", [None, 0.1])
def test_masked_contributions_after_projection_sum_to_the_real_attention_output(registers, layerscale):
    model = eager_model(registers, layerscale)
    layer = model.encoder.layer[-1]
    captured = {}
    hook = layer.layer_scale1.register_forward_hook(lambda module, args, output: captured.update(out=output))
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32), output_hidden_states=True)
    hook.remove()
    after = A.masked_contributions(layer, out.hidden_states[-2], registers, after_projection=True)
    torch.testing.assert_close(after.o_full, captured["out"][:, 0], atol=1e-5, rtol=1e-5)
    before = A.masked_contributions(layer, out.hidden_states[-2], registers)  # the paper's default
    for parts in (before, after):
        torch.testing.assert_close(parts.o_full, parts.o_cls_self + parts.o_reg + parts.o_patch, atol=1e-5, rtol=1e-5)
        if registers == 0:
            assert parts.o_reg.abs().max() == 0
    # After the projection the full part is the projected pre-projection one: ls1(W_o z + b_o).
    projected = layer.layer_scale1(layer.attention.o_proj(before.o_full))
    torch.testing.assert_close(after.o_full, projected, atol=1e-5, rtol=1e-5)
    # skip path + attention branch = the CLS token after the attention sub-block
    torch.testing.assert_close(
        A.o_skip(out.hidden_states[-2]) + after.o_full, (out.hidden_states[-2] + captured["out"])[:, 0]
    )


def hand_layer():
    """One head of width 4, tokens [CLS, 1 register, 2 patches]: q = (2, 0, 0, 0) for every input,
    k = v = identity, so the CLS attention is softmax(x[:, 0]) (scaling 1/2); W_o = 2 I + b_o, LayerScale 0.5."""
    config = tiny_config(hidden_size=4, num_attention_heads=1, num_register_tokens=1, layerscale_value=0.5)
    layer = LastViTModel(config).encoder.layer[-1].eval()
    attention = layer.attention
    with torch.no_grad():
        attention.q_proj.weight.zero_()
        attention.q_proj.bias.copy_(torch.tensor([2.0, 0, 0, 0]))
        for projection in (attention.k_proj, attention.v_proj):
            projection.weight.copy_(torch.eye(4))
            projection.bias.zero_()
        attention.o_proj.weight.copy_(2 * torch.eye(4))
        attention.o_proj.bias.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0]))
    return layer


def test_masked_contributions_equal_the_hand_computed_attention_weighted_values():
    layer = hand_layer()
    hidden = torch.tensor([[[0.0, 1, 2, 3], [3.0, 0, 1, 2], [1.0, 2, 0, -1], [-2.0, 1, 1, 0]]])  # [1, 4 tokens, 4]
    x = layer.norm1(hidden)[0].detach().double().numpy()  # what q/k/v read (norm1 is the layer's own)
    a = np.exp(x[:, 0]) / np.exp(x[:, 0]).sum()  # logits = q . k_i / sqrt(4) = 2 x_i[0] / 2
    groups = {"o_cls_self": [0], "o_reg": [1], "o_patch": [2, 3], "o_full": [0, 1, 2, 3]}
    before = A.masked_contributions(layer, hidden, num_registers=1)
    after = A.masked_contributions(layer, hidden, num_registers=1, after_projection=True)
    bias = np.array([1.0, -1.0, 0.5, 0.0])
    for name, tokens in groups.items():
        expected = sum(a[i] * x[i] for i in tokens)  # Eq. 1-2: sum_{i in S} a_i v_i, with v_i = x_i
        np.testing.assert_allclose(getattr(before, name)[0].double().numpy(), expected, atol=1e-6)
        expected_after = 0.5 * (2 * expected + a[tokens].sum() * bias)  # LayerScale(W_o z_S + m_S b_o)
        np.testing.assert_allclose(getattr(after, name)[0].double().numpy(), expected_after, atol=1e-6)
    for parts in (before, after):
        torch.testing.assert_close(parts.o_full, parts.o_cls_self + parts.o_reg + parts.o_patch)


def test_cka_is_not_invariant_to_an_anisotropic_output_projection_so_the_variants_differ():
    layer = hand_layer()
    with torch.no_grad():
        layer.attention.o_proj.weight.copy_(torch.diag(torch.tensor([0.01, 0.1, 1.0, 10.0])))
    hidden = torch.randn(50, 4, 4, generator=torch.Generator().manual_seed(0))
    before = A.masked_contributions(layer, hidden, 1)
    after = A.masked_contributions(layer, hidden, 1, after_projection=True)
    cka_before, cka_after = A.linear_cka(before.o_full, before.o_patch), A.linear_cka(after.o_full, after.o_patch)
    assert abs(cka_before - cka_after) > 0.01


def test_masked_contributions_need_a_cls_token():
    model = LastViTModel(tiny_config(use_cls_token=False, pooling="mean"))
    with pytest.raises(ValueError, match="no CLS token"):
        A.masked_contributions(model.encoder.layer[-1], torch.randn(1, 16, 32), 0)


def test_cls_attention_shares_sum_to_one():
    model = eager_model(registers=2, layerscale=None)
    with torch.no_grad():
        attentions = model(torch.randn(3, 3, 32, 32), output_attentions=True).attentions
    share = A.cls_attention_share(attentions[-1], num_registers=2)
    torch.testing.assert_close(share.cls_self + share.registers + share.patches, torch.ones(3))
    expected_patches = attentions[-1][:, :, 0, 3:].sum(-1).mean(1)
    torch.testing.assert_close(share.patches, expected_patches)
    without_self = A.cls_attention_share(attentions[-1], num_registers=2, exclude_self=True)
    torch.testing.assert_close(without_self.registers + without_self.patches, torch.ones(3))
    with pytest.raises(ValueError, match="eager"):
        A.cls_attention_share(attentions[-1][:, 0], num_registers=2)


def test_layerwise_cls_cosine_ends_at_one():
    model = eager_model(registers=0, layerscale=None)
    with torch.no_grad():
        hidden = model(torch.randn(2, 3, 32, 32), output_hidden_states=True).hidden_states
    cosine = A.layerwise_cls_cosine(hidden)
    assert cosine.shape == (2, len(hidden))
    torch.testing.assert_close(cosine[:, -1], torch.ones(2))
    assert (cosine.abs() <= 1 + 1e-6).all()


def test_gram_decomposition_terms_add_up_to_the_full_gram_matrix():
    P, R = torch.randn(6, 10, dtype=torch.float64), torch.randn(6, 10, dtype=torch.float64)
    gram = A.gram_decomposition(P, R)
    torch.testing.assert_close(gram.patch_patch + gram.patch_reg + gram.reg_patch + gram.reg_reg, gram.total)
    torch.testing.assert_close(gram.total, (P + R) @ (P + R).T)
    assert sum(gram.shares.values()) == pytest.approx(1.0)
    only_patches = A.gram_decomposition(P, torch.zeros_like(P))
    assert only_patches.shares["patch_patch"] == pytest.approx(1.0)
    torch.testing.assert_close(only_patches.patch_cosine, torch.ones(6, dtype=torch.float64))


# --------------------------------------------------------------------------- one-shot readout


def test_nearest_class_mean_readout_ranks_classes_by_cosine():
    train = torch.eye(3)  # one vector per class: the class mean is the vector itself
    test = torch.tensor([[5.0, 1.0, 0.0], [0.0, 0.1, 0.0], [1.0, 0.0, 2.0], [0.0, 1.0, 0.9]])
    accuracy = A.nearest_class_mean_accuracy(train, [0, 1, 2], test, [0, 1, 0, 2], ks=(1, 2, 5))
    # rows 0, 1 right at top-1 (cosine ignores the scale of row 1); rows 2, 3 second; k=5 > 3 classes counts as 3
    assert accuracy == {1: 0.5, 2: 1.0, 5: 1.0}
    means = A.nearest_class_mean_accuracy(
        torch.tensor([[1.0, 0], [1.0, 2], [0, -1.0]]), [0, 0, 1], torch.tensor([[0.9, 1.0]]), [0], ks=(1,)
    )
    assert means == {1: 1.0}  # the class-0 mean (1, 1), not its nearer single vector, is what is compared
    with pytest.raises(ValueError, match="one label per feature row"):
        A.nearest_class_mean_accuracy(train, [0, 1], test, [0, 1, 0, 2])


# --------------------------------------------------------------------------- register image-dependence


def test_register_dependence_counts_the_highest_norm_register_and_pairwise_cosines():
    n = 4
    constant = torch.tensor([5.0, 0, 0, 0]).expand(n, 4)  # the same large vector in every image
    varying = torch.eye(4)  # a different direction in every image: pairwise cosine 0
    dependence = A.register_image_dependence(torch.stack([varying, constant], dim=1))  # [n, 2 registers, 4]
    torch.testing.assert_close(dependence.top_norm_share, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(dependence.mean_rank, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(dependence.mean_norm, torch.tensor([1.0, 5.0]))
    torch.testing.assert_close(dependence.mean_pairwise_cosine, torch.tensor([0.0, 1.0]))
    tied = A.register_image_dependence(torch.stack([constant, constant, varying], dim=1))
    torch.testing.assert_close(tied.top_norm_share, torch.tensor([0.5, 0.5, 0.0]))  # equal norms share the top
    torch.testing.assert_close(tied.mean_rank, torch.tensor([1.5, 1.5, 3.0]))
    with pytest.raises(ValueError, match="n >= 2"):
        A.register_image_dependence(torch.ones(1, 2, 4))


def test_an_outlier_dimension_hides_image_information_that_a_layernorm_with_small_scale_there_exposes():
    """Lappe & Giese's reconciliation: one huge constant dimension makes raw cosines ~1; a LayerNorm
    whose learned scale is small on that dimension (as DINOv2's norm1 is) leaves the image-dependent
    dimensions visible to q/k/v."""
    generator = torch.Generator().manual_seed(0)
    small = torch.randn(16, 1, 32, generator=generator)
    outlier = torch.zeros(32)
    outlier[0] = 100.0
    scale = torch.ones(32)
    scale[0] = 0.01
    raw = A.register_image_dependence(small + outlier).mean_pairwise_cosine.item()
    normed = A.register_image_dependence(torch.nn.functional.layer_norm(small + outlier, (32,), weight=scale))
    plain = A.register_image_dependence(torch.nn.functional.layer_norm(small + outlier, (32,)))
    assert raw > 0.99 and plain.mean_pairwise_cosine.item() > 0.99  # normalising alone keeps the outlier
    assert normed.mean_pairwise_cosine.item() < raw - 0.05


# --------------------------------------------------------------------------- controlled regimes

MARKERS = {"registers": 0, "patches": 1, "cls": 2}  # a channel that marks each token type


def forced_model(target: str, seed: int = 0, marker: float = 5.0, beta: float = 20.0) -> LastViTModel:
    """A tiny 2-block LastViT (4 registers, CLS readout) whose last-layer CLS attention goes to `target`
    ("registers" or "patches"). Each token type carries a marker channel (set in the embeddings, and
    the first block is kept from writing to the marker channels); the last layer's query is a constant
    (q weight 0, bias beta on each head's first dimension) and its key's first dimension per head reads
    the target's marker channel, so the CLS logits of the target tokens exceed all others by ~35."""
    torch.manual_seed(seed)
    model = LastViTModel(tiny_config(num_register_tokens=4, pooling="cls", attn_implementation="eager")).eval()
    embeddings, marked = model.embeddings, list(MARKERS.values())
    with torch.no_grad():
        projection = embeddings.patch_embeddings.projection
        for tensor in (embeddings.position_embeddings, embeddings.register_tokens, embeddings.cls_token):
            tensor[..., marked] = 0
        projection.weight[marked] = 0
        projection.bias[marked] = 0
        projection.bias[MARKERS["patches"]] = marker
        embeddings.register_tokens[..., MARKERS["registers"]] = marker
        embeddings.cls_token[..., MARKERS["cls"]] = marker
        for layer in model.encoder.layer[:-1]:
            for linear in (layer.attention.o_proj, layer.mlp.fc2):
                linear.weight[marked] = 0
                linear.bias[marked] = 0
        attention = model.encoder.layer[-1].attention
        for linear in (attention.q_proj, attention.k_proj):
            linear.weight.zero_()
            linear.bias.zero_()
        for head in range(model.config.num_attention_heads):
            attention.q_proj.bias[head * attention.head_dim] = beta
            attention.k_proj.weight[head * attention.head_dim, MARKERS[target]] = 1.0
    return model


@pytest.fixture(scope="module")
def regimes():
    """Both forced models analysed on 16 random images, with a 10-class one-shot test whose test
    images are the training images plus a little noise (so o_full decodes them: the ceiling is 1)."""
    out = {}
    for target in ("registers", "patches"):
        generator = torch.Generator().manual_seed(1)
        train = torch.randn(10, 3, 32, 32, generator=generator)
        test = train + 0.05 * torch.randn(10, 3, 32, 32, generator=generator)
        one_shot = OneShotImages(train, torch.arange(10), test, torch.arange(10))
        images = torch.randn(16, 3, 32, 32, generator=generator)
        out[target] = analyze(forced_model(target), images, one_shot=one_shot, progress=False).numbers
    return out


@pytest.mark.parametrize("target, other", [("registers", "patches"), ("patches", "registers")])
def test_forced_attention_is_reported_as_its_regime_by_shares_cka_gram_and_one_shot(regimes, target, other):
    numbers = regimes[target]
    assert numbers["attention_share"][target]["mean"] > 0.999
    part, other_part = (
        {"registers": "o_reg", "patches": "o_patch"}[target],
        {"registers": "o_reg", "patches": "o_patch"}[other],
    )
    for suffix in ("", "_after_projection"):
        cka = numbers["cka" + suffix]
        assert cka[f"o_full_vs_{part}"] > 0.999
        assert cka[f"o_full_vs_{other_part}"] < 0.9
        accuracy = numbers["one_shot"]["accuracy" + suffix]
        assert accuracy["o_full"]["top1"] == 1.0  # the ceiling
        assert accuracy[part]["top1"] == 1.0  # the readout of o_full transfers to the part it is made of
        assert accuracy[other_part]["top1"] <= 0.3  # and not to the other (chance: 0.1)
    gram = numbers["gram"]
    dominant = "patch_patch" if target == "patches" else "reg_reg"
    assert gram[dominant] > 0.99


def test_the_one_shot_test_needs_a_cls_token_and_shared_classes():
    images = torch.randn(4, 3, 32, 32)
    one_shot = OneShotImages(images[:2], torch.tensor([0, 1]), images[2:], torch.tensor([0, 1]))
    no_cls = LastViTModel(tiny_config(use_cls_token=False, pooling="mean"))
    with pytest.raises(AnalysisError, match="no CLS token"):
        analyze(no_cls, images, one_shot=one_shot, progress=False)
    unknown = OneShotImages(images[:2], torch.tensor([0, 1]), images[2:], torch.tensor([0, 7]))
    with pytest.raises(AnalysisError, match="test labels among the training labels"):
        analyze(LastViTModel(tiny_config()), images, one_shot=unknown, progress=False)
