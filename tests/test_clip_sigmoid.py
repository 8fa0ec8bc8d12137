"""SigLIP's pairwise sigmoid loss in LastViT-CLIP training (`lastvit-train-clip --loss sigmoid`): the loss against
a hand computation and against transformers' `SiglipModel`, the model's learned logit bias, and a run with it."""

import math

import pytest
import torch
import transformers
from safetensors.torch import load_file

from lastvit.clip.captions import tokenize, train_word_tokenizer
from lastvit.clip.contrastive import ContrastiveEmbedder, sigmoid_loss
from lastvit.clip.training import CLIPTrainingArguments, train_clip
from lastvit.training.pretraining import PretrainingError
from modeling_lastvit.modeling_lastvit_clip import LastViTCLIPModel, pairwise_sigmoid_loss

from .tiny import tiny_clip_config

CAPTIONS = ["a photo of a bird on sand.", "a photo of a mammal on pine.", "a vehicle in front of dune."]


def hand_sigmoid_loss(image, text, scale, bias) -> float:
    """-(1/B) sum_ij log(1 / (1 + exp(-z_ij (scale * <image_i, text_j> + bias)))), z = +1 on the diagonal, else -1."""
    total = 0.0
    for i in range(image.shape[0]):
        for j in range(text.shape[0]):
            logit = scale * float(image[i] @ text[j]) + bias
            z = 1.0 if i == j else -1.0
            total += math.log(1.0 + math.exp(-z * logit))
    return total / image.shape[0]


def unit(rows, dim, seed):
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_sigmoid_loss_equals_the_hand_computation():
    image, text = unit(4, 8, 0), unit(4, 8, 1)
    for scale, bias in ((10.0, -10.0), (3.0, 0.5)):
        loss = sigmoid_loss(image, text, torch.tensor(scale), torch.tensor(bias))
        assert loss.item() == pytest.approx(hand_sigmoid_loss(image, text, scale, bias), abs=1e-5)
        logits = scale * image @ text.t() + bias
        assert pairwise_sigmoid_loss(logits).item() == pytest.approx(loss.item(), abs=1e-6)


def test_sigmoid_loss_equals_transformers_siglip_model_loss():
    text = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    text.update(vocab_size=50, max_position_embeddings=8, pad_token_id=1, bos_token_id=0, eos_token_id=1)
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    torch.manual_seed(0)
    model = transformers.SiglipModel(transformers.SiglipConfig(vision_config=vision, text_config=text)).eval()
    with torch.no_grad():
        model.logit_bias.fill_(-2.0)
        out = model(input_ids=torch.randint(2, 50, (3, 8)), pixel_values=torch.randn(3, 3, 32, 32), return_loss=True)
        ours = sigmoid_loss(out.image_embeds, out.text_embeds, model.logit_scale.exp(), model.logit_bias)
    assert ours.item() == pytest.approx(out.loss.item(), abs=1e-5)


def test_a_model_with_a_logit_bias_adds_it_and_returns_the_sigmoid_loss():
    tokenizer = train_word_tokenizer(CAPTIONS)
    config = tiny_clip_config(tokenizer)
    config.logit_bias_init_value = -10.0
    model = LastViTCLIPModel(config).eval()
    assert model.logit_bias.item() == -10.0
    pixels, text = torch.randn(3, 3, 32, 32), tokenize(tokenizer, CAPTIONS, 32)
    with torch.no_grad():
        out = model(**text, pixel_values=pixels, return_loss=True)
        embeds = ContrastiveEmbedder(model)(pixels, text["input_ids"], text["attention_mask"])
    assert len(embeds) == 4  # image, text, scale, bias: the arguments of sigmoid_loss
    expected = model.logit_scale.exp() * out.image_embeds @ out.text_embeds.t() - 10.0
    torch.testing.assert_close(out.logits_per_image, expected)
    assert out.loss.item() == pytest.approx(sigmoid_loss(*embeds).item(), abs=1e-5)
    assert out.loss.item() == pytest.approx(
        hand_sigmoid_loss(out.image_embeds, out.text_embeds, model.logit_scale.exp().item(), -10.0), abs=1e-4
    )


def test_lastvit_train_clip_trains_with_the_sigmoid_loss_and_keeps_the_bias(tmp_path):
    folder = tmp_path / "run"
    common = dict(scenes_train=16, scenes_test=8, image_size=32, batch_size=8, progress=False)
    results = train_clip(CLIPTrainingArguments(output_dir=folder, epochs=1, loss="sigmoid", **common))
    assert results["step"] == 2
    weights = load_file(str(folder / "model.safetensors"))
    assert "logit_bias" in weights and weights["logit_bias"].item() != -10.0  # learned
    with pytest.raises(PretrainingError, match="--loss sigmoid"):
        train_clip(
            CLIPTrainingArguments(
                output_dir=tmp_path / "again", model_name_or_path=str(folder), loss="contrastive", epochs=1, **common
            )
        )
