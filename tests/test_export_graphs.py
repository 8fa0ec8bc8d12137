"""Shape-polymorphic graphs: `torch.export` with a dynamic batch and dynamic height/width, and
`torch.compile(dynamic=True)` without a recompile per shape (LazyStrike's batch chunking is eager-only)."""

import pytest
import torch

from lastvit.export import ExportableLastViT, export_program
from modeling_lastvit import LastViTBackbone, LastViTForImageClassification, LastViTModel

from .tiny import tiny_config

POOLINGS = ["cls", "mean", "max", "lazystrike"]
# Batch 1 and 3 at the native 32 px; batch 2 at 48x24 px (another grid: the position embeddings are resized).
SHAPES = [(1, 3, 32, 32), (3, 3, 32, 32), (2, 3, 48, 24)]


def config(pooling, registers, **overrides):
    options = {"lazystrike_top_k": 2, "num_labels": 5, **overrides}
    return tiny_config(pooling=pooling, num_register_tokens=registers, **options)


def assert_program_matches_eager(model, dynamic_size=True):
    torch.manual_seed(0)
    program = export_program(model, torch.randn(2, 3, 32, 32), dynamic_size=dynamic_size).module()
    eager = ExportableLastViT(model.eval())
    for shape in SHAPES if dynamic_size else SHAPES[:2]:
        pixels = torch.randn(shape)
        with torch.no_grad():
            expected, got = eager(pixels), program(pixels)
        assert len(got) == len(expected)
        for name, e, g in zip(eager.output_names, expected, got):
            assert g.shape == e.shape, (name, shape)
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=f"{name} at {shape}")


@pytest.mark.parametrize("registers", [0, 2])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_classifier_exports_with_dynamic_batch_height_and_width(pooling, registers):
    assert_program_matches_eager(LastViTForImageClassification(config(pooling, registers)))


@pytest.mark.parametrize("registers", [0, 2])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_base_model_exports_with_dynamic_batch_height_and_width(pooling, registers):
    assert_program_matches_eager(LastViTModel(config(pooling, registers)))


@pytest.mark.parametrize("registers", [0, 2])
def test_backbone_exports_with_dynamic_batch_height_and_width(registers):
    assert_program_matches_eager(LastViTBackbone(config("cls", registers, out_indices=[1, 2])))


def test_lazystrike_with_a_k_ratio_exports_with_a_dynamic_grid():
    """K = round(ratio * N) follows the token count inside the graph."""
    assert_program_matches_eager(
        LastViTModel(config("lazystrike", 1, lazystrike_top_k=None, lazystrike_top_k_ratio=0.25))
    )


def test_the_exported_graph_has_no_batch_chunks_and_no_fft():
    program = export_program(LastViTModel(config("lazystrike", 2)), torch.randn(2, 3, 32, 32))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("fft" in target for target in targets)
    assert not any("split" in target for target in targets)


def test_dynamic_compile_runs_three_shapes_with_one_graph():
    """`torch.compile(dynamic=True)`: one capture serves every batch size and image size. (The shapes avoid equal
    sizes: dynamo's duck sizing would otherwise tie, e.g., a square input's height to its width.)"""
    torch._dynamo.reset()
    captures = []

    def counting_backend(graph_module, example_inputs):
        captures.append(graph_module)
        return graph_module.forward

    model = LastViTForImageClassification(config("lazystrike", 2)).eval()
    compiled = torch.compile(model, backend=counting_backend, dynamic=True, fullgraph=True)
    with torch.no_grad():
        for shape in [(2, 3, 24, 40), (3, 3, 40, 16), (5, 3, 48, 32)]:
            pixels = torch.randn(shape)
            torch.testing.assert_close(compiled(pixels).logits, model(pixels).logits, rtol=1e-5, atol=1e-5)
    assert len(captures) == 1
