"""torch.compile: LastViT compiles as one graph and gives the eager outputs.

Backend: "inductor", torch.compile's default, which generates C++ with the installed gcc and needs
no network. Its first compile in a fresh cache pays a one-time set-up (about 20-35 s on a 2-core
machine); later compiles take seconds. The training test uses "aot_eager" instead: it runs the same
graph capture (Dynamo) and forward/backward split (AOTAutograd) that inductor consumes, without
generating kernels, which keeps the suite fast. `benchmarks/bench_lastvit.py` times inductor on
ViT-S/16.
"""

import pytest
import torch

from modeling_lastvit import LastViTModel

from .tiny import tiny_config


def images(batch=2):
    return torch.randn(batch, 3, 32, 32)


# LazyStrike's FFT is complex-valued: inductor says it leaves those ops to eager kernels (expected).
@pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex operators")
@pytest.mark.parametrize("pooling", ["lazystrike", "cls"])
def test_inductor_compiled_model_matches_eager(pooling):
    torch._dynamo.reset()
    model = LastViTModel(
        tiny_config(pooling=pooling, num_register_tokens=2, layerscale_value=1.0, lazystrike_top_k=2)
    ).eval()
    compiled = torch.compile(model, backend="inductor", fullgraph=True)  # fullgraph: no graph breaks allowed
    pixels = images()
    with torch.inference_mode():
        expected = model(pixels, return_pooling_indices=True)
        got = compiled(pixels, return_pooling_indices=True)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, rtol=1e-4, atol=1e-5)
    if pooling == "lazystrike":
        assert torch.equal(got.pooling_indices, expected.pooling_indices)
        assert torch.equal(got.patch_votes, expected.patch_votes)


def test_compiled_training_step_gives_eager_gradients():
    torch._dynamo.reset()
    config = tiny_config(num_register_tokens=2, layerscale_value=1.0, lazystrike_top_k=2)
    eager = LastViTModel(config).train()
    compiled_model = LastViTModel(config).train()
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    pixels = images()
    for model in (eager, compiled):
        model(pixels).pooler_output.square().mean().backward()
    for (name, expected), got in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")
