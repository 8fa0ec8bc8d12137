"""LazyStrike pooling, checked against the semantics of the authors' code (the released LaSt-ViT code)."""

import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from modeling_lastvit import pooling_lastvit
from modeling_lastvit.pooling_lastvit import (
    gaussian_channel_window,
    lazystrike_pool,
    lowpass_channels,
    resolve_top_k,
    select_top_k,
    stability_score,
)

B, N, D = 3, 10, 16


@pytest.fixture
def tokens():
    return torch.randn(B, N, D, dtype=torch.float64)


def test_window_uses_the_code_index_range_and_peaks_left_of_centre():
    window = gaussian_channel_window(768, math.sqrt(768))
    assert window.shape == (768,)
    assert window.max() == 1.0
    # arange(-383, 385): the peak (pos 0) is at index 383, the centred DC bin at 384.
    assert window.argmax().item() == 383
    assert window[384] < 1.0


def test_fft_lowpass_equals_circular_gaussian_smoothing_along_channels(tokens):
    """The FFT path is a circular convolution along channels. Its frequency response is the window
    read at f + 1 (the code's off-by-one), symmetrised by taking the real part:
    H(f) = (g(f + 1) + g(-f + 1)) / 2, with frequencies taken modulo D."""
    sigma = 2.5
    x_hat = lowpass_channels(tokens, sigma)

    signed = torch.fft.fftfreq(D, d=1.0 / D).to(torch.float64)  # 0, 1, ..., -D/2, ..., -1
    negated = signed[(-torch.arange(D)) % D]  # the frequency -f, wrapped into [-D/2, D/2)
    gauss = lambda f: torch.exp(-0.5 * (f / sigma) ** 2)
    response = 0.5 * (gauss(signed + 1) + gauss(negated + 1))
    kernel = torch.fft.ifft(response).real  # weights over channel offsets 0..D-1
    expected = sum(kernel[s] * torch.roll(tokens, shifts=s, dims=-1) for s in range(D))
    torch.testing.assert_close(x_hat, expected, rtol=1e-10, atol=1e-10)


def test_smoothing_width_is_sqrt_d_over_two_pi_channels_at_vit_base_width():
    """At D=768, sigma=sqrt(768), the channel-space kernel is a Gaussian of std ~4.41 channels."""
    dim = 768
    impulse = torch.zeros(1, 1, dim, dtype=torch.float64)
    impulse[..., 0] = 1.0
    kernel = lowpass_channels(impulse, math.sqrt(dim))[0, 0]
    offsets = torch.fft.fftfreq(dim, d=1.0 / dim).to(torch.float64)  # signed channel offsets
    std = math.sqrt((kernel * offsets**2).sum() / kernel.sum())
    assert std == pytest.approx(math.sqrt(dim) / (2 * math.pi), rel=1e-3)
    assert kernel.sum().item() == pytest.approx(math.exp(-0.5 / dim), rel=1e-9)  # DC gain 0.99935


def test_lowpass_of_a_constant_signal_keeps_it_up_to_the_dc_gain():
    x = torch.full((1, 1, 768), 2.0, dtype=torch.float64)
    dc_gain = math.exp(-0.5 / 768)  # the window's value one bin from its peak, sigma = sqrt(768)
    torch.testing.assert_close(lowpass_channels(x, math.sqrt(768)), x * dc_gain)


def test_top_k_equal_num_patches_is_mean_pooling(tokens):
    out = lazystrike_pool(tokens, top_k=N)
    torch.testing.assert_close(out.pooled, tokens.mean(dim=1), rtol=0, atol=1e-12)


def test_top_k_ratio_one_is_mean_pooling(tokens):
    out = lazystrike_pool(tokens, top_k=None, top_k_ratio=1.0)
    torch.testing.assert_close(out.pooled, tokens.mean(dim=1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3, N])
def test_votes_sum_to_k_times_channels(tokens, k):
    out = lazystrike_pool(tokens, top_k=k)
    assert out.votes.shape == (B, N)
    assert (out.votes.sum(dim=1) == k * D).all()
    assert out.indices.shape == (B, k, D)


def test_pooled_value_is_mean_of_original_features_at_selected_patches(tokens):
    out = lazystrike_pool(tokens, top_k=3)
    for b in range(B):
        for c in range(D):
            assert out.pooled[b, c] == pytest.approx(tokens[b, out.indices[b, :, c], c].mean().item())


def test_selection_is_the_top_scores_per_channel_of_the_repo_rule(tokens):
    sigma = math.sqrt(D)
    # the authors' complex-FFT low-pass, written out
    window = gaussian_channel_window(D, sigma, dtype=tokens.dtype)
    spectrum = torch.fft.fftshift(torch.fft.fft(tokens, dim=-1), dim=-1) * window
    authors = torch.fft.ifft(torch.fft.ifftshift(spectrum, dim=-1), dim=-1).real
    torch.testing.assert_close(lowpass_channels(tokens, sigma), authors, rtol=1e-12, atol=1e-12)
    scores = tokens / (authors - tokens).abs()
    out = lazystrike_pool(tokens, top_k=2)
    expected = scores.topk(2, dim=1).indices
    assert torch.equal(out.indices, expected)


