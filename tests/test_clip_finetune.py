"""CLIP fine-tuning from a full LastViT-CLIP folder (`--model-name-or-path`): both towers, the
temperature and the tokenizer come from the folder, the pooling flags set the image tower's readout,
and flags that would size a new model are refused."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lastvit.clip.training import CLIPTrainingArguments, captioned_splits, train_clip
from lastvit.training.pretraining import PretrainingError

FLAGS = dict(scenes_train=16, scenes_test=8, image_size=32, epochs=1, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LastViT-CLIP (LazyStrike readout, K = N/2) after 2 steps of lastvit-train-clip."""
    folder = tmp_path_factory.mktemp("clip") / "lazystrike"
    train_clip(CLIPTrainingArguments(output_dir=folder, batch_size=8, **FLAGS))
    return folder


def first_batch_loss(folder, args) -> float:
    """The loss the saved model, with the fine-tuning run's readout, computes on the run's first batch:
    the whole training split (its batch), with the run's captions and training crops (loss is
    invariant to the order of the pairs)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from lastvit.clip.captions import tokenize
    from lastvit.data.loading import ImageTransform
    from modeling_lastvit import LastViTCLIPConfig, LastViTCLIPModel, LastViTConfig

    config = LastViTCLIPConfig.from_pretrained(folder)
    config.vision_config = LastViTConfig.from_dict({**config.vision_config.to_dict(), "pooling": args.pooling})
    model = LastViTCLIPModel.from_pretrained(folder, config=config).train()
    assert model.config.vision_config.pooling == args.pooling
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    transform = ImageTransform(
        size=32, mean=tuple(processor.image_mean), std=tuple(processor.image_std), train=True, crop_scale=(0.6, 1.0)
    )
    train, _, _ = captioned_splits(args)
    pixels = torch.stack([transform(row["image"], index, 0) for index, row in enumerate(train)])
    tokens = tokenize(AutoTokenizer.from_pretrained(folder), train["text"], args.max_text_length)
    with torch.no_grad():
        return model(**tokens, pixel_values=pixels, return_loss=True).loss.item()


def test_fine_tuning_starts_from_the_saved_towers_temperature_and_tokenizer_with_the_new_readout(trained, tmp_path):
    out = tmp_path / "cls"
    args = CLIPTrainingArguments(
        output_dir=out, model_name_or_path=str(trained), pooling="cls", batch_size=16, **FLAGS
    )
    results = train_clip(args)
    state = json.loads((out / "checkpoints/last/trainer_state.json").read_text())
    assert results["step"] == 1
    assert state["losses"][0] == pytest.approx(first_batch_loss(trained, args), rel=1e-5)

    start, tuned = load_file(trained / "model.safetensors"), load_file(out / "model.safetensors")
    assert start.keys() == tuned.keys()
    assert any(not torch.equal(start[k], tuned[k]) for k in start)  # it trained
    assert (out / "tokenizer.json").read_text() == (trained / "tokenizer.json").read_text()
    assert "the tokenizer of" in (out / "README.md").read_text()

    from transformers import AutoModel

    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "LastViTCLIPModel"
    assert model.config.vision_config.pooling == "cls"


@pytest.mark.parametrize(
    "flags, named",
    [
        ({"text_width": 64}, "--text-width"),
        ({"projection_dim": 32, "preset": "tiny"}, "--preset, --projection-dim"),
        ({"vision_model_name_or_path": "tower"}, "--vision-model-name-or-path"),
    ],
)
def test_flags_that_size_a_new_model_conflict_with_a_model_folder(tmp_path, flags, named):
    with pytest.raises(PretrainingError, match=f"drop {named}"):
        CLIPTrainingArguments(output_dir=tmp_path, model_name_or_path="clip", **flags)


def test_a_lastvit_image_tower_is_not_a_clip_folder(trained, tmp_path):
    with pytest.raises(PretrainingError, match="not LastViT-CLIP.*--vision-model-name-or-path"):
        train_clip(CLIPTrainingArguments(output_dir=tmp_path / "run", model_name_or_path=str(trained / "image_tower")))
