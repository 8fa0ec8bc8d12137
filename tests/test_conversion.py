"""`lastvit-convert`: every ViT-family source converts with exact parity, loads safely, and writes a
complete folder that reloads through remote code in a fresh process.

transformers sources are compared with transformers' own forward. torchvision, DINO and OpenAI CLIP /
open_clip layouts are compared with the independent plain-torch forwards in `tests/reference_vits.py`
(the authors' LazyStrike readout included). All models are tiny and randomly initialised; nothing is
downloaded. Tolerance: 1e-5 absolute in fp32.
"""

import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from huggingface_hub import EvalResult, ModelCard
from PIL import Image
from safetensors.torch import save_file

from modeling_lastvit import LastViTForImageClassification, LastViTModel
from modeling_lastvit.conversion.checkpoint_loading import CheckpointLoadError, load_checkpoint, read_torchscript_tensors
from modeling_lastvit.conversion.convert import (
    ConversionError,
    ConversionOptions,
    build_parser,
    convert,
    convert_dino_state_dict,
    convert_hf_model,
    convert_openclip_state_dict,
    convert_torchvision_state_dict,
    extract_state_dict,
    main,
)
from lastvit.cards.model_card import RELEASED_CHECKPOINTS, released_model_card, render_model_card
from modeling_lastvit.pooling_lastvit import lazystrike_pool

from .reference_vits import ClipStub, DinoViT, TorchvisionViT, authors_lazystrike, dino_training_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-5
NATIVE = (32, 32)
SIZES = [NATIVE, (48, 40), (24, 24)]  # native, upsampled non-square, downsampled
SIZE_IDS = ["native", "48x40", "24x24"]
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
IMAGENET_MEAN, CLIP_MEAN = [0.485, 0.456, 0.406], [0.48145466, 0.4578275, 0.40821073]


def pixels(size=NATIVE, batch=2, seed=3):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs diff {diff:.2e} > {ATOL}"


