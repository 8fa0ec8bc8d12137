"""The route from a 2025-26 backbone to a LaSt-ViT, one command each: `lastvit-convert --from hf` writes a folder
that reproduces DINOv3 / SigLIP / SigLIP2 / AIMv2 / I-JEPA in a fresh process without the package, and
`lastvit-train --model-name-or-path FOLDER --pooling lazystrike` fine-tunes it: its first step's loss is the
converted encoder's loss with the LazyStrike readout and the new classifier, and its result loads the same way."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lastvit.training import trainer
from lastvit.training.loop import reset_accelerate
from modeling_lastvit import LastViTForImageClassification
from training_scripts import train
from training_scripts.convert import main as convert_main

from .conversion_helpers import (
    ATOL,
    DINOV3_PROCESSOR_CONFIG,
    NATIVE,
    RECENT_PROCESSORS,
    REPO_ROOT,
    perturbed,
    pixels,
    recent_source,
)
from .test_conversion_cli import _FRESH_PROCESS

# family: (source in conversion_helpers.RECENT_SOURCES, input sizes the source runs at)
FAMILIES = {
    "dinov3": ("DINOv3ViTModel", (NATIVE, (48, 40))),
    "siglip": ("SiglipVisionModel", (NATIVE, (48, 40))),
    "siglip-full": ("SiglipModel", (NATIVE, (48, 40))),
    "siglip2": ("Siglip2VisionModel", (NATIVE, (48, 40))),
    "aimv2": ("Aimv2Model", (NATIVE,)),
    "aimv2-48px": ("Aimv2VisionModel-48px-biases", ((48, 48),)),
    "aimv2-native": ("Aimv2VisionModel-native", (NATIVE, (48, 40))),
    "ijepa": ("IJepaForImageClassification", (NATIVE, (48, 40))),
}
FINE_TUNED = ("dinov3", "siglip", "siglip2", "aimv2", "ijepa")
try:  # timm's own VisionTransformer (with the test-only torchvision stand-in where torchvision does not load)
    from .torchvision_standin import import_timm

    import_timm()
    FAMILIES["timm"] = ("VisionTransformer reg4 map", (NATIVE, (48, 40)))
    FAMILIES["timm-eva"] = ("Eva EVA02-CLIP-like", (NATIVE, (48, 40)))
    FINE_TUNED += ("timm", "timm-eva")
except ImportError:
    pass
TIMM_FAMILIES = ("timm", "timm-eva")


def timm_source():
    """A timm `vit_*_reg4_map`-like ViT: no CLS, 4 registers, the MAP head, a 3-way head, dynamic image size."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(6)
    model = VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=4,
        mlp_ratio=2.0,
        class_token=False,
        reg_tokens=4,
        global_pool="map",
        num_classes=3,
        dynamic_img_size=True,
    )
    return perturbed(model)


def timm_eva_source():
    """An EVA02-CLIP-like timm Eva: EVA RoPE (reference grid 16), split SwiGLU with sub-LN, attention sub-LN, CLS
    readout, a 3-way head, dynamic image size."""
    from timm.models.eva import Eva

    torch.manual_seed(6)
    model = Eva(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=4,
        qkv_fused=False,
        mlp_ratio=4 * 2 / 3,
        swiglu_mlp=True,
        scale_mlp=True,
        scale_attn_inner=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(16, 16),
        global_pool="token",
        num_classes=3,
        dynamic_img_size=True,
    )
    return perturbed(model)


def timm_source_outputs(model, x):
    with torch.no_grad():
        tokens = model.forward_features(x)
        return {
            "last_hidden_state": tokens,
            "pooler_output": model.forward_head(tokens, pre_logits=True),
            "logits": model.forward_head(tokens),
        }


def colour_split(n: int, seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    return datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(n)]}, features=features)


def source_outputs(name, source, x):
    """The outputs the converted folder must reproduce, named as the LastViT output that holds them."""
    from lastvit.conversion.hf_recent import recent_source_outputs

    with torch.no_grad():
        out = recent_source_outputs(source, x)
    if name.startswith("IJepaFor"):
        return {"logits": out.logits}
    found = {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}
    if getattr(out, "image_embeds", None) is not None:
        found["image_embeds"] = out.image_embeds
    return {key: value for key, value in found.items() if value is not None}


