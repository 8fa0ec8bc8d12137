"""The model a `lastvit-benchmark` run measures: this package's LastViT / LastViT-CLIP classes (other
checkpoints only with ``trust_remote_code``), its normalisation and the outputs the benchmarks read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .maps import patch_scores

MAP_NAMES = {"patch_score": "Patch Score (pooled feature, Eq. 3)", "patch_score_cls": "Patch Score (final CLS output)"}


class BenchmarkError(ValueError):
    """A model or option that does not fit the benchmark; the message names the problem and the fix."""


@dataclass
class BenchmarkModel:
    """A loaded model and what the benchmarks need to know about it."""

    model: torch.nn.Module
    kind: str
    """``classifier`` (LastViTForImageClassification), ``backbone`` (LastViTModel) or ``clip``."""
    mean: tuple
    std: tuple
    tokenizer: object = None

    @property
    def tower(self):
        if self.kind == "clip":
            return self.model.vision_model
        return self.model.base_model if self.kind == "classifier" else self.model

    @property
    def image_size(self) -> int:
        height, width = self.tower.config.image_size_hw
        if height != width:
            raise BenchmarkError(f"the benchmarks crop square inputs; this model's image_size is {height}x{width}.")
        return height

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.tower.config.patch_size_hw)

    def forward(self, pixel_values: torch.Tensor) -> dict:
        """``patches`` [B, N, D], ``pooled`` [B, D], ``cls`` [B, D] or None and, for a classifier, ``logits``."""
        outputs = self.tower(pixel_values=pixel_values)
        tokens = self.tower.split_tokens(outputs.last_hidden_state)
        result = {
            "patches": tokens.patches.float(),
            "pooled": outputs.pooler_output.float(),
            "cls": None if tokens.cls is None else tokens.cls.reshape(len(pixel_values), -1).float(),
            "logits": None,
        }
        if self.kind == "classifier":
            result["logits"] = self.model.classifier(self.model.classifier_features(outputs)).float()
        return result

    def maps(self, pixel_values: torch.Tensor) -> tuple[dict, dict]:
        """``({map name: [B, N] scores}, forward outputs)``."""
        out = self.forward(pixel_values)
        maps = {"patch_score": patch_scores(out["patches"], out["pooled"])}
        if out["cls"] is not None:
            maps["patch_score_cls"] = patch_scores(out["patches"], out["cls"])
        return {k: v.cpu() for k, v in maps.items()}, out


def _normalisation(path: str) -> tuple[tuple, tuple]:
    """The checkpoint's ``image_mean`` / ``image_std`` (its preprocessor_config.json), else ImageNet's;
    read as JSON, so no processor code runs."""
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from transformers.utils import cached_file

    try:
        found = cached_file(path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        found = None
    if found:
        config = json.loads(Path(found).read_text())
        if "image_mean" in config and "image_std" in config:
            return tuple(config["image_mean"]), tuple(config["image_std"])
    return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)


def load_benchmark_model(path: str, trust_remote_code: bool = False) -> BenchmarkModel:
    """This package's classes for LastViT and LastViT-CLIP checkpoints; any other model only with
    `trust_remote_code` (then transformers' Auto classes run the checkpoint's own code)."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoTokenizer

    import modeling_lastvit
    from modeling_lastvit import LastViTCLIPConfig, LastViTCLIPModel

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as error:
        raise BenchmarkError(
            f"{path} is not a LastViT or LastViT-CLIP checkpoint ({error}); convert it with lastvit-convert, or pass "
            "--trust-remote-code to run the checkpoint's own code."
        ) from error
    architectures = " ".join(config.architectures or [])
    if isinstance(config, LastViTCLIPConfig):
        model, kind = LastViTCLIPModel.from_pretrained(path), "clip"
    elif isinstance(config, modeling_lastvit.LastViTConfig):
        kind = "classifier" if "ForImageClassification" in architectures else "backbone"
        cls = modeling_lastvit.LastViTForImageClassification if kind == "classifier" else modeling_lastvit.LastViTModel
        model = cls.from_pretrained(path)
    elif trust_remote_code:
        kind = "classifier" if "ForImageClassification" in architectures else "backbone"
        auto = AutoModelForImageClassification if kind == "classifier" else AutoModel
        model = auto.from_pretrained(path, trust_remote_code=True)
        kind = "clip" if hasattr(model, "get_patch_features") else kind
        tower = model.vision_model if kind == "clip" else (model.base_model if kind == "classifier" else model)
        if not hasattr(tower, "split_tokens"):
            raise BenchmarkError(
                f"{path} loaded as {type(model).__name__}, which lacks LastViT's interface (split_tokens, "
                "pooler_output); convert the checkpoint with lastvit-convert."
            )
    else:
        raise BenchmarkError(
            f"{path} holds a {config.model_type!r} model, not a LastViT checkpoint; convert it with lastvit-convert, "
            "or pass --trust-remote-code to run the checkpoint's own code."
        )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code) if kind == "clip" else None
    mean, std = _normalisation(path)
    return BenchmarkModel(model.eval(), kind, mean, std, tokenizer)