def perturbed(model):
    """Random tiny models start with LayerNorm = identity, zero biases and tokens: move every parameter."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return model.eval()


# --------------------------------------------------------------------------------------------
# transformers sources
# --------------------------------------------------------------------------------------------

_CLIP_TEXT = dict(
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    vocab_size=50,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)
HF_SOURCES = {
    "ViTModel": lambda: transformers.ViTModel(transformers.ViTConfig(**TINY, intermediate_size=64)),
    "ViTForImageClassification": lambda: transformers.ViTForImageClassification(
        transformers.ViTConfig(**TINY, intermediate_size=64, num_labels=3)
    ),
    "DeiTModel": lambda: transformers.DeiTModel(transformers.DeiTConfig(**TINY, intermediate_size=64)),
    "DeiTForImageClassification": lambda: transformers.DeiTForImageClassification(
        transformers.DeiTConfig(**TINY, intermediate_size=64, num_labels=3)
    ),
    "DeiTForImageClassificationWithTeacher": lambda: transformers.DeiTForImageClassificationWithTeacher(
        transformers.DeiTConfig(**TINY, intermediate_size=64, num_labels=3)
    ),
    "Dinov2Model": lambda: transformers.Dinov2Model(transformers.Dinov2Config(**TINY, mlp_ratio=2)),
    "Dinov2Model-swiglu": lambda: transformers.Dinov2Model(
        transformers.Dinov2Config(**TINY, mlp_ratio=4, use_swiglu_ffn=True)
    ),
    "Dinov2ForImageClassification": lambda: transformers.Dinov2ForImageClassification(
        transformers.Dinov2Config(**TINY, mlp_ratio=2, num_labels=3)
    ),
    "Dinov2WithRegistersModel": lambda: transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(**TINY, mlp_ratio=2, num_register_tokens=2)
    ),
    "Dinov2WithRegistersForImageClassification": lambda: transformers.Dinov2WithRegistersForImageClassification(
        transformers.Dinov2WithRegistersConfig(**TINY, mlp_ratio=2, num_register_tokens=2, num_labels=3)
    ),
    "CLIPVisionModel": lambda: transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(**TINY, intermediate_size=64)
    ),
    "CLIPVisionModelWithProjection": lambda: transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**TINY, intermediate_size=64, projection_dim=16)
    ),
    "CLIPModel": lambda: transformers.CLIPModel(
        transformers.CLIPConfig(
            vision_config=dict(**TINY, intermediate_size=64), text_config=_CLIP_TEXT, projection_dim=16
        )
    ),
}


def hf_source(name):
    torch.manual_seed(0)
    return perturbed(HF_SOURCES[name]())


def hf_output_pairs(name, source, converted, x):
    """(what, source tensor, converted tensor) for every output the source defines."""
    interpolate = {"interpolate_pos_encoding": True} if tuple(x.shape[-2:]) != NATIVE and "Dinov2" not in name else {}
    base = converted.lastvit if isinstance(converted, LastViTForImageClassification) else converted
    with torch.no_grad():
        ours = base(x, output_hidden_states=True)
        if name == "CLIPModel":
            theirs = source.get_image_features(pixel_values=x, output_hidden_states=True, **interpolate)
        else:
            theirs = source(pixel_values=x, output_hidden_states=True, **interpolate)
        pairs = [
            (f"hidden_states[{i}]", a, b) for i, (a, b) in enumerate(zip(theirs.hidden_states, ours.hidden_states))
        ]
        if "ForImageClassification" in name:
            return pairs + [("logits", theirs.logits, converted(x).logits)]
        if name.startswith("CLIP"):  # CLIP's last_hidden_state precedes post_layernorm
            pairs.append(("last_hidden_state vs hidden_states[-1]", theirs.last_hidden_state, ours.hidden_states[-1]))
            if name == "CLIPVisionModel":
                return pairs + [("pooler_output", theirs.pooler_output, ours.pooler_output)]
            embeds = theirs.image_embeds if name == "CLIPVisionModelWithProjection" else theirs.pooler_output
            return pairs + [("image_embeds", embeds, ours.image_embeds)]
        return pairs + [
            ("last_hidden_state", theirs.last_hidden_state, ours.last_hidden_state),
            ("pooler_output", theirs.pooler_output, ours.pooler_output),
        ]


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("name", list(HF_SOURCES))
def test_transformers_models_convert_with_identical_outputs(name, size):
    source = hf_source(name)
    converted = convert_hf_model(source, ConversionOptions()).model
    assert isinstance(converted, LastViTForImageClassification) == ("ForImageClassification" in name)
    for what, expected, actual in hf_output_pairs(name, source, converted, pixels(size)):
        assert_close(actual, expected, f"{name} {what}")


def test_deit_distillation_token_is_hosted_as_the_first_register():
    source = hf_source("DeiTModel")
    converted = convert_hf_model(source, ConversionOptions()).model
    emb = source.embeddings
    assert converted.config.num_register_tokens == 1
    torch.testing.assert_close(
        converted.embeddings.register_tokens, emb.distillation_token + emb.position_embeddings[:, 1:2]
    )
    torch.testing.assert_close(converted.embeddings.position_embeddings[:, 1:], emb.position_embeddings[:, 2:])


def test_transformers_encoder_read_out_with_lazystrike_skips_cls_and_registers():
    source = hf_source("Dinov2WithRegistersModel")
    converted = convert_hf_model(source, ConversionOptions(pooling="lazystrike", top_k=2)).model
    x = pixels()
    with torch.no_grad():
        tokens = source(pixel_values=x).last_hidden_state
        out = converted(x)
    assert_close(out.last_hidden_state, tokens, "last_hidden_state")
    assert_close(out.pooler_output, lazystrike_pool(tokens[:, 1 + 2 :], top_k=2).pooled, "LazyStrike pooled")


def test_head_is_kept_dropped_or_replaced_by_num_labels():
    source = hf_source("ViTForImageClassification")
    kept = convert_hf_model(source, ConversionOptions(num_labels=3))
    assert isinstance(kept.model, LastViTForImageClassification)
    torch.testing.assert_close(kept.model.classifier.weight, source.classifier.weight)
    dropped = convert_hf_model(source, ConversionOptions(num_labels=0))
    assert type(dropped.model) is LastViTModel and any("dropped" in note for note in dropped.notes)
    replaced = convert_hf_model(source, ConversionOptions(num_labels=7))
    assert replaced.model.classifier.out_features == 7
    assert any("newly initialised" in note for note in replaced.notes)
    fresh = convert_hf_model(hf_source("Dinov2ForImageClassification"), ConversionOptions(num_labels=5))
    assert fresh.model.config.classifier_input == "pooled"  # the DINOv2 [CLS, mean] input belongs to its own head


HF_PROCESSORS = {
    "ViTForImageClassification": lambda: transformers.ViTImageProcessor(size={"height": 32, "width": 32}),
    "DeiTForImageClassificationWithTeacher": lambda: transformers.DeiTImageProcessor(
        size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32}
    ),
    "Dinov2WithRegistersForImageClassification": lambda: transformers.BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=[0.229, 0.224, 0.225],
    ),
    "CLIPVisionModelWithProjection": lambda: transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ),
}


def random_image(height=45, width=61, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", list(HF_PROCESSORS))
def test_transformers_preprocessing_is_copied_exactly(name):
    source_processor = HF_PROCESSORS[name]()
    result = convert_hf_model(hf_source(name), ConversionOptions(), source_processor)
    image = random_image()
    expected = source_processor(image, return_tensors="pt").pixel_values
    torch.testing.assert_close(
        result.image_processor(image, return_tensors="pt").pixel_values, expected, rtol=0, atol=1e-6
    )


def test_transformers_source_without_a_processor_gets_the_family_default_and_a_note():
    result = convert_hf_model(hf_source("CLIPVisionModel"), ConversionOptions())
    assert list(result.image_processor.image_mean) == CLIP_MEAN
    assert any("no image processor" in note for note in result.notes)


def test_unsupported_transformers_architecture_is_a_clear_error():
    model = transformers.ViTForMaskedImageModeling(transformers.ViTConfig(**TINY, intermediate_size=64))
    with pytest.raises(ConversionError, match="the hf converter takes"):
        convert_hf_model(model, ConversionOptions())


# --------------------------------------------------------------------------------------------
# torchvision (and the authors' supervised LaSt-ViT forward)
# --------------------------------------------------------------------------------------------


def torchvision_reference(**kwargs):
    torch.manual_seed(1)
    return perturbed(TorchvisionViT(**kwargs))


def detectron2_file(path, model):
    """How detectron2 saves the authors' model: {'model': ClassificationNet state dict, ...}."""
    torch.save({"model": {f"model.{k}": v for k, v in model.state_dict().items()}, "iteration": 190000}, path)
    return path


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_torchvision_vit_converts_with_identical_logits(size):
    reference = torchvision_reference()
    converted = convert_torchvision_state_dict(reference.state_dict(), ConversionOptions(num_heads=4)).model
    x = pixels(size)
    with torch.no_grad():
        assert_close(converted(x).logits, reference(x), "logits")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_authors_supervised_lastvit_forward_is_reproduced_with_lazystrike_k1(tmp_path, size):
    reference = torchvision_reference()
    path = detectron2_file(tmp_path / "ViT_190k.pth", reference)
    result, parity = convert("torchvision", str(path), ConversionOptions(pooling="lazystrike", top_k=1, num_heads=4))
    assert parity is None
    config = result.model.config
    assert (config.pooling, config.lazystrike_top_k, config.lazystrike_score, config.lazystrike_sigma) == (
        "lazystrike",
        1,
        "repo",
        None,
    )
    x = pixels(size)
    with torch.no_grad():
        out = result.model(x)
        assert_close(out.logits, reference(x, lazystrike_k=1), "LaSt-ViT logits")
        assert_close(out.pooler_output, authors_lazystrike(result.model.lastvit(x).last_hidden_state[:, 1:]), "pooled")


