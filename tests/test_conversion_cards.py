"""The model cards of the authors' released checkpoints: committed cards are the generator's output,
quote the paper without measuring anything, and describe the config their `lastvit-convert` command
produces."""

import pytest
from huggingface_hub import EvalResult

from lastvit.cards.model_card import RELEASED_CHECKPOINTS, released_model_card, render_model_card
from lastvit.conversion import (
    ConversionOptions,
    convert_dino_state_dict,
    convert_openclip_state_dict,
    convert_torchvision_state_dict,
)
from modeling_lastvit import LastViTForImageClassification
from training_scripts.convert import build_parser

from .conversion_helpers import REPO_ROOT, clip_reference, dino_reference, torchvision_reference
from .reference_vits import dino_training_checkpoint


@pytest.mark.parametrize("name", sorted(RELEASED_CHECKPOINTS))
def test_committed_model_cards_are_the_generators_output(name):
    committed = (REPO_ROOT / "model_cards" / name / "README.md").read_text()
    assert committed == released_model_card(name).content, "regenerate with write_released_cards (CONTRIBUTING.md)"


PAPER_NUMBERS = {
    "lastvit-vit-b16-supervised": ("42.7", "55.1"),
    "lastvit-dino-vit-b16": ("44.5", "69.7"),
    "lastvit-clip-vit-b16": ("39.8", "50.1"),
}


@pytest.mark.parametrize("name", sorted(RELEASED_CHECKPOINTS))
def test_released_cards_quote_the_paper_give_the_exact_command_and_measure_nothing(name):
    spec = RELEASED_CHECKPOINTS[name]
    card = released_model_card(name)
    assert card.data.license == "mit" and "model-index" not in card.content
    for number in PAPER_NUMBERS[name]:
        assert f"| {number} |" in card.content
    assert "Reported by the paper (not measured by this package)" in card.content
    assert f"```bash\n{spec.command}\n```" in card.content
    args = build_parser().parse_args(spec.command.split()[1:])  # the command is valid
    assert (args.source, args.input, args.released) == (spec.source, spec.file_name, name)
    assert "author={Shi, Cheng and Yu, Yizhou and Yang, Sibei}" in card.content


@pytest.mark.parametrize("name", sorted(RELEASED_CHECKPOINTS))
def test_released_cards_describe_the_config_their_command_produces(name):
    """Run each card's command flags on a tiny file of the same layout: the family settings the card
    states (norm eps, activation, pooling, K, resize rule) are what the converter produces."""
    spec = RELEASED_CHECKPOINTS[name]
    args = build_parser().parse_args([*spec.command.split()[1:], "--num-heads", "4"])
    options = ConversionOptions(
        pooling=args.pooling,
        top_k=args.top_k,
        top_k_ratio=args.top_k_ratio,
        num_heads=4,
        clip_activation=args.clip_activation,
    )
    state = {
        "torchvision": lambda: torchvision_reference().state_dict(),
        "dino": lambda: dino_training_checkpoint(dino_reference())[args.checkpoint_key],
        "openclip": lambda: clip_reference().state_dict(),
    }[spec.source]()
    convert_fn = {
        "torchvision": convert_torchvision_state_dict,
        "dino": convert_dino_state_dict,
        "openclip": convert_openclip_state_dict,
    }[spec.source]
    model = convert_fn(state, options).model
    config = model.config
    size_dependent = {"num_labels", "projection_dim"}
    for key, value in spec.config.items():
        if key not in size_dependent:
            assert getattr(config, key) == value, key
    assert spec.classifier == isinstance(model, LastViTForImageClassification)


def test_measured_results_and_only_those_become_a_model_index():
    kwargs = {
        "title": "t",
        "summary": "s",
        "details": ["d"],
        "command": "lastvit-convert ...",
        "sections": [],
        "pipeline_tag": "image-feature-extraction",
    }
    assert "model-index" not in render_model_card(**kwargs).content
    result = EvalResult(
        task_type="image-classification",
        dataset_type="imagenet-1k",
        dataset_name="ImageNet-1k",
        metric_type="accuracy",
        metric_value=0.5,
    )
    card = render_model_card(**kwargs, eval_results=[result], model_name="m")
    assert "model-index" in card.content and card.data.eval_results[0].metric_value == 0.5
