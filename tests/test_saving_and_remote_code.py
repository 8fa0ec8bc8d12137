"""Saving, loading and remote code: what a LastViT checkpoint folder holds and who can open it.

Specification-style tests on tiny models. The remote-code tests run a fresh interpreter whose
import path cannot see this repository (nor an editable install of it), so the checkpoint has to
load from the ``.py`` files copied next to its weights, through ``trust_remote_code=True``.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("modeling_lastvit") is None:  # plain `pytest` without the repo on sys.path
    sys.path.insert(0, str(REPO_ROOT))

from PIL import Image
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    dynamic_module_utils,
    pipeline,
)

import modeling_lastvit
from modeling_lastvit import (
    LastViTBackbone,
    LastViTConfig,
    LastViTForImageClassification,
    LastViTImageProcessor,
    LastViTModel,
)

from .tiny import tiny_config as shared_tiny_config

MODEL_CLASSES = (LastViTModel, LastViTForImageClassification, LastViTBackbone)
EXPECTED_AUTO_MAP = {
    "AutoConfig": "configuration_lastvit.LastViTConfig",
    "AutoModel": "modeling_lastvit.LastViTModel",
    "AutoModelForImageClassification": "modeling_lastvit.LastViTForImageClassification",
    "AutoBackbone": "modeling_lastvit.LastViTBackbone",
}
MODEL_CODE_FILES = ("configuration_lastvit.py", "modeling_lastvit.py", "pooling_lastvit.py")
PROCESSOR_CODE_FILE = "image_processing_lastvit.py"
ID2LABEL = {0: "cat", 1: "dog", 2: "fish"}
NUM_PREFIX_TOKENS = 1 + 2  # CLS + 2 registers
NUM_PATCHES = (32 // 8) ** 2
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def tiny_config(**overrides) -> LastViTConfig:
    """The shared tiny config with 2 registers and three named classes."""
    kwargs = dict(
        num_register_tokens=2, id2label=dict(ID2LABEL), label2id={label: idx for idx, label in ID2LABEL.items()}
    )
    return shared_tiny_config(**{**kwargs, **overrides})


def tiny_model(model_class, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return model_class(tiny_config(**overrides)).eval()


def tiny_image_processor() -> LastViTImageProcessor:
    return LastViTImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})


def pixel_batch(batch_size: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def random_pil_image(height: int = 40, width: int = 52, seed: int = 2) -> Image.Image:
    array = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(array)


def outputs_of(model, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors a model class is expected to reproduce after a round trip."""
    with torch.no_grad():
        out = model(pixel_values)
    if isinstance(model, LastViTBackbone):
        return {f"feature_map_{i}": fmap for i, fmap in enumerate(out.feature_maps)}
    if isinstance(model, LastViTForImageClassification):
        return {"logits": out.logits, "pooler_output": out.pooler_output}
    return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}


def save_classifier_checkpoint(folder: Path) -> LastViTForImageClassification:
    model = tiny_model(LastViTForImageClassification)
    model.save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory) -> Path:
    """A saved classifier checkpoint (weights, config, image processor and their code)."""
    folder = tmp_path_factory.mktemp("lastvit_classifier") / "ckpt"
    save_classifier_checkpoint(folder)
    return folder


@pytest.fixture
def no_remote_code_prompt(monkeypatch):
    """Image pipelines also try an AutoVideoProcessor, which transformers derives from the processor's
    `auto_map` ("...LastViTVideoProcessor"); it has no local class, so transformers would prompt on
    stdin (15 s timeout). A timeout of 0 makes that optional lookup fail at once, as in transformers' CI."""
    monkeypatch.setattr(dynamic_module_utils, "TIME_OUT_REMOTE_CODE", 0)


# --------------------------------------------------------------------------------------------
# save_pretrained / from_pretrained
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_save_load_round_trip_gives_identical_outputs_with_safetensors(tmp_path, model_class):
    model = tiny_model(model_class)
    pixel_values = pixel_batch()
    expected = outputs_of(model, pixel_values)

    model.save_pretrained(tmp_path)
    saved_files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in saved_files
    assert not [name for name in saved_files if name.endswith(PICKLE_SUFFIXES)], saved_files

    reloaded = model_class.from_pretrained(tmp_path)
    assert type(reloaded) is model_class
    assert not reloaded.training
    actual = outputs_of(reloaded, pixel_values)
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=0, msg=f"{name} changed after the round trip")