def test_torchvision_pre_logits_become_a_dense_tanh_pooler():
    reference = torchvision_reference(representation_size=24)
    converted = convert_torchvision_state_dict(reference.state_dict(), ConversionOptions(num_heads=4)).model
    assert (converted.config.pooler_dense_act, converted.config.pooled_feature_size) == ("tanh", 24)
    x = pixels()
    with torch.no_grad():
        assert_close(converted(x).logits, reference(x), "logits")


def test_torchvision_legacy_mlp_names_are_accepted():
    reference = torchvision_reference()
    renamed = {
        k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
        for k, v in reference.state_dict().items()
    }
    converted = convert_torchvision_state_dict(renamed, ConversionOptions(num_heads=4)).model
    with torch.no_grad():
        assert_close(converted(pixels()).logits, reference(pixels()), "logits")


# --------------------------------------------------------------------------------------------
# facebookresearch/dino
# --------------------------------------------------------------------------------------------


def dino_reference():
    torch.manual_seed(2)
    return perturbed(DinoViT())


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
    result, _ = convert("dino", str(path), ConversionOptions(pooling="lazystrike", top_k=1, num_heads=4))
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
    result, _ = convert("dino", str(path), ConversionOptions(num_heads=4), checkpoint_key="student")
    torch.testing.assert_close(result.model.embeddings.cls_token, checkpoint["student"]["module.backbone.cls_token"])


