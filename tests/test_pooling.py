"""LazyStrike pooling, checked against the semantics of the authors' code (science.md §1.1)."""

import math

import pytest
import torch

from modeling_lastvit.pooling_lastvit import (
    gaussian_channel_window,
    lazystrike_pool,
    lowpass_channels,
    resolve_top_k,
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
    gauss = lambda f: torch.exp(-0.5 * (f / sigma) ** 2)  # noqa: E731
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
