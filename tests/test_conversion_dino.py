"""`--from dino`: facebookresearch/dino backbones and training checkpoints convert with identical tokens
(DINO's own position-embedding resize included); the teacher is the default, the student a key away."""

import pytest
import torch

from lastvit.conversion import ConversionOptions, convert_dino_state_dict
from lastvit.conversion.sources import convert_checkpoint

from .conversion_helpers import NATIVE, SIZE_IDS, SIZES, assert_close, dino_reference, pixels
from .reference_vits import authors_lazystrike, dino_training_checkpoint


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_dino_backbone_converts_with_identical_tokens_including_dinos_resize(size):
    reference = dino_reference()
    converted = convert_dino_state_dict(reference.state_dict(), ConversionOptions(num_heads=4)).model
    x = pixels(size)
    with torch.no_grad():
        tokens, out = reference(x), converted(x)
    assert_close(out.last_hidden_state, tokens, "tokens")
    assert_close(out.pooler_output, tokens[:, 0], "CLS output")


@pytest.mark.parametrize("size", [NATIVE, (48, 40)], ids=["native", "48x40"])
def test_dino_training_checkpoint_gives_the_teacher_backbone_read_out_by_lazystrike(tmp_path, size):
    reference = dino_reference()
    path = tmp_path / "dino0080.pth"
    torch.save(dino_training_checkpoint(reference), path)  # holds argparse.Namespace args: still a safe load
    result, _ = convert_checkpoint("dino", str(path), ConversionOptions(pooling="lazystrike", top_k=1, num_heads=4))
    assert result.dropped == {"DINO projection head (training only)": 6}
    assert any("'teacher'" in note for note in result.notes)
    x = pixels(size)
    with torch.no_grad():
        tokens, out = reference(x), result.model(x)
    assert_close(out.last_hidden_state, tokens, "tokens")
    assert_close(out.pooler_output, authors_lazystrike(tokens[:, 1:], 1), "LazyStrike pooled")


def test_dino_student_is_available_with_checkpoint_key(tmp_path):
    checkpoint = dino_training_checkpoint(dino_reference())
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    result, _ = convert_checkpoint("dino", str(path), ConversionOptions(num_heads=4), checkpoint_key="student")
    torch.testing.assert_close(result.model.embeddings.cls_token, checkpoint["student"]["module.backbone.cls_token"])