# --------------------------------------------------------------------------------------------
# OpenAI CLIP / open_clip, pickled and TorchScript
# --------------------------------------------------------------------------------------------


def clip_reference(act=None):
    torch.manual_seed(4)
    return perturbed(ClipStub(act=act) if act else ClipStub())


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_openai_clip_visual_tower_converts_with_identical_embeddings(tmp_path, size):
    reference = clip_reference()
    path = tmp_path / "epoch_32.pt"  # open_clip's training-checkpoint layout
    torch.save(
        {"epoch": 32, "name": "run", "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path
    )
    result, _ = convert("openclip", str(path), ConversionOptions(num_heads=4))
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


def save_torchscript_clip(path, reference):
    """An OpenAI-style TorchScript archive (fp16 weights, like OpenAI's released `.pt` files)."""
    traced = torch.jit.trace(reference, pixels(batch=1))
    traced.half()
    torch.jit.save(traced, str(path))
    return path


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
        result, _ = convert(
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


# --------------------------------------------------------------------------------------------
# Safe loading and readable errors
# --------------------------------------------------------------------------------------------


class ArbitraryObject:
    """A class a weights-only load refuses (stands for anything a pickle could construct)."""


def test_pickled_objects_are_refused_with_the_risk_explained_unless_trusted(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": torchvision_reference().state_dict(), "extra": ArbitraryObject()}, path)
    with pytest.raises(CheckpointLoadError, match="--trust-pickle") as error:
        load_checkpoint(path)
    assert "arbitrary code" in str(error.value)
    assert isinstance(load_checkpoint(path, trust_pickle=True)["extra"], ArbitraryObject)


class _CallsAFunction:
    def __reduce__(self):
        return (os.getcwd, ())


def test_torchscript_reader_refuses_any_global_but_tensors(tmp_path):
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"x": _CallsAFunction()}, protocol=2))
        archive.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("evil/code/__torch__.py", "")
    with pytest.raises(CheckpointLoadError, match="refusing to load the global"):
        load_checkpoint(path)


def test_a_checkpoint_of_another_layout_is_a_readable_error():
    dino = dino_reference().state_dict()
    with pytest.raises(ConversionError, match="no 'conv_proj.weight'.*--from torchvision"):
        convert_torchvision_state_dict(dino, ConversionOptions(num_heads=4))


def test_missing_and_unexpected_keys_are_listed():
    state = torchvision_reference().state_dict()
    state.pop("encoder.layers.encoder_layer_1.ln_2.bias")
    state["encoder.layers.encoder_layer_0.extra_gate"] = torch.zeros(3)
    with pytest.raises(ConversionError) as error:
        convert_torchvision_state_dict(state, ConversionOptions(num_heads=4))
    message = str(error.value)
    assert "missing keys (1): [encoder.layers.encoder_layer_1.ln_2.bias]" in message
    assert "unexpected keys (1): [encoder.layers.encoder_layer_0.extra_gate]" in message


def test_a_non_standard_width_needs_num_heads():
    with pytest.raises(ConversionError, match="pass --num-heads"):
        convert_torchvision_state_dict(torchvision_reference().state_dict(), ConversionOptions())


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(top_k=3), "--top-k only apply with --pooling lazystrike"),
        (dict(pooling="lazystrike", top_k=2, top_k_ratio=0.5), "not both"),
        (dict(num_labels=-1), "--num-labels must be >= 0"),
    ],
)
def test_inconsistent_options_are_refused(options, message):
    with pytest.raises(ConversionError, match=message):
        ConversionOptions(**options).validate()


def test_a_wrong_checkpoint_key_lists_the_available_ones():
    with pytest.raises(ConversionError, match=r"--checkpoint-key 'ema' is not in the checkpoint.*teacher"):
        extract_state_dict({"teacher": {"a": torch.ones(1)}, "epoch": 3}, "ema")


