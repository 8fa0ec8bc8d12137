"""A LoRA adapter trained on a base with another number of classes reloads as its card says: from
`lastvit.training.peft.load_adapter`, from the card's own snippet, and in `lastvit-publish`'s fresh
process without this package."""

import json
import re

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lastvit import hub
from lastvit.training import TrainConfig, train
from lastvit.training.peft import PeftArguments, load_adapter, peft_config
from training_scripts import finetune_peft


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, PartialState

    yield
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def colour_split(n: int, seed: int, names: list[str]) -> datasets.Dataset:
    """Noise images whose dominant channel is the class."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        array = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
        array[..., i % len(names)] = 220
        images.append(Image.fromarray(array))
        labels.append(i % len(names))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


@pytest.fixture(scope="module")
def three_class_base(tmp_path_factory):
    """A base with 3 classes, trained from Python on an in-memory DatasetDict."""
    from accelerate.state import AcceleratorState, PartialState

    names = ["r", "g", "b"]
    out = tmp_path_factory.mktemp("base") / "base"
    data = datasets.DatasetDict(train=colour_split(24, 0, names), test=colour_split(6, 1, names))
    config = TrainConfig(
        dataset=data,
        preset="micro",
        image_size=32,
        patch_size=8,
        batch_size=8,
        epochs=1,
        top_k_ratio=0.25,
        output_dir=out,
        progress=False,
    )
    results = train(config)
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    assert results["step"] == 3 and results["eval_examples"] == 6
    return out


def test_an_adapter_on_a_base_with_other_classes_reloads_from_its_folder_with_equal_logits(three_class_base, tmp_path):
    from peft import get_peft_model
    from transformers import AutoModelForImageClassification

    two = tmp_path / "two-classes"
    datasets.DatasetDict(
        train=colour_split(16, 2, ["red", "green"]), test=colour_split(6, 3, ["red", "green"])
    ).save_to_disk(str(two))
    out = tmp_path / "lora"
    assert (
        finetune_peft.main(
            [
                "--model-name-or-path",
                str(three_class_base),
                "--dataset",
                str(two),
                "--batch-size",
                "8",
                "--epochs",
                "1",
                "--no-progress",
                "--learning-rate",
                "1e-2",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    labels = json.loads((out / "labels.json").read_text())
    assert labels == {"num_labels": 2, "id2label": {"0": "red", "1": "green"}, "label2id": {"red": 0, "green": 1}}

    # the model as trained: the PEFT wrapper with the state Accelerate saved at the last step
    base = AutoModelForImageClassification.from_pretrained(
        three_class_base, num_labels=2, ignore_mismatched_sizes=True, trust_remote_code=True
    )
    trained = get_peft_model(base, peft_config(PeftArguments())).eval()
    trained.load_state_dict(load_file(str(out / "checkpoints/last/model.safetensors")))
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = trained(pixel_values=pixel_values).logits
        assert expected.shape == (2, 2)
        reloaded = load_adapter(out)
        torch.testing.assert_close(reloaded(pixel_values=pixel_values).logits, expected)
        assert reloaded.config.id2label == {0: "red", 1: "green"}

        # the card's snippet, run as written (with the folder filled in)
        card = (out / "README.md").read_text()
        snippet = re.search(r"## How to use\n\n```python\n(.*?)```", card, re.DOTALL).group(1)
        namespace = {}
        exec(snippet.replace("<this folder or repo>", str(out)), namespace)  # noqa: S102 (the card is ours)
        torch.testing.assert_close(namespace["model"](pixel_values=pixel_values).logits, expected)

    # the card says what it was fine-tuned from, and lastvit-publish accepts the folder
    assert f"fine-tuned from `{three_class_base}`" in card and "lastvit-finetune-peft" in card
    assert "trained from scratch" not in card
    report = hub.validate_folder(out)
    assert report["base"] == str(three_class_base) and report["output_shape"] == [1, 2]


def test_the_card_of_a_run_from_scratch_says_so_and_gives_the_command(three_class_base):
    card = (three_class_base / "README.md").read_text()
    assert "trained from scratch with `lastvit-train` on `<in-memory DatasetDict>`" in card
    assert "lastvit-train --dataset <in-memory DatasetDict> --preset micro --image-size 32 --patch-size 8" in card
    assert "Shi, Cheng and Yu, Yizhou and Yang, Sibei" in card  # the one citation every card carries


def test_finetune_peft_needs_a_base(capsys):
    with pytest.raises(SystemExit):
        finetune_peft.main(["--output-dir", "x"])
    assert "--model-name-or-path" in capsys.readouterr().err
