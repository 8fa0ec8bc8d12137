"""Image-text (CLIP) training with a LastViT image tower: the loss, the model, bad input, and the
trained folder in the ecosystem (zero-shot pipeline and AutoModel in a fresh process where this
package cannot be imported)."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from lastvit.clip.captions import CaptionError, check_captions, scene_captions, tokenize, train_word_tokenizer
from lastvit.clip.training import CLIPTrainingArguments, train_clip
from lastvit.training.pretraining import PretrainingError
from modeling_lastvit import LastViTCLIPModel, symmetric_contrastive_loss

from .test_saving_and_remote_code import run_isolated
from .tiny import tiny_clip_config

CAPTIONS = ["a photo of a bird on sand.", "a photo of a mammal on pine.", "a vehicle in front of dune."]


def tiny_clip(tokenizer, pooling="lazystrike"):
    return LastViTCLIPModel(tiny_clip_config(tokenizer, pooling)).eval()


def reference_clip_loss(logits: torch.Tensor) -> float:
    """CLIP's loss written out: -log of the matching pair's softmax, by rows and by columns, averaged."""
    n = logits.shape[0]
    rows = [-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(n)]
    cols = [-(logits[i, i] - torch.logsumexp(logits[:, i], 0)) for i in range(n)]
    return float((sum(rows) / n + sum(cols) / n).detach() / 2)


def test_contrastive_loss_is_symmetric_and_equals_the_reference_formula():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(3)) * 4
    loss = symmetric_contrastive_loss(logits)
    assert loss.item() == pytest.approx(reference_clip_loss(logits), abs=1e-5)
    assert symmetric_contrastive_loss(logits.t()).item() == pytest.approx(loss.item(), abs=1e-6)
    assert symmetric_contrastive_loss(torch.eye(4) * 100).item() < 1e-6  # perfect pairs


def test_model_logits_are_scaled_cosines_of_the_projected_global_features():
    tokenizer = train_word_tokenizer(CAPTIONS)
    model = tiny_clip(tokenizer)
    pixels = torch.randn(3, 3, 32, 32)
    text = tokenize(tokenizer, CAPTIONS, 32)
    out = model(**text, pixel_values=pixels, return_loss=True)
    image = model.vision_model(pixels)
    assert torch.equal(model.get_image_features(pixels).pooler_output, image.image_embeds)
    expected = (
        torch.nn.functional.normalize(image.image_embeds, dim=-1)
        @ torch.nn.functional.normalize(model.get_text_features(**text).pooler_output, dim=-1).t()
        * model.logit_scale.exp()
    )
    torch.testing.assert_close(out.logits_per_image, expected)
    assert out.loss.item() == pytest.approx(reference_clip_loss(out.logits_per_image), abs=1e-5)
    assert model.get_patch_features(pixels).shape == (3, 16, 16)


def test_tokenizer_ends_every_caption_with_eos_which_clip_pools():
    tokenizer = train_word_tokenizer(CAPTIONS)
    ids = tokenize(tokenizer, CAPTIONS, 32)
    assert tokenizer.eos_token_id == 3  # not 2, which would switch CLIP's text pooling to its legacy arg-max rule
    for row, mask in zip(ids["input_ids"], ids["attention_mask"]):
        assert row[mask.bool()][-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids["input_ids"]


def test_scene_captions_name_the_class_and_the_background_reproducibly():
    captions = scene_captions([0, 2], ["gimp/Wood/pine.pat", "mate/Dune.jpg"], ["mammal", "bird", "small_animal"], 0)
    assert "mammal" in captions[0] and "pine" in captions[0]
    assert "small animal" in captions[1] and "dune" in captions[1]
    assert captions == scene_captions(
        [0, 2], ["gimp/Wood/pine.pat", "mate/Dune.jpg"], ["mammal", "bird", "small_animal"], 0
    )


def test_a_background_rate_below_one_names_the_background_in_that_share_of_captions_only():
    labels, backgrounds = [0] * 2000, ["mate/Dune.jpg"] * 2000
    always = scene_captions(labels, backgrounds, ["bird"], seed=3)
    assert scene_captions(labels, backgrounds, ["bird"], seed=3, background_rate=1.0) == always
    assert all("dune" in caption for caption in always)
    assert not any("dune" in c for c in scene_captions(labels, backgrounds, ["bird"], seed=3, background_rate=0.0))
    some = scene_captions(labels, backgrounds, ["bird"], seed=3, background_rate=0.3)
    assert all("bird" in caption for caption in some)
    assert 0.25 < sum("dune" in caption for caption in some) / len(some) < 0.35
    with pytest.raises(CaptionError, match="background_rate"):
        scene_captions(labels, backgrounds, ["bird"], seed=3, background_rate=1.5)


def test_mismatched_batch_of_captions_raises_a_clear_error():
    tokenizer = train_word_tokenizer(CAPTIONS)
    model = tiny_clip(tokenizer)
    with pytest.raises(ValueError, match="one caption per image"):
        model(**tokenize(tokenizer, CAPTIONS[:2], 32), pixel_values=torch.randn(3, 3, 32, 32), return_loss=True)


@pytest.mark.parametrize("caption", ["", "   ", None])
def test_empty_caption_raises_a_clear_error(caption):
    with pytest.raises(CaptionError, match="caption 1 is .*non-empty text"):
        check_captions(["a bird.", caption], "the training split")


def _image_text_folder(tmp_path, columns):
    images = [Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(4)]
    split = datasets.Dataset.from_dict({"image": images, **columns})
    folder = tmp_path / "pairs"
    datasets.DatasetDict(train=split, test=split).save_to_disk(folder)
    return str(folder)


def test_missing_text_column_names_the_columns_there_are(tmp_path):
    data = _image_text_folder(tmp_path, {"caption": ["a", "b", "c", "d"]})
    with pytest.raises(PretrainingError, match=r"no column 'text'.*\['image', 'caption'\].*--text-column"):
        train_clip(CLIPTrainingArguments(output_dir=tmp_path / "run", dataset=data, image_size=32, progress=False))


def test_empty_caption_in_the_data_stops_training_before_it_starts(tmp_path):
    data = _image_text_folder(tmp_path, {"text": ["a bird.", "", "a dog.", "a cat."]})
    with pytest.raises(CaptionError, match="training split: caption 1"):
        train_clip(CLIPTrainingArguments(output_dir=tmp_path / "run", dataset=data, image_size=32, progress=False))


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "run"
    results = train_clip(
        CLIPTrainingArguments(
            output_dir=folder,
            scenes_train=32,
            scenes_test=16,
            image_size=32,
            epochs=1,
            batch_size=16,
            progress=False,
        )
    )
    return folder, results


def test_training_writes_a_complete_folder_with_measured_zero_shot_results(trained_folder):
    folder, results = trained_folder
    assert results["step"] == 2
    assert 0 <= results["zero_shot_top1"] <= 1
    assert 0 <= results["segmentation_ignore_background"]["miou"] <= 1
    assert json.loads((folder / "eval_results.json").read_text()) == results
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "modeling_lastvit_clip.py",
        "configuration_lastvit_clip.py",
        "modeling_lastvit.py",
        "tokenizer.json",
        "preprocessor_config.json",
        "README.md",
        "image_tower",
        "checkpoints",
    } <= names
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: zero-shot-image-classification" in card and "lastvit-train-clip" in card


def test_trained_folder_runs_the_zero_shot_pipeline_in_a_fresh_process_without_the_package(trained_folder, tmp_path):
    folder, _ = trained_folder
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    image.save(tmp_path / "image.png")
    labels = ["bird", "mammal", "vehicle"]
    model = LastViTCLIPModel.from_pretrained(folder).eval()
    from transformers import AutoImageProcessor, AutoTokenizer

    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = model(
            **tokenizer([f"a photo of a {label}." for label in labels], padding=True, return_tensors="pt"),
            pixel_values=processor(image, return_tensors="pt").pixel_values,
        ).logits_per_image
    torch.save({"probs": logits.softmax(-1)[0]}, tmp_path / "expected.pt")
    run_isolated(
        tmp_path,
        """
        from PIL import Image
        from transformers import AutoModel, pipeline

        folder = ARGS["folder"]
        classify = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
        check_remote(classify.model)
        predictions = classify(Image.open(ARGS["image"]), candidate_labels=["bird", "mammal", "vehicle"],
                               hypothesis_template="a photo of a {}.")
        scores = {p["label"]: p["score"] for p in predictions}
        expected = torch.load(ARGS["expected"], weights_only=True)["probs"]
        check_close("scores", torch.tensor([scores[l] for l in ["bird", "mammal", "vehicle"]]), expected)

        clip = AutoModel.from_pretrained(folder, trust_remote_code=True)
        check_remote(clip)
        tower = AutoModel.from_pretrained(folder + "/image_tower", trust_remote_code=True)
        check_remote(tower)
        pixels = torch.randn(1, 3, 32, 32)
        check_close("image tower", tower(pixels).image_embeds, clip.get_image_features(pixel_values=pixels).pooler_output)
        """,
        folder=folder,
        image=tmp_path / "image.png",
        expected=tmp_path / "expected.pt",
    )