# --------------------------------------------------------------------------------------------
# The command line: complete folders for every source kind, reloaded in a fresh process
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted_folders(tmp_path_factory):
    """Converts one source of each kind with the CLI; records what a fresh process must reproduce."""
    root = tmp_path_factory.mktemp("convert")
    cases = {}

    def add(name, argv, auto_class, output, expected_fn, sizes=(NATIVE, (48, 40))):
        folder = root / name
        assert main([*argv, "--output", str(folder)]) == 0
        inputs = {f"x_{h}x{w}": pixels((h, w), seed=11) for h, w in sizes}
        with torch.no_grad():
            expected = {f"y_{key[2:]}": expected_fn(x) for key, x in inputs.items()}
        save_file({**inputs, **expected}, str(root / f"{name}.safetensors"))
        cases[name] = dict(
            folder=str(folder), auto_class=auto_class, output=output, tensors=str(root / f"{name}.safetensors")
        )

    for name in (
        "ViTForImageClassification",
        "DeiTForImageClassificationWithTeacher",
        "Dinov2WithRegistersForImageClassification",
        "CLIPVisionModelWithProjection",
    ):
        source = hf_source(name)
        source.save_pretrained(root / f"src_{name}")
        HF_PROCESSORS[name]().save_pretrained(root / f"src_{name}")
        interpolate = {} if "Dinov2" in name else {"interpolate_pos_encoding": True}
        field = "image_embeds" if name.startswith("CLIP") else "logits"
        add(
            f"hf_{name}",
            ["--from", "hf", "--input", str(root / f"src_{name}")],
            "AutoModel" if name.startswith("CLIP") else "AutoModelForImageClassification",
            field,
            lambda x, s=source, f=field, kw=interpolate: getattr(s(pixel_values=x, **kw), f),
        )

    tv = torchvision_reference()
    add(
        "torchvision_lastvit",
        [
            "--from",
            "torchvision",
            "--input",
            str(detectron2_file(root / "ViT_190k.pth", tv)),
            "--num-heads",
            "4",
            "--pooling",
            "lazystrike",
            "--top-k",
            "1",
            "--released",
            "lastvit-vit-b16-supervised",
        ],
        "AutoModelForImageClassification",
        "logits",
        lambda x: tv(x, lazystrike_k=1),
    )

    dino = dino_reference()
    torch.save(dino_training_checkpoint(dino), root / "dino0080.pth")
    add(
        "dino_lastvit",
        [
            "--from",
            "dino",
            "--input",
            str(root / "dino0080.pth"),
            "--num-heads",
            "4",
            "--pooling",
            "lazystrike",
            "--top-k",
            "1",
            "--checkpoint-key",
            "teacher",
        ],
        "AutoModel",
        "last_hidden_state",
        dino,
    )

    clip = clip_reference()
    torch.save({"state_dict": clip.state_dict()}, root / "clip.pt")
    add(
        "openclip",
        ["--from", "openclip", "--input", str(root / "clip.pt"), "--num-heads", "4"],
        "AutoModel",
        "image_embeds",
        clip,
    )

    scripted = clip_reference()
    save_torchscript_clip(root / "openai_b_16.pt", scripted)
    scripted.half().float()
    add(
        "torchscript_lastvit",
        [
            "--from",
            "openclip",
            "--input",
            str(root / "openai_b_16.pt"),
            "--num-heads",
            "4",
            "--pooling",
            "lazystrike",
            "--top-k",
            "1",
        ],
        "AutoModel",
        "image_embeds",
        lambda x: scripted.visual(x, lazystrike_k=1),
    )
    return cases


def test_cli_writes_a_complete_folder_for_every_source_kind(converted_folders):
    for name, case in converted_folders.items():
        folder = Path(case["folder"])
        files = {p.name for p in folder.iterdir()}
        assert {
            "model.safetensors",
            "config.json",
            "preprocessor_config.json",
            "README.md",
            "modeling_lastvit.py",
            "configuration_lastvit.py",
            "pooling_lastvit.py",
            "image_processing_lastvit.py",
        } <= files, name
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))], name
        config = json.loads((folder / "config.json").read_text())
        assert {"AutoConfig", "AutoModel", "AutoModelForImageClassification"} <= set(config["auto_map"]), name
        processor = json.loads((folder / "preprocessor_config.json").read_text())
        assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_lastvit.LastViTImageProcessor"
        expected_mean = {
            "torchvision_lastvit": IMAGENET_MEAN,
            "dino_lastvit": IMAGENET_MEAN,
            "openclip": CLIP_MEAN,
            "torchscript_lastvit": CLIP_MEAN,
        }.get(name)
        if expected_mean:
            assert processor["image_mean"] == expected_mean, name
        card = ModelCard.load(folder / "README.md")
        assert card.data.library_name == "transformers" and "custom_code" in card.data.tags
        assert "model-index" not in card.content and "lastvit-convert --from" in card.content
        assert "| round trip (saved folder reloaded vs the converted model) | 0.00e+00 |" in card.content, name
    supervised = ModelCard.load(Path(converted_folders["torchvision_lastvit"]["folder"]) / "README.md")
    assert "42.7" in supervised.content and supervised.data.license == "mit"  # --released writes that card