@pytest.fixture(scope="module")
def routes(tmp_path_factory):
    """Every family converted with the CLI and (FINE_TUNED) fine-tuned one step with LazyStrike; returns the
    fresh-process cases and each fine-tune's first step."""
    root = tmp_path_factory.mktemp("recent")
    data = root / "colours"
    datasets.DatasetDict(train=colour_split(8, 0), test=colour_split(4, 1)).save_to_disk(str(data))
    cases, first_steps = {}, {}

    def add_case(name, folder, output, x, expected):
        """One (folder, output, input size) for the fresh-process script, which compares one output per case."""
        tensors = root / f"{name}.safetensors"
        save_file({"x_": x.contiguous(), "y_": expected.contiguous()}, str(tensors))
        auto_class = "AutoModelForImageClassification" if output == "logits" else "AutoModel"
        cases[name] = {"folder": str(folder), "auto_class": auto_class, "output": output, "tensors": str(tensors)}

    for family, (name, sizes) in FAMILIES.items():
        folder = root / family
        if family in TIMM_FAMILIES:
            source = timm_source() if family == "timm" else timm_eva_source()
            save_file(source.state_dict(), str(root / f"{family}.safetensors"))
            argv = ["--from", family, "--input", str(root / f"{family}.safetensors"), "--num-heads", "4"]
            argv += ["--global-pool", "token"] if family == "timm-eva" else []
            outputs = timm_source_outputs
        else:
            source, source_dir = recent_source(name), root / f"src_{family}"
            source.save_pretrained(source_dir)
            if name in RECENT_PROCESSORS:
                RECENT_PROCESSORS[name]().save_pretrained(source_dir)
            if family == "dinov3":  # its processor needs torchvision: the settings file it saves, read as such
                (source_dir / "preprocessor_config.json").write_text(json.dumps(DINOV3_PROCESSOR_CONFIG))
            argv = ["--from", "hf", "--input", str(source_dir)]
            outputs = functools.partial(source_outputs, name)
        assert convert_main([*argv, "--output", str(folder)]) == 0
        for size in sizes:
            x = pixels(size, seed=11)
            for output, value in outputs(source, x).items():
                add_case(f"{family}:{output}:{size[0]}x{size[1]}", folder, output, x, value)
        if family not in FINE_TUNED:
            continue

        out = root / f"ft_{family}"
        record = {}
        build = trainer.build_model

        def recording_build_model(config, labels, record=record, build=build):
            model = build(config, labels)

            def first_call(module, args, kwargs, result):
                if "loss" not in record:
                    record.update(
                        loss=result.loss.item(),
                        pixel_values=kwargs["pixel_values"].detach().clone(),
                        labels=kwargs["labels"].detach().clone(),
                        state={k: v.detach().clone() for k, v in module.state_dict().items()},
                    )

            model.register_forward_hook(first_call, with_kwargs=True)
            return model

        trainer.build_model = recording_build_model
        try:
            argv = ["--dataset", str(data), "--model-name-or-path", str(folder), "--pooling", "lazystrike"]
            argv += ["--top-k", "1", "--batch-size", "4", "--epochs", "0.5", "--no-progress", "--output-dir", str(out)]
            assert train.main(argv) == 0
        finally:
            trainer.build_model = build
            reset_accelerate()
        first_steps[family] = (folder, record)
        trained = LastViTForImageClassification.from_pretrained(out).eval()
        x = pixels(NATIVE, seed=12)
        with torch.no_grad():
            add_case(f"ft-{family}:logits:32x32", out, "logits", x, trained(x).logits)
    return cases, first_steps


def test_recent_families_convert_to_complete_folders_with_cards_naming_both_readouts(routes):
    cases, _ = routes
    for family in FAMILIES:
        folder = Path(next(case["folder"] for name, case in cases.items() if name.startswith(f"{family}:")))
        assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= {
            p.name for p in folder.iterdir()
        }
        card = (folder / "README.md").read_text()
        assert "The source's global feature was" in card and "this folder's `pooler_output` is" in card, family
        if (
            family in TIMM_FAMILIES
        ):  # state dicts: parity is checked against timm's forward here and in test_conversion_timm*
            continue
        assert "vs the transformers source" in card, family
        parity = [line for line in card.splitlines() if "vs the transformers source" in line]
        assert all(float(line.split("|")[-2]) <= ATOL for line in parity), parity


def test_converted_and_fine_tuned_folders_reproduce_in_a_fresh_process_without_the_package(tmp_path, routes):
    cases, _ = routes
    env = {
        **os.environ,
        "PYTHONPATH": "",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(REPO_ROOT), json.dumps(cases)],
        cwd=tmp_path,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    diffs = json.loads(result.stdout.split("DIFFS ", 1)[1])
    assert len(diffs) == len(cases)
    assert {name.split(":")[0] for name in diffs} >= set(FAMILIES) | {f"ft-{family}" for family in FINE_TUNED}
    too_far = {case: diff for case, diff in diffs.items() if diff > ATOL}
    assert not too_far, too_far


@pytest.mark.parametrize("family", FINE_TUNED)
def test_first_fine_tuning_step_loss_is_the_converted_models_loss_with_lazystrike(routes, family):
    from transformers import AutoModel

    _, first_steps = routes
    folder, record = first_steps[family]
    converted = AutoModel.from_pretrained(folder, pooling="lazystrike", lazystrike_top_k=1, trust_remote_code=True)
    state = record["state"]
    for key, value in converted.state_dict().items():  # the run started from the converted encoder, unchanged
        torch.testing.assert_close(state[f"lastvit.{key}"], value, rtol=0, atol=0)
    with torch.no_grad():
        pooled = converted.train()(record["pixel_values"]).pooler_output
    logits = pooled @ state["classifier.weight"].T + state["classifier.bias"]
    expected = torch.nn.functional.cross_entropy(logits, record["labels"]).item()
    assert abs(record["loss"] - expected) <= 1e-5, (record["loss"], expected)