def test_round_trip_keeps_the_config_including_labels(tmp_path):
    model = tiny_model(
        LastViTForImageClassification, pooling="mean", lazystrike_top_k=None, lazystrike_top_k_ratio=0.5
    )
    model.save_pretrained(tmp_path)
    config = LastViTConfig.from_pretrained(tmp_path)
    assert config.id2label == ID2LABEL
    assert config.pooling == "mean"
    assert config.lazystrike_top_k is None and config.lazystrike_top_k_ratio == 0.5
    assert (config.image_size, config.patch_size, config.num_register_tokens) == (32, 8, 2)
    assert config.auto_map == EXPECTED_AUTO_MAP


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_saved_folder_holds_the_code_and_an_auto_map_for_every_model_auto_class(tmp_path, model_class):
    tiny_model(model_class).save_pretrained(tmp_path)

    for name in MODEL_CODE_FILES:
        assert (tmp_path / name).is_file(), f"{name} was not copied next to the weights"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "lastvit"
    assert config["architectures"] == [model_class.__name__]
    assert config["auto_map"] == EXPECTED_AUTO_MAP


def test_saving_the_image_processor_adds_its_code_and_auto_map(tmp_path):
    tiny_model(LastViTForImageClassification).save_pretrained(tmp_path)
    assert not (tmp_path / PROCESSOR_CODE_FILE).exists()

    tiny_image_processor().save_pretrained(tmp_path)

    assert (tmp_path / PROCESSOR_CODE_FILE).is_file()
    processor_config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert processor_config["image_processor_type"] == "LastViTImageProcessor"
    assert processor_config["auto_map"] == {"AutoImageProcessor": "image_processing_lastvit.LastViTImageProcessor"}
    # the model's config is left alone
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == EXPECTED_AUTO_MAP