@pytest.mark.parametrize("k", [1, 4])
def test_gradient_reaches_exactly_k_entries_per_channel_with_weight_one_over_k(tokens, k):
    x = tokens.clone().requires_grad_(True)
    lazystrike_pool(x, top_k=k).pooled.sum().backward()
    nonzero = x.grad != 0
    assert nonzero.sum().item() == B * k * D
    torch.testing.assert_close(x.grad[nonzero], torch.full((B * k * D,), 1.0 / k, dtype=x.dtype))
    # the selected entries are exactly those with a gradient: nothing flows through the scores
    out = lazystrike_pool(tokens, top_k=k)
    selected = torch.zeros_like(nonzero).scatter_(1, out.indices, True)
    assert torch.equal(nonzero, selected)


def test_repo_and_paper_scores_differ_where_they_should():
    # Entry 0 is negative but its low-pass is positive: "repo" (x / r) scores it negative,
    # "paper" (x_hat / r) positive. Where x and x_hat agree in sign and value they coincide.
    x = torch.tensor([-1.0, 2.0, 3.0])
    x_hat = torch.tensor([1.0, 2.0 + 1e-3, 3.0 + 1e-3])
    repo = stability_score(x, x_hat, "repo", eps=1e-6)
    paper = stability_score(x, x_hat, "paper", eps=1e-6)
    assert repo[0] < 0 < paper[0]
    torch.testing.assert_close(repo[1:], paper[1:], rtol=1e-3, atol=0)


def test_repo_and_paper_rules_select_different_patches_on_random_features():
    x = torch.randn(4, 49, 64)
    repo = lazystrike_pool(x, top_k=1, score_rule="repo").indices
    paper = lazystrike_pool(x, top_k=1, score_rule="paper").indices
    assert (repo != paper).any()


def test_repo_score_clamps_a_zero_residual_instead_of_dividing_by_zero():
    x = torch.tensor([1.0])
    assert torch.isfinite(stability_score(x, x.clone(), "repo", eps=1e-6)).all()


def test_unknown_score_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="score rule"):
        stability_score(torch.ones(2), torch.ones(2), "median")


def test_bf16_input_scores_in_fp32_and_returns_bf16(tokens):
    x = tokens.float()
    out_fp32 = lazystrike_pool(x, top_k=2)
    out_bf16 = lazystrike_pool(x.bfloat16(), top_k=2)
    assert out_bf16.pooled.dtype == torch.bfloat16
    # scoring the bf16 tokens in fp32 sees the same values the fp32 reference would after rounding
    ref = lazystrike_pool(x.bfloat16().float(), top_k=2)
    assert torch.equal(out_bf16.indices, ref.indices)
    assert out_fp32.indices.shape == out_bf16.indices.shape


def test_top_k_resolution():
    assert resolve_top_k(196, top_k_ratio=0.5) == 98
    assert resolve_top_k(196, top_k_ratio=1e-6) == 1
    assert resolve_top_k(196, top_k=7) == 7
    with pytest.raises(ValueError, match="exceeds the 16 patches"):
        resolve_top_k(16, top_k=17)


# ----- the fast selection paths against today's plain fp32 implementation -----


def reference_lazystrike_pool(patch_tokens, top_k, score_rule="repo", eps=1e-6):
    """The plain implementation the fast paths must match: whole batch, scores in fp32 (or the input's wider
    dtype), strided top-K over the patch axis, gather and mean."""
    num_patches, dim = patch_tokens.shape[-2:]
    x = patch_tokens.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    scores = stability_score(x, lowpass_channels(x, math.sqrt(dim)), score_rule, eps)
    indices = scores.topk(top_k, dim=1, sorted=False).indices
    votes = torch.zeros(x.shape[0], num_patches, dtype=torch.long).scatter_add_(
        1, indices.flatten(1), torch.ones_like(indices.flatten(1))
    )
    return indices, patch_tokens.gather(1, indices).mean(dim=1), votes


def tied_tokens(dtype=torch.float32):
    """Patches 3, 7 and 11 are the same token, and patches 0-2 are constant: equal scores in every channel."""
    x = torch.randn(4, 16, 32, dtype=dtype)
    x[:, [7, 11]] = x[:, 3:4]
    x[:, :3] = 0.5
    return x


TEST_INPUTS = {
    "random": lambda: torch.randn(5, 49, 64),
    "vit-b-like": lambda: torch.randn(2, 196, 768),
    "bf16": lambda: torch.randn(3, 49, 64).bfloat16(),
    "fp16": lambda: torch.randn(3, 49, 64).half(),
    "tied": tied_tokens,
    "tied-bf16": lambda: tied_tokens(torch.bfloat16),
    "all-equal": lambda: torch.ones(2, 9, 16),
}


TIED = ("tied", "tied-bf16", "all-equal")


