"""A whole transformers `SiglipModel` into a LastViT-CLIP folder (`lastvit-convert --from hf --with-text-tower`):
image and text embeddings and logits equal to the source's at two input sizes, the folder reproduces them in a fresh
process without the package, and `lastvit-train-clip --model-name-or-path FOLDER --loss sigmoid --pooling lazystrike`
fine-tunes it: its first step's loss is the converted model's sigmoid loss on that batch with the LazyStrike readout."""

import json

import pytest
import torch
import transformers
from safetensors.torch import save_file

from lastvit.clip import contrastive
from lastvit.clip.captions import train_word_tokenizer
from lastvit.clip.training import CLIPTrainingArguments, train_clip
from lastvit.conversion import ConversionError, ConversionOptions
from lastvit.conversion.siglip_text import compare_with_siglip_source, convert_siglip_model
from modeling_lastvit import LastViTCLIPConfig, LastViTCLIPModel
from training_scripts.convert import main as convert_main

from .conversion_helpers import ATOL, NATIVE, TINY, perturbed, pixels
from .test_saving_and_remote_code import run_isolated

CAPTIONS = ["a photo of a bird on sand.", "a photo of a mammal on pine.", "a vehicle in front of a dune."]
CONTEXT = 16


def siglip_source(tokenizer):
    """A tiny random `SiglipModel` whose text head maps to the image width (one joint space) and whose special ids
    are the tokenizer's."""
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    text.update(max_position_embeddings=CONTEXT, projection_size=32)
    text.update(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    text.update(eos_token_id=tokenizer.eos_token_id)
    config = transformers.SiglipConfig(vision_config=dict(**TINY, intermediate_size=64), text_config=text)
    torch.manual_seed(0)
    return perturbed(transformers.SiglipModel(config))


@pytest.fixture(scope="module")
def tokenizer():
    return train_word_tokenizer(CAPTIONS, CONTEXT)


@pytest.fixture(scope="module")
def source(tokenizer):
    return siglip_source(tokenizer)


def full_length_ids(batch=3, seed=4):
    return torch.randint(0, 50, (batch, CONTEXT), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [NATIVE, (48, 40)], ids=["native", "48x40"])
def test_siglip_converts_whole_with_embeddings_and_logits_equal_to_the_source(source, tokenizer, size):
    result = convert_siglip_model(source, ConversionOptions(), None, tokenizer)
    diffs = compare_with_siglip_source(source, result.model, pixels(size), full_length_ids())
    assert set(diffs) == {"image_embeds", "text_embeds", "logits_per_image"}
    assert max(diffs.values()) <= ATOL, diffs
    config = result.model.config
    assert (config.text_tower, config.image_projection, config.vision_config.pooling) == ("siglip", False, "map")
    assert result.model.logit_bias.item() == source.logit_bias.item()
    assert result.model.logit_scale.item() == source.logit_scale.item()


def test_shorter_texts_are_padded_to_full_length_as_siglip_trains(source, tokenizer):
    model = convert_siglip_model(source, ConversionOptions(), None, tokenizer).model
    short = tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    padded = torch.nn.functional.pad(short.input_ids, (0, CONTEXT - short.input_ids.shape[1]), value=0)
    with torch.no_grad():
        ours = model.get_text_features(**short).pooler_output  # the attention mask is not SigLIP's: ignored
        theirs = source.get_text_features(input_ids=padded).pooler_output
    torch.testing.assert_close(ours, theirs, rtol=0, atol=ATOL)


def test_the_image_tower_read_out_by_lazystrike_keeps_siglips_text_tower_and_bias(source, tokenizer):
    result = convert_siglip_model(source, ConversionOptions(pooling="lazystrike", top_k=1), None, tokenizer)
    assert result.model.vision_model.pooler.map_head is None
    assert result.dropped["attention-pooling head (the readout is now lazystrike)"] > 0
    with torch.no_grad():
        out = result.model(input_ids=full_length_ids(2), pixel_values=pixels(), return_loss=True)
    assert out.image_embeds.shape == (2, 32) and torch.isfinite(out.loss)


def test_lastvit_clip_config_checks_the_siglip_options_in_one_line():
    vision = dict(TINY, intermediate_size=64, pooling="map", use_cls_token=False)
    text = dict(hidden_size=16, num_attention_heads=2, projection_size=32, vocab_size=50)
    for overrides, message in [
        (dict(text_tower="t5"), "unknown `text_tower` 't5'"),
        (dict(text_tower="siglip", projection_dim=16), r"maps to 32 dimensions, not `projection_dim` \(16\)"),
        (dict(text_tower="siglip", image_projection=False, vision_config={**vision, "hidden_size": 16}), "16 wide"),
    ]:
        kwargs = dict(vision_config=vision, text_config=text, projection_dim=32) | overrides
        with pytest.raises(ValueError, match=message) as error:
            LastViTCLIPConfig(**kwargs)
        assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def route(tmp_path_factory, source, tokenizer):
    """The source saved with its tokenizer, converted with the CLI, then fine-tuned one step with LazyStrike and the
    sigmoid loss; returns the folders and the first step's batch and loss."""
    root = tmp_path_factory.mktemp("siglip")
    source.save_pretrained(root / "source")
    tokenizer.save_pretrained(root / "source")
    transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(root / "source")
    folder = root / "converted"
    assert (
        convert_main(["--from", "hf", "--input", str(root / "source"), "--with-text-tower", "--output", str(folder)])
        == 0
    )

    record, forward = {}, contrastive.ContrastiveEmbedder.forward

    def recording(self, pixel_values, input_ids, attention_mask=None):
        if not record:
            record.update(
                pixel_values=pixel_values.clone(), input_ids=input_ids.clone(), attention_mask=attention_mask
            )
            record["state"] = {k: v.detach().clone() for k, v in self.clip.state_dict().items()}
        return forward(self, pixel_values, input_ids, attention_mask)

    contrastive.ContrastiveEmbedder.forward = recording
    try:
        args = CLIPTrainingArguments(
            output_dir=root / "fine-tuned",
            model_name_or_path=str(folder),
            pooling="lazystrike",
            top_k=1,
            loss="sigmoid",
            max_text_length=CONTEXT,
            scenes_train=16,
            scenes_test=8,
            batch_size=8,
            epochs=0.5,
            progress=False,
        )
        results = train_clip(args)
    finally:
        contrastive.ContrastiveEmbedder.forward = forward
    state = json.loads((root / "fine-tuned/checkpoints/last/trainer_state.json").read_text())
    return root, folder, results, record, state["losses"][0]


def test_cli_writes_a_lastvit_clip_folder_with_the_tokenizer_and_a_card_of_the_measured_parity(route):
    _, folder, _, _, _ = route
    assert {"model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json", "README.md"} <= {
        p.name for p in folder.iterdir()
    }
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "lastvit-clip" and config["text_tower"] == "siglip"
    card = (folder / "README.md").read_text()
    assert "multi-head attention-pooling (MAP) head" in card and "this folder's is `pooling='map'`" in card
    parity = [line for line in card.splitlines() if "vs the transformers source" in line]
    assert len(parity) == 3 and all(float(line.split("|")[-2]) <= ATOL for line in parity), parity


def test_first_fine_tuning_step_loss_is_the_converted_models_sigmoid_loss_with_lazystrike(route):
    _, folder, results, record, first_loss = route
    assert results["step"] == 1
    config = LastViTCLIPConfig.from_pretrained(folder)
    config.vision_config.pooling, config.vision_config.lazystrike_top_k = "lazystrike", 1
    converted = LastViTCLIPModel.from_pretrained(folder, config=config).train()
    for key, value in converted.state_dict().items():  # the run started from the converted model, unchanged
        torch.testing.assert_close(record["state"][key], value, rtol=0, atol=0)
    with torch.no_grad():
        out = converted(
            input_ids=record["input_ids"],
            pixel_values=record["pixel_values"],
            attention_mask=record["attention_mask"],
            return_loss=True,
        )
    assert abs(first_loss - out.loss.item()) <= 1e-5 * max(1.0, abs(first_loss)), (first_loss, out.loss.item())


def test_converted_and_fine_tuned_folders_load_with_automodel_in_a_fresh_process_without_the_package(
    route, source, tmp_path
):
    root, folder, _, _, _ = route
    x, ids = pixels((48, 40), seed=11), full_length_ids(seed=12)
    with torch.no_grad():
        expected = source(input_ids=ids, pixel_values=x, interpolate_pos_encoding=True)
    save_file(
        {"x": x, "ids": ids, "image": expected.image_embeds, "text": expected.text_embeds},
        str(tmp_path / "case.safetensors"),
    )
    run_isolated(
        tmp_path,
        """
        from safetensors.torch import load_file
        from transformers import AutoModel

        case = load_file(ARGS["case"])
        model = AutoModel.from_pretrained(ARGS["converted"], trust_remote_code=True).eval()
        check_remote(model)
        with torch.no_grad():
            out = model(input_ids=case["ids"], pixel_values=case["x"])
        for name, key in (("image_embeds", "image"), ("text_embeds", "text")):
            diff = (getattr(out, name) - case[key]).abs().max().item()
            if diff > 1e-5:
                print(f"MISMATCH {name}: {diff}")
                sys.exit(3)
        tuned = AutoModel.from_pretrained(ARGS["tuned"], trust_remote_code=True).eval()
        check_remote(tuned)
        assert tuned.config.vision_config.pooling == "lazystrike" and tuned.config.text_tower == "siglip"
        with torch.no_grad():
            assert torch.isfinite(tuned(input_ids=case["ids"], pixel_values=case["x"][:, :, :32, :32]).logits_per_image).all()
        """,
        case=tmp_path / "case.safetensors",
        converted=folder,
        tuned=root / "fine-tuned",
    )


def test_with_text_tower_refuses_other_transformers_models(tmp_path):
    source = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**TINY, intermediate_size=64))
    with pytest.raises(ConversionError, match="converts SiglipModel; this is a SiglipVisionModel"):
        convert_siglip_model(source, ConversionOptions(text_tower=True), None, train_word_tokenizer(CAPTIONS))
