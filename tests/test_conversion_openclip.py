"""`--from openclip`: OpenAI CLIP / open_clip visual towers, pickled or TorchScript (read without running
its code), convert with identical embeddings."""

import pytest
import torch

from lastvit.conversion import ConversionOptions, convert_openclip_state_dict, read_torchscript_tensors
from lastvit.conversion.sources import convert_checkpoint

from .conversion_helpers import (
    NATIVE,
    SIZE_IDS,
    SIZES,
    assert_close,
    clip_reference,
    pixels,
    save_torchscript_clip,
)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_openai_clip_visual_tower_converts_with_identical_embeddings(tmp_path, size):
    reference = clip_reference()
    path = tmp_path / "epoch_32.pt"  # open_clip's training-checkpoint layout
    torch.save(
        {"epoch": 32, "name": "run", "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path
    )
    result, _ = convert_checkpoint("openclip", str(path), ConversionOptions(num_heads=4))
    assert result.dropped == {"text tower and other non-visual tensors": 21}
    x = pixels(size)
    with torch.no_grad():
        out = result.model(x, output_hidden_states=True)
        assert_close(out.image_embeds, reference(x), "image_embeds")
        assert_close(out.pooler_output, reference.visual.ln_post(out.hidden_states[-1][:, 0]), "ln_post(CLS)")


def test_openclip_lazystrike_reads_the_ln_post_patch_tokens_then_proj():
    reference = clip_reference()
    converted = convert_openclip_state_dict(
        reference.state_dict(), ConversionOptions(pooling="lazystrike", top_k=1, num_heads=4)
    ).model
    for size in (NATIVE, (48, 40)):
        x = pixels(size)
        with torch.no_grad():
            assert_close(converted(x).image_embeds, reference.visual(x, lazystrike_k=1), f"image_embeds at {size}")


def test_open_clip_gelu_towers_need_clip_activation_gelu():
    reference = clip_reference(act=torch.nn.GELU)
    x = pixels()
    gelu = convert_openclip_state_dict(
        reference.state_dict(), ConversionOptions(num_heads=4, clip_activation="gelu")
    ).model
    quick = convert_openclip_state_dict(reference.state_dict(), ConversionOptions(num_heads=4)).model
    with torch.no_grad():
        assert_close(gelu(x).image_embeds, reference(x), "image_embeds")
        assert (quick(x).image_embeds - reference(x)).abs().max() > 1e-3  # the flag matters


def test_torchscript_archive_is_read_without_running_its_code_and_converts(tmp_path):
    reference = clip_reference()
    path = save_torchscript_clip(tmp_path / "openai_b_16.pt", reference)
    tensors = read_torchscript_tensors(path)
    jit_state = torch.jit.load(str(path)).state_dict()
    assert set(jit_state) <= set(tensors)
    for key, value in jit_state.items():
        assert torch.equal(tensors[key], value), key

    reference.half().float()  # the archive holds fp16 weights: compare against the same rounding
    for trust_pickle in (False, True):  # safe reader, and torch.jit.load when opted in
        result, _ = convert_checkpoint(
            "openclip",
            str(path),
            ConversionOptions(pooling="lazystrike", top_k=1, num_heads=4),
            trust_pickle=trust_pickle,
        )
        assert result.model.embeddings.cls_token.dtype == torch.float32
        for size in (NATIVE, (48, 40)):
            x = pixels(size)
            with torch.no_grad():
                assert_close(
                    result.model(x).image_embeds, reference.visual(x, lazystrike_k=1), f"TorchScript at {size}"
                )