K_RULES = {"1": lambda n: 1, "2": lambda n: 2, "N/2": lambda n: n // 2, "N": lambda n: n}
# K=1 on exact ties has its own test below; every other case must match the reference exactly.
CASES = [(i, k) for i in TEST_INPUTS for k in K_RULES if not (k == "1" and i in TIED)]


@pytest.mark.parametrize(("inputs", "k_rule"), CASES)
@pytest.mark.parametrize("rule", ["repo", "paper"])
def test_selection_is_identical_to_the_plain_fp32_reference(inputs, k_rule, rule):
    tokens = TEST_INPUTS[inputs]()
    k = K_RULES[k_rule](tokens.shape[1])
    expected_indices, expected_pooled, expected_votes = reference_lazystrike_pool(tokens, k, rule)
    out = lazystrike_pool(tokens, top_k=k, score_rule=rule)
    assert torch.equal(out.indices, expected_indices)  # same entries in the same order, on CPU
    assert torch.equal(out.votes, expected_votes)
    assert torch.equal(out.pooled, expected_pooled)


@pytest.mark.parametrize("inputs", TIED)
@pytest.mark.parametrize("rule", ["repo", "paper"])
def test_k1_on_exact_ties_takes_the_first_maximum_of_the_same_scores(inputs, rule):
    """Where scores tie exactly (here: duplicate or constant tokens), K=1 takes the first maximum, a fixed rule
    on every device. `topk(1)` takes an unspecified one (on CPU, torch 2.13, the 8th of 9 equal patches). Both pick
    entries of the same, maximal fp32 score, and for duplicate tokens the same pooled value; only which of the
    equal patches gets the vote can differ."""
    tokens = TEST_INPUTS[inputs]()
    x = tokens.float()
    scores = stability_score(x, lowpass_channels(x, math.sqrt(x.shape[-1])), rule)
    expected_indices, expected_pooled, _ = reference_lazystrike_pool(tokens, 1, rule)
    out = lazystrike_pool(tokens, top_k=1, score_rule=rule)
    assert torch.equal(scores.gather(1, out.indices), scores.gather(1, expected_indices))
    assert torch.equal(out.pooled, expected_pooled)
    first_maximum = (scores == scores.amax(dim=1, keepdim=True)).int().argmax(dim=1, keepdim=True)
    assert torch.equal(out.indices, first_maximum)


def test_k1_selection_takes_the_first_maximum():
    scores = torch.zeros(2, 10, 6)
    scores[:, [2, 5, 7]] = 1.0  # three-way tie for the maximum in every channel
    scores[1, 9, 4] = 2.0
    expected = torch.full((2, 1, 6), 2)
    expected[1, 0, 4] = 9
    assert torch.equal(select_top_k(scores, 1), expected)
    assert (select_top_k(torch.zeros(1, 9, 3), 1) == 0).all()


@pytest.mark.parametrize("inputs", ["random", "vit-b-like", "tied", "all-equal"])
@pytest.mark.parametrize("k", [2, 5])
def test_top_k_on_the_contiguous_patches_last_layout_selects_the_same_entries(inputs, k):
    tokens = TEST_INPUTS[inputs]()
    scores = stability_score(tokens, lowpass_channels(tokens, math.sqrt(tokens.shape[-1])))
    strided = select_top_k(scores, k, patches_last=False)
    contiguous = select_top_k(scores, k, patches_last=True)
    assert contiguous.shape == strided.shape == (tokens.shape[0], k, tokens.shape[-1])
    assert torch.equal(contiguous.sort(dim=1).values, strided.sort(dim=1).values)


@pytest.mark.parametrize("k", [1, 3])
def test_batch_chunks_bound_the_score_path_and_change_no_value(monkeypatch, k):
    tokens = torch.randn(7, 16, 32)
    whole = lazystrike_pool(tokens, top_k=k)
    monkeypatch.setattr(pooling_lastvit, "SCORE_CHUNK_ELEMENTS", 2 * 16 * 32)  # chunks of 2, 2, 2 and 1 images
    chunked = lazystrike_pool(tokens, top_k=k)
    assert torch.equal(chunked.indices, whole.indices)
    assert torch.equal(chunked.votes, whole.votes)
    assert torch.equal(chunked.pooled, whole.pooled)
    x = tokens.clone().requires_grad_(True)
    lazystrike_pool(x, top_k=k).pooled.sum().backward()
    assert (x.grad != 0).sum().item() == 7 * k * 32


def test_leaving_out_the_indices_keeps_the_pooled_feature_and_votes(tokens):
    full = lazystrike_pool(tokens, top_k=3)
    lean = lazystrike_pool(tokens, top_k=3, return_indices=False)
    assert lean.indices is None
    assert torch.equal(lean.pooled, full.pooled) and torch.equal(lean.votes, full.votes)


@pytest.mark.parametrize("k", [1, 3])
def test_pooling_reads_no_tensor_value_on_the_host(k):
    """Under FakeTensorMode any `.item()`, `.tolist()` or `if tensor:` raises: the pooling only queues work
    (no host-device synchronisation on a GPU)."""
    with FakeTensorMode():
        out = lazystrike_pool(torch.randn(3, 10, 16), top_k=k)
    assert out.indices.shape == (3, k, 16)