def test_cli_reports_parity_for_transformers_sources(converted_folders):
    card = (Path(converted_folders["hf_DeiTForImageClassificationWithTeacher"]["folder"]) / "README.md").read_text()
    assert "| logits vs the transformers source |" in card


def test_cli_errors_are_one_clear_line_and_never_clobber_a_folder(tmp_path, capsys, converted_folders):
    occupied = tmp_path / "out"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    source = str(Path(converted_folders["openclip"]["folder"]).parent / "clip.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(["--from", "openclip", "--input", source, "--output", str(occupied), "--num-heads", "4"])
    assert exit_info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (occupied / "keep.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    with pytest.raises(SystemExit):
        main(["--from", "torchvision", "--input", source, "--output", str(tmp_path / "x")])
    assert "no 'conv_proj.weight'" in capsys.readouterr().err


_FRESH_PROCESS = textwrap.dedent(
    """
    import importlib, importlib.util, json, os, sys
    repo = os.path.realpath(sys.argv[1])
    inside = lambda p: (os.path.realpath(os.path.abspath(p or os.curdir)) + os.sep).startswith(repo + os.sep)  # noqa: E731
    sys.path[:] = [p for p in sys.path if not inside(p)]
    def _names(f):
        return " ".join(str(n) for n in (getattr(f, "__name__", ""), getattr(f, "__module__", ""), type(f).__name__))
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in _names(f).lower()]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
    assert importlib.util.find_spec("modeling_lastvit") is None, "the package is importable"
    import torch, transformers
    from safetensors.torch import load_file
    worst = {}
    for name, case in json.loads(sys.argv[2]).items():
        auto_class = getattr(transformers, case["auto_class"])
        model = auto_class.from_pretrained(case["folder"], trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model)
        tensors = load_file(case["tensors"])
        for key in [k for k in tensors if k.startswith("x_")]:
            with torch.no_grad():
                actual = getattr(model(tensors[key]), case["output"])
            expected = tensors["y_" + key[2:]]
            assert actual.shape == expected.shape, (name, key, actual.shape, expected.shape)
            worst[f"{name} {key[2:]}"] = (actual - expected).abs().max().item()
    assert not [m for m in sys.modules if m.split(".")[0] == "modeling_lastvit"], "package imported"
    print("DIFFS " + json.dumps(worst))
    """
)


def test_converted_folders_reproduce_the_sources_in_a_fresh_process_without_the_package(tmp_path, converted_folders):
    env = {
        **os.environ,
        "PYTHONPATH": "",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(REPO_ROOT), json.dumps(converted_folders)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    diffs = json.loads(result.stdout.split("DIFFS ", 1)[1])
    assert len(diffs) == 2 * len(converted_folders)
    too_far = {case: diff for case, diff in diffs.items() if diff > ATOL}
    assert not too_far, too_far


def test_console_script_is_declared_and_documents_every_flag():
    assert 'lastvit-convert = "modeling_lastvit.conversion.convert:main"' in (REPO_ROOT / "pyproject.toml").read_text()
    text = build_parser().format_help()
    for flag in (
        "--from",
        "--input",
        "--output",
        "--pooling",
        "--top-k",
        "--top-k-ratio",
        "--num-labels",
        "--num-heads",
        "--checkpoint-key",
        "--clip-activation",
        "--trust-pickle",
        "--released",
    ):
        assert flag in text
    assert "UNSAFE" in text  # --trust-pickle says what it risks
    installed = [ep for ep in entry_points(group="console_scripts") if ep.name == "lastvit-convert"]
    if installed:  # `pip install -e .` has run
        assert installed[0].load() is main


# --------------------------------------------------------------------------------------------
# Model cards of the released checkpoints
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RELEASED_CHECKPOINTS))
def test_committed_model_cards_are_the_generators_output(name):
    committed = (REPO_ROOT / "model_cards" / name / "README.md").read_text()
    assert committed == released_model_card(name).content, "run `python -m lastvit.cards.model_card`"


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
    kwargs = dict(
        title="t",
        summary="s",
        details=["d"],
        command="lastvit-convert ...",
        sections=[],
        pipeline_tag="image-feature-extraction",
    )
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