def test_saving_a_bare_config_writes_the_full_auto_map_and_its_code(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    assert (tmp_path / "configuration_lastvit.py").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == EXPECTED_AUTO_MAP


def _allowed_top_level_modules() -> set[str]:
    return set(sys.stdlib_module_names) | {"torch", "transformers", "huggingface_hub", "__future__"}


def test_copied_code_imports_only_flat_siblings_and_allowed_packages(tmp_path):
    save_classifier_checkpoint(tmp_path)
    code_files = sorted(tmp_path.glob("*.py"))
    assert {p.name for p in code_files} == {*MODEL_CODE_FILES, PROCESSOR_CODE_FILE}
    siblings = {p.stem for p in code_files}
    allowed = _allowed_top_level_modules()

    problems = []
    for path in code_files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    if top not in allowed:
                        problems.append(f"{path.name}:{node.lineno}: import {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    top = node.module.split(".")[0]
                    if top not in allowed:
                        problems.append(f"{path.name}:{node.lineno}: from {node.module} import ...")
                elif node.level != 1 or node.module is None or node.module not in siblings:
                    dots = "." * node.level
                    problems.append(
                        f"{path.name}:{node.lineno}: from {dots}{node.module or ''} import ... "
                        "(only `from .<sibling file> import name` works in a remote-code folder)"
                    )
    assert not problems, "\n".join(problems)
    assert "modeling_lastvit" not in allowed


# --------------------------------------------------------------------------------------------
# Auto classes with the package imported
# --------------------------------------------------------------------------------------------


def test_auto_classes_load_lastvit_classes_in_process(classifier_folder):
    config = AutoConfig.from_pretrained(classifier_folder)
    assert type(config) is LastViTConfig

    assert type(AutoModel.from_pretrained(classifier_folder)) is LastViTModel
    assert type(AutoModelForImageClassification.from_pretrained(classifier_folder)) is LastViTForImageClassification
    assert type(AutoImageProcessor.from_pretrained(classifier_folder)) is LastViTImageProcessor
    assert type(AutoBackbone.from_config(config)) is LastViTBackbone


def test_package_import_registers_remote_code_auto_classes():
    assert modeling_lastvit.LastViTConfig._auto_class == "AutoConfig"
    assert LastViTModel._auto_class == "AutoModel"
    assert LastViTForImageClassification._auto_class == "AutoModelForImageClassification"
    assert LastViTBackbone._auto_class == "AutoBackbone"
    assert LastViTImageProcessor._auto_class == "AutoImageProcessor"


@pytest.mark.xfail(
    strict=True,
    raises=(ValueError, OSError),
    reason=(
        "transformers 5.23 AutoBackbone.from_pretrained calls hf_api().repo_exists(path) before anything "
        "else, which raises HFValidationError for a local folder (or needs the network); "
        "load LastViTBackbone.from_pretrained(folder) or get_class_from_dynamic_module instead."
    ),
)
def test_auto_backbone_from_pretrained_loads_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_model(LastViTBackbone).save_pretrained(tmp_path)
    backbone = AutoBackbone.from_pretrained(str(tmp_path), trust_remote_code=True)
    assert type(backbone).__name__ == "LastViTBackbone"


# --------------------------------------------------------------------------------------------
# Weights move between heads
# --------------------------------------------------------------------------------------------


def test_classifier_checkpoint_loads_into_base_model_with_the_same_encoder_weights(tmp_path):
    classifier = tiny_model(LastViTForImageClassification)
    classifier.save_pretrained(tmp_path)

    base = LastViTModel.from_pretrained(tmp_path)
    classifier_state = classifier.state_dict()
    for name, tensor in base.state_dict().items():
        assert torch.equal(tensor, classifier_state[f"lastvit.{name}"]), name
    torch.testing.assert_close(
        base.encoder.layer[-1].mlp.fc2.weight, classifier.lastvit.encoder.layer[-1].mlp.fc2.weight, rtol=0, atol=0
    )
    pixel_values = pixel_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            base(pixel_values).pooler_output, classifier(pixel_values).pooler_output, rtol=0, atol=0
        )


def test_base_model_checkpoint_loads_into_classifier_with_the_same_encoder_weights(tmp_path):
    base = tiny_model(LastViTModel)
    base.save_pretrained(tmp_path)

    classifier = LastViTForImageClassification.from_pretrained(tmp_path)
    classifier_state = classifier.state_dict()
    for name, tensor in base.state_dict().items():
        assert torch.equal(classifier_state[f"lastvit.{name}"], tensor), name
    assert classifier.classifier.weight.shape == (len(ID2LABEL), 32)
    assert torch.isfinite(classifier.classifier.weight).all()


def test_classifier_checkpoint_loads_into_backbone_whose_last_map_is_the_final_patch_tokens(tmp_path):
    classifier = tiny_model(LastViTForImageClassification)
    classifier.save_pretrained(tmp_path)

    backbone = LastViTBackbone.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(
        backbone.embeddings.patch_embeddings.projection.weight,
        classifier.lastvit.embeddings.patch_embeddings.projection.weight,
        rtol=0,
        atol=0,
    )
    pixel_values = pixel_batch()
    with torch.no_grad():
        feature_map = backbone(pixel_values).feature_maps[-1]
        tokens = classifier.lastvit(pixel_values).last_hidden_state
    assert feature_map.shape == (2, 32, 4, 4)
    expected = tokens[:, NUM_PREFIX_TOKENS:].transpose(1, 2).reshape(2, 32, 4, 4)
    torch.testing.assert_close(feature_map, expected)


# --------------------------------------------------------------------------------------------
# Pipelines (package imported)
# --------------------------------------------------------------------------------------------


def test_image_classification_pipeline_returns_top_k_labels_from_id2label(classifier_folder, no_remote_code_prompt):
    classifier = pipeline("image-classification", model=str(classifier_folder))
    assert type(classifier.model) is LastViTForImageClassification
    assert type(classifier.image_processor) is LastViTImageProcessor

    image = random_pil_image()
    predictions = classifier(image, top_k=2)
    assert len(predictions) == 2
    assert all(set(p) == {"label", "score"} for p in predictions)
    assert {p["label"] for p in predictions} <= set(ID2LABEL.values())
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores) and sum(scores) <= 1.0 + 1e-6

    pixel_values = tiny_image_processor()(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        probs = classifier.model(pixel_values).logits.softmax(-1)[0]
    assert predictions[0]["label"] == ID2LABEL[int(probs.argmax())]
    assert predictions[0]["score"] == pytest.approx(float(probs.max()), abs=1e-6)

    batch = classifier([image, random_pil_image(seed=3)], top_k=len(ID2LABEL))
    assert len(batch) == 2
    for image_predictions in batch:
        assert sorted(p["label"] for p in image_predictions) == sorted(ID2LABEL.values())
        assert sum(p["score"] for p in image_predictions) == pytest.approx(1.0, abs=1e-5)


def test_image_feature_extraction_pipeline_returns_tokens_and_the_pooled_feature(
    classifier_folder, no_remote_code_prompt
):
    extractor = pipeline("image-feature-extraction", model=str(classifier_folder))
    assert type(extractor.model) is LastViTModel
    image = random_pil_image()

    tokens = np.asarray(extractor(image))
    assert tokens.shape == (1, NUM_PREFIX_TOKENS + NUM_PATCHES, 32)

    pooled = extractor(image, pool=True, return_tensors=True)
    assert pooled.shape == (1, 32)
    pixel_values = tiny_image_processor()(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = extractor.model(pixel_values)
    torch.testing.assert_close(pooled, expected.pooler_output)
    torch.testing.assert_close(torch.as_tensor(tokens, dtype=torch.float32), expected.last_hidden_state)


# --------------------------------------------------------------------------------------------
# Remote code: a fresh interpreter that cannot import this package
# --------------------------------------------------------------------------------------------

# Runs first in every subprocess: hide the repository (and any editable install of it).
_ISOLATION_PRELUDE = textwrap.dedent(
    """
    import importlib, importlib.util, json, os, sys
    ARGS = json.loads(sys.argv[1])
    REPO_ROOT = os.path.realpath(ARGS["repo_root"])

    def _mentions_repo(entry):
        # inside the repository (a path prefix, not a substring: a venv beside it shares the name prefix)
        return (os.path.realpath(os.path.abspath(entry or os.curdir)) + os.sep).startswith(REPO_ROOT + os.sep)

    def _is_editable_hook(obj):
        names = (getattr(obj, "__name__", ""), getattr(obj, "__module__", ""), type(obj).__name__, type(obj).__module__)
        return any("editable" in str(name).lower() for name in names)

    sys.path[:] = [entry for entry in sys.path if not _mentions_repo(entry)]
    sys.meta_path[:] = [finder for finder in sys.meta_path if not _is_editable_hook(finder)]
    sys.path_hooks[:] = [hook for hook in sys.path_hooks if not _is_editable_hook(hook)]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
    assert importlib.util.find_spec("modeling_lastvit") is None, "the package is still importable"

    import torch

    def check_close(name, actual, expected):
        if actual.shape != expected.shape or not torch.allclose(actual, expected, rtol=1e-5, atol=1e-6):
            diff = (actual - expected).abs().max().item() if actual.shape == expected.shape else "n/a"
            print(f"MISMATCH {name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}, max diff {diff}")
            sys.exit(3)

    def check_remote(obj):
        module = type(obj).__module__
        if not module.startswith("transformers_modules."):
            print(f"NOT REMOTE CODE: {type(obj)}")
            sys.exit(4)
    """
)

_ISOLATION_EPILOGUE = textwrap.dedent(
    """
    leaked = sorted(name for name in sys.modules if name == "modeling_lastvit" or name.startswith("modeling_lastvit."))
    if leaked:
        print(f"the installed package was imported: {leaked}")
        sys.exit(5)
    print("REMOTE-CODE-OK")
    """
)


def isolated_env(tmp_path: Path, pythonpath: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=pythonpath,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("PYTHONSTARTUP", None)
    return env


def run_isolated(tmp_path: Path, body: str, pythonpath: str = "", **args) -> subprocess.CompletedProcess:
    script = _ISOLATION_PRELUDE + textwrap.dedent(body) + _ISOLATION_EPILOGUE
    env = isolated_env(tmp_path, pythonpath)
    payload = json.dumps({"repo_root": str(REPO_ROOT), **{k: str(v) for k, v in args.items()}})
    result = subprocess.run(
        [sys.executable, "-c", script, payload],
        check=False,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0 and "REMOTE-CODE-OK" in result.stdout, (
        f"subprocess failed (rc={result.returncode})\n--- stdout ---\n{result.stdout[-4000:]}"
        f"\n--- stderr ---\n{result.stderr[-6000:]}"
    )
    return result


_FAKE_EDITABLE_FINDER = """
import importlib.util, sys

PACKAGE_DIR = {package_dir!r}


class _EditableFinder:  # what setuptools' editable install puts on sys.meta_path
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname == "modeling_lastvit":
            return importlib.util.spec_from_file_location(
                fullname, PACKAGE_DIR + "/__init__.py", submodule_search_locations=[PACKAGE_DIR]
            )
        return None


def install():
    sys.meta_path.append(_EditableFinder)
"""


def test_isolation_hides_the_package_even_from_pythonpath_and_an_editable_finder(tmp_path):
    site_dir = tmp_path / "fake_site"
    site_dir.mkdir()
    finder_module = "__editable___modeling_lastvit_0_1_0_finder"
    (site_dir / f"{finder_module}.py").write_text(
        _FAKE_EDITABLE_FINDER.format(package_dir=str(REPO_ROOT / "modeling_lastvit"))
    )
    (site_dir / "sitecustomize.py").write_text(f"import {finder_module}\n{finder_module}.install()\n")
    pythonpath = os.pathsep.join([str(site_dir), str(REPO_ROOT)])

    # control: without the prelude, the package is importable through both routes
    for hide_repo_path in (False, True):
        probe = (
            "import importlib.util, sys\n"
            + (f"sys.path[:] = [p for p in sys.path if {str(REPO_ROOT)!r} not in p]\n" if hide_repo_path else "")
            + "sys.exit(0 if importlib.util.find_spec('modeling_lastvit') else 1)\n"
        )
        control = subprocess.run(
            [sys.executable, "-c", probe],
            check=False,
            cwd=tmp_path,
            env=isolated_env(tmp_path, pythonpath),
            timeout=60,
        )
        assert control.returncode == 0, (
            f"the fake install did not expose the package (hide_repo_path={hide_repo_path})"
        )

    run_isolated(tmp_path, "", pythonpath=pythonpath)


def test_remote_code_auto_classes_reproduce_outputs_without_the_package(tmp_path):
    folder = tmp_path / "ckpt"
    classifier = save_classifier_checkpoint(folder)
    image = random_pil_image()
    image.save(tmp_path / "image.png")
    pixel_values = tiny_image_processor()(image, return_tensors="pt").pixel_values
    base = LastViTModel.from_pretrained(folder).eval()
    with torch.no_grad():
        base_out = base(pixel_values)
        expected = {
            "pixel_values": pixel_values,
            "last_hidden_state": base_out.last_hidden_state,
            "pooler_output": base_out.pooler_output,
            "logits": classifier(pixel_values).logits,
        }
    torch.save(expected, tmp_path / "expected.pt")

    run_isolated(
        tmp_path,
        """
        from PIL import Image
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

        folder = ARGS["folder"]
        expected = torch.load(ARGS["expected"], weights_only=True)

        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        check_remote(config)
        assert type(config).__name__ == "LastViTConfig" and config.num_register_tokens == 2

        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        check_remote(processor)
        assert type(processor).__name__ == "LastViTImageProcessor"
        pixel_values = processor(Image.open(ARGS["image"]), return_tensors="pt").pixel_values
        check_close("pixel_values", pixel_values, expected["pixel_values"])

        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        check_remote(model)
        assert type(model).__name__ == "LastViTModel"
        with torch.no_grad():
            out = model(pixel_values)
        check_close("last_hidden_state", out.last_hidden_state, expected["last_hidden_state"])
        check_close("pooler_output", out.pooler_output, expected["pooler_output"])

        classifier = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
        check_remote(classifier)
        assert type(classifier).__name__ == "LastViTForImageClassification"
        assert classifier.config.id2label == {0: "cat", 1: "dog", 2: "fish"}
        with torch.no_grad():
            check_close("logits", classifier(pixel_values).logits, expected["logits"])
        """,
        folder=folder,
        image=tmp_path / "image.png",
        expected=tmp_path / "expected.pt",
    )


def test_remote_code_backbone_reproduces_feature_maps_without_the_package(tmp_path):
    folder = tmp_path / "ckpt"
    save_classifier_checkpoint(folder)
    backbone = LastViTBackbone.from_pretrained(folder, out_features=["stage1", "stage2"]).eval()
    pixel_values = pixel_batch()
    with torch.no_grad():
        feature_maps = backbone(pixel_values).feature_maps
    assert [tuple(f.shape) for f in feature_maps] == [(2, 32, 4, 4)] * 2
    torch.save({"pixel_values": pixel_values, "feature_maps": list(feature_maps)}, tmp_path / "expected.pt")

    run_isolated(
        tmp_path,
        """
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        folder = ARGS["folder"]
        expected = torch.load(ARGS["expected"], weights_only=True)
        backbone_class = get_class_from_dynamic_module("modeling_lastvit.LastViTBackbone", folder)
        backbone = backbone_class.from_pretrained(folder, out_features=["stage1", "stage2"]).eval()
        check_remote(backbone)
        assert backbone.out_features == ["stage1", "stage2"], backbone.out_features
        with torch.no_grad():
            feature_maps = backbone(expected["pixel_values"]).feature_maps
        assert len(feature_maps) == 2, len(feature_maps)
        for i, (actual, wanted) in enumerate(zip(feature_maps, expected["feature_maps"])):
            assert tuple(actual.shape) == (2, 32, 4, 4), actual.shape
            check_close(f"feature_maps[{i}]", actual, wanted)
        """,
        folder=folder,
        expected=tmp_path / "expected.pt",
    )


def test_remote_code_pipelines_match_in_process_results_without_the_package(tmp_path):
    folder = tmp_path / "ckpt"
    classifier = save_classifier_checkpoint(folder)
    image = random_pil_image()
    image.save(tmp_path / "image.png")
    pixel_values = tiny_image_processor()(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        out = classifier(pixel_values)
    torch.save({"probs": out.logits.softmax(-1)[0], "pooled": out.pooler_output}, tmp_path / "expected.pt")

    run_isolated(
        tmp_path,
        """
        from PIL import Image
        from transformers import pipeline

        folder = ARGS["folder"]
        expected = torch.load(ARGS["expected"], weights_only=True)
        image = Image.open(ARGS["image"])
        labels = ["cat", "dog", "fish"]

        classify = pipeline("image-classification", model=folder, trust_remote_code=True)
        check_remote(classify.model)
        check_remote(classify.image_processor)
        predictions = classify(image, top_k=3)
        by_label = {p["label"]: p["score"] for p in predictions}
        assert sorted(by_label) == labels, predictions
        check_close("scores", torch.tensor([by_label[l] for l in labels]), expected["probs"])

        extract = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
        check_remote(extract.model)
        pooled = extract(image, pool=True, return_tensors=True)
        check_close("pooled", pooled, expected["pooled"])
        """,
        folder=folder,
        image=tmp_path / "image.png",
        expected=tmp_path / "expected.pt",
    )


# --------------------------------------------------------------------------------------------
# LastViT-CLIP: the second model a checkpoint carries, saved through register_for_auto_class
# --------------------------------------------------------------------------------------------

CLIP_AUTO_MAP = {
    "AutoConfig": "configuration_lastvit_clip.LastViTCLIPConfig",
    "AutoModel": "modeling_lastvit_clip.LastViTCLIPModel",
    "AutoModelForZeroShotImageClassification": "modeling_lastvit_clip.LastViTCLIPModel",
}
CLIP_CODE_FILES = ("configuration_lastvit_clip.py", "modeling_lastvit_clip.py", *MODEL_CODE_FILES)


def tiny_clip_model():
    from transformers import CLIPTextConfig

    from modeling_lastvit import LastViTCLIPConfig, LastViTCLIPModel

    text = CLIPTextConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    torch.manual_seed(0)
    return LastViTCLIPModel(LastViTCLIPConfig(vision_config=tiny_config(), text_config=text, projection_dim=16)).eval()


def test_clip_model_saves_its_code_and_auto_map_through_register_for_auto_class(tmp_path):
    from modeling_lastvit import LastViTCLIPConfig, LastViTCLIPModel

    assert (LastViTCLIPModel._auto_class, LastViTCLIPConfig._auto_class) == ("AutoModel", "AutoConfig")
    assert "save_pretrained" not in vars(LastViTCLIPModel), "the code is saved by transformers, not copied by hand"
    tiny_clip_model().save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.glob("*.py")} == set(CLIP_CODE_FILES)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "lastvit-clip"
    assert config["auto_map"] == CLIP_AUTO_MAP


def test_remote_code_clip_model_reproduces_outputs_without_the_package(tmp_path):
    folder = tmp_path / "clip"
    model = tiny_clip_model()
    model.save_pretrained(folder)
    inputs = {"pixel_values": pixel_batch(), "input_ids": torch.randint(0, 50, (3, 7), generator=torch.Generator())}
    with torch.no_grad():
        out = model(**inputs)
    torch.save({**inputs, "logits_per_image": out.logits_per_image}, tmp_path / "expected.pt")

    run_isolated(
        tmp_path,
        """
        from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification

        folder = ARGS["folder"]
        expected = torch.load(ARGS["expected"], weights_only=True)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        check_remote(config)
        assert type(config).__name__ == "LastViTCLIPConfig" and config.projection_dim == 16
        for auto_class in (AutoModel, AutoModelForZeroShotImageClassification):
            model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
            check_remote(model)
            assert type(model).__name__ == "LastViTCLIPModel"
            with torch.no_grad():
                out = model(pixel_values=expected["pixel_values"], input_ids=expected["input_ids"])
            check_close("logits_per_image", out.logits_per_image, expected["logits_per_image"])
        """,
        folder=folder,
        expected=tmp_path / "expected.pt",
    )
