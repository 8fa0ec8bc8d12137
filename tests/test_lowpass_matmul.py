"""The FFT-free LazyStrike (`lazystrike_lowpass="matmul"`) is the same function as the FFT path and the authors'.

Tie rule: K = 1 takes the first maximal patch of each channel (`select_top_k`); for K > 1 the top-K of entries
that tie exactly is unspecified, on either path. The equalities below are on inputs without exact ties.
"""

import math

import pytest
import torch

from modeling_lastvit import LastViTModel
from modeling_lastvit.pooling_lastvit import (
    channel_highpass_matrix,
    lazystrike_pool,
    lowpass_channels,
    resolve_lowpass,
    stability_score,
)

from .test_pooling import reference_lazystrike_pool
from .tiny import tiny_config


def authors_lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The authors' code, literally: complex FFT, fftshift, max-normalised Gaussian window over
    arange(-D//2 + 1, D//2 + 1) (peak one bin left of DC), ifftshift, inverse FFT, real part."""
    dim = x.shape[-1]
    pos = torch.arange(-dim // 2 + 1, dim // 2 + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (pos / sigma) ** 2)
    window = (window / window.max()).to(x.dtype)
    spectrum = torch.fft.fftshift(torch.fft.fft(x, dim=-1), dim=-1) * window
    return torch.fft.ifft(torch.fft.ifftshift(spectrum, dim=-1), dim=-1).real


def highpass_by_path(x: torch.Tensor, path: str) -> torch.Tensor:
    """x_hat - x computed by one of the package's two paths."""
    sigma = math.sqrt(x.shape[-1])
    if path == "fft":
        return lowpass_channels(x, sigma) - x
    return x @ channel_highpass_matrix(x.shape[-1], sigma, dtype=x.dtype)


def trained_like(batch: int, num_patches: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Post-LayerNorm tokens shaped like a trained ViT's: low-rank shared structure, three massive channels,
    four high-norm tokens, per-channel affine scale and shift."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, num_patches, 8, generator=g) @ torch.randn(8, dim, generator=g)
    x = x + 0.5 * torch.randn(batch, num_patches, dim, generator=g)
    x[..., :3] += 20 * torch.randn(1, 1, 3, generator=g)
    x[:, :4] *= 4
    x = torch.nn.functional.layer_norm(x, (dim,))
    return x * torch.linspace(0.5, 2.0, dim) + 0.1 * torch.randn(dim, generator=g)


def random_tokens(batch: int, num_patches: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, num_patches, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dim", [17, 32, 384, 768])
@pytest.mark.parametrize("path", ["fft", "matmul"])
def test_both_paths_are_the_authors_lowpass_in_fp64(dim, path):
    x = random_tokens(2, 49, dim).double()
    expected = authors_lowpass(x, math.sqrt(dim)) - x
    assert (highpass_by_path(x, path) - expected).abs().max().item() <= 1e-12


def score_error(scores, exact_scores, x, exact_residual, rule, eps=1e-6):
    """Score error in units of the score's sensitivity to the residual r = x_hat - x: a score divides by |r|, which
    can be tiny, so an error d in r moves it by d * |ds/dr|. This is max |score error| / (max|x| * |ds/dr|): the
    residual's error relative to the input's scale, i.e. the rounding of the filter itself."""
    distance = exact_residual.abs()
    if rule == "repo":  # s = x / |r|
        sensitivity = x.abs() / distance.clamp_min(eps) ** 2
    else:  # s = (x + r) / (|r| + eps)
        sensitivity = 1 / (distance + eps) + (x + exact_residual).abs() / (distance + eps) ** 2
    return ((scores.double() - exact_scores).abs() / (x.abs().max() * sensitivity)).max().item()


@pytest.mark.parametrize("dim", [32, 384, 768])
@pytest.mark.parametrize("rule", ["repo", "paper"])
def test_scores_of_the_two_paths_agree(dim, rule):
    """Against the fp64 authors' scores: <= 1e-12 (fp64) and <= 1e-6 (fp32) in units of the score's conditioning
    (see `score_error`). Measured plainly, relative fp32 score errors reach ~3e-3 (matmul) and ~2e-2 (FFT) at
    D = 768 where |x_hat - x| is small: the FFT path is no more exact than the matmul."""
    x = random_tokens(2, 196, dim, seed=dim).double()
    exact_residual = authors_lowpass(x, math.sqrt(dim)) - x
    exact = stability_score(x, None, rule, residual=exact_residual)
    for path in ("fft", "matmul"):
        scores = stability_score(x, None, rule, residual=highpass_by_path(x, path))
        assert score_error(scores, exact, x, exact_residual, rule) <= 1e-12, path
        x32 = x.float()
        scores32 = stability_score(x32, None, rule, residual=highpass_by_path(x32, path))
        assert score_error(scores32, exact, x, exact_residual, rule) <= 1e-6, path


def test_the_highpass_matrix_is_symmetric_circulant_with_the_authors_dc_gain():
    matrix = channel_highpass_matrix(768, math.sqrt(768), dtype=torch.float64)
    assert torch.equal(matrix, matrix.T)
    assert torch.equal(matrix.roll((1, 1), dims=(0, 1)), matrix)  # circulant
    # rows of C sum to the DC gain exp(-0.5 / D): the window's value one bin from its peak
    row_sums = (matrix + torch.eye(768, dtype=torch.float64)).sum(1)
    torch.testing.assert_close(row_sums, torch.full((768,), math.exp(-0.5 / 768), dtype=torch.float64))


FEATURES = {"random": random_tokens, "trained-like": trained_like}
K_RULES = {"1": lambda n: 1, "N/7": lambda n: n // 7, "N/2": lambda n: n // 2, "N": lambda n: n}


def near_ties(tokens: torch.Tensor, k: int, rule: str, gap: float = 1e-4) -> torch.Tensor:
    """[B, D] channels whose K-th and (K+1)-th best fp64 authors' scores lie within `gap` (relative, or absolute for
    scores below 1): there the
    rounding of any fp32 score path (FFT or matmul) may decide which of the two patches is selected."""
    if k == tokens.shape[1]:
        return torch.zeros(tokens.shape[0], tokens.shape[-1], dtype=torch.bool)
    x = tokens.double()
    ranked = stability_score(x, authors_lowpass(x, math.sqrt(x.shape[-1])), rule).sort(dim=1, descending=True).values
    return (ranked[:, k - 1] - ranked[:, k]).abs() <= gap * ranked[:, k - 1].abs().clamp_min(1)


@pytest.mark.parametrize("features", list(FEATURES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("k_rule", list(K_RULES))
@pytest.mark.parametrize("rule", ["repo", "paper"])
def test_selections_votes_and_pooled_values_are_identical_on_both_paths(features, dtype, k_rule, rule):
    """Identical on every channel without a near-tie at the K-th score, and where all selections agree the votes and
    pooled values are identical too. Of the 32 cases here, 31 select identically everywhere; in one (trained-like,
    fp32, K = N/2, "paper") one channel of 1536 differs, at a near-tie (gap 1.2e-6): there the FFT path's selection
    differs from the fp64 authors' in 2 channels, the matmul path's in 1."""
    tokens = FEATURES[features](4, 196, 384).to(dtype)
    k = K_RULES[k_rule](196)
    fft = lazystrike_pool(tokens, top_k=k, score_rule=rule, lowpass="fft")
    matmul = lazystrike_pool(tokens, top_k=k, score_rule=rule, lowpass="matmul")
    ties = near_ties(tokens, k, rule)
    same_set = (matmul.indices.sort(dim=1).values == fft.indices.sort(dim=1).values).all(dim=1)
    assert same_set[~ties].all()
    if same_set.all():
        assert torch.equal(matmul.votes, fft.votes)
        assert torch.equal(matmul.pooled, fft.pooled)
        # both are the plain reference implementation of the authors' selection (test_pooling.py)
        expected_indices, expected_pooled, expected_votes = reference_lazystrike_pool(tokens, k, rule)
        assert torch.equal(matmul.indices.sort(dim=1).values, expected_indices.sort(dim=1).values)
        assert torch.equal(matmul.votes, expected_votes)
        assert torch.equal(matmul.pooled, expected_pooled)


@pytest.mark.parametrize("k", [1, 5])
def test_selection_equals_the_authors_formula_on_both_paths(k):
    """Selection from the literal authors' low-pass (complex FFT, fp64 scores) vs each path in fp32."""
    tokens = trained_like(2, 49, 64, seed=3)
    x = tokens.double()
    scores = stability_score(x, authors_lowpass(x, 8.0))
    expected = scores.topk(k, dim=1).indices.sort(dim=1).values
    for path in ("fft", "matmul"):
        got = lazystrike_pool(tokens, top_k=k, lowpass=path).indices.sort(dim=1).values
        assert torch.equal(got, expected), path


def test_gradients_are_the_same_on_both_paths():
    grads = []
    for path in ("fft", "matmul"):
        x = trained_like(2, 16, 32).requires_grad_(True)
        lazystrike_pool(x, top_k=3, lowpass=path).pooled.square().sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_auto_uses_the_fft_in_cpu_eager_mode_and_the_matmul_elsewhere():
    assert resolve_lowpass("auto", torch.device("cpu")) == "fft"
    assert resolve_lowpass("auto", torch.device("cuda")) == "matmul"
    assert resolve_lowpass("fft", torch.device("cuda")) == "fft"
    with pytest.raises(ValueError, match="low-pass 'conv'"):
        resolve_lowpass("conv", torch.device("cpu"))


def test_config_rejects_an_unknown_lowpass_path():
    with pytest.raises(ValueError, match="unknown `lazystrike_lowpass` 'conv'"):
        tiny_config(lazystrike_lowpass="conv")


def test_the_matrix_is_a_non_persistent_buffer_rebuilt_exactly_for_any_dtype(tmp_path):
    model = LastViTModel(tiny_config(lazystrike_lowpass="matmul", lazystrike_top_k=3)).eval()
    exact = channel_highpass_matrix(32, math.sqrt(32))
    assert not any("highpass" in key for key in model.state_dict())
    assert torch.equal(model.pooler.lazystrike.highpass, exact)
    model.save_pretrained(tmp_path)
    loaded = LastViTModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert torch.equal(loaded.pooler.lazystrike.highpass, exact)  # rebuilt in fp32, not loaded nor left empty
    model.to(torch.bfloat16)
    assert torch.equal(model.pooler.lazystrike.highpass, exact)  # kept in fp32 from its definition
    model.double()
    assert torch.equal(
        model.pooler.lazystrike.highpass, channel_highpass_matrix(32, math.sqrt(32), dtype=torch.float64)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_models_give_the_same_outputs_on_both_paths(dtype):
    pixels = torch.randn(3, 3, 32, 32)
    outputs = []
    for path in ("fft", "matmul"):
        torch.manual_seed(0)
        model = LastViTModel(tiny_config(lazystrike_lowpass=path, lazystrike_top_k=4)).eval().to(dtype)
        with torch.no_grad():
            outputs.append(model(pixels.to(dtype), return_pooling_indices=True))
    assert torch.equal(outputs[0].pooling_indices, outputs[1].pooling_indices)
    assert torch.equal(outputs[0].pooler_output, outputs[1].pooler_output)
