"""What a training run is: typed dataclasses (data, model, optimisation, run) that the CLIs parse into
and that Python callers build directly. Importing this module imports neither torch nor transformers.

    from lastvit.training import TrainConfig, train
    results = train(TrainConfig(dataset="scenes", preset="micro", pooling="lazystrike", top_k_ratio=0.5,
                                epochs=3, seed=1, output_dir="runs/micro", progress=False))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lastvit.arguments import option
from lastvit.data.arguments import DataArguments
from lastvit.model_choices import POOLING_TYPES


class Preset(NamedTuple):
    """A named architecture: its `LastViTConfig` sizes (the field names are the config's)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    image_size: int
    patch_size: int


# micro and tiny are sized for 64 px scenes on a CPU
PRESETS = {
    "micro": Preset(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512, image_size=64,
                    patch_size=8),
    "tiny": Preset(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, image_size=64,
                   patch_size=8),
    "small": Preset(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                    image_size=224, patch_size=16),
    "base": Preset(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   image_size=224, patch_size=16),
}  # fmt: skip
REPORT_TO = ("none", "tensorboard", "wandb", "all")


class ConfigError(ValueError):
    """Options that contradict each other or name nothing known; the message says which."""


@dataclass(kw_only=True)
class ModelArguments:
    """The architecture from scratch (a preset), or the checkpoint to start from."""

    model_name_or_path: str | None = option(None, "start from a LastViT checkpoint folder (or Hub id)")
    preset: str = option("tiny", "architecture when training from scratch", choices=sorted(PRESETS))
    image_size: int | None = option(None, "input size (default: the preset's or checkpoint's)")
    patch_size: int | None = option(None, "patch size (default: the preset's)")
    pooling: str | None = option(
        None,
        "global readout (default: lazystrike from scratch; the checkpoint's own otherwise)",
        choices=POOLING_TYPES,
    )
    top_k: int | None = option(None, "LazyStrike K as a count (default: 1, the released setting)")
    top_k_ratio: float | None = option(None, "LazyStrike K as a fraction of the patches, in (0, 1]")
    registers: int = option(0, "number of register tokens (default: 0)")
    drop_path: float = option(0.0, "stochastic depth rate (default: 0)")
    attn_implementation: str = option("sdpa", "sdpa (default), eager, flash_attention_2, ...")


@dataclass(kw_only=True)
class OptimArguments:
    """The optimiser and schedule; the defaults are the paper's recipe."""

    epochs: float = option(10, "passes over the training set (default: 10)")
    batch_size: int = option(64, "per-device batch size (default: 64)")
    gradient_accumulation_steps: int = option(1, "optimiser step every N batches (default: 1)")
    learning_rate: float = option(1e-3, "peak learning rate (default: 1e-3)")
    weight_decay: float = option(0.3, "AdamW weight decay on all parameters (default: 0.3)")
    betas: tuple[float, float] = option((0.9, 0.95), "AdamW betas (default: 0.9 0.95)")
    warmup_ratio: float = option(0.01, "share of steps in linear warm-up (default: 0.01)")
    min_lr_ratio: float = option(0.001, "cosine floor as a fraction of the lr")
    max_grad_norm: float | None = option(None, "clip gradients to this norm (default: off)")
    seed: int = option(0, "seed of the weights, data order and augmentation (default: 0)")


@dataclass(kw_only=True)
class RunArguments:
    """Where the run writes, how it checkpoints and reports."""

    output_dir: Path = option(help="the checkpoint folder this run writes")
    overwrite: bool = option(False, "replace an output folder that holds another run")
    resume: bool = option(False, "continue the run in --output-dir from its last checkpoint")
    eval_every: int = option(0, "evaluate every N optimiser steps (0: each epoch)")
    save_every: int = option(0, "save a resume checkpoint every N steps (0: each epoch)")
    stop_after: int | None = option(
        None,
        "stop after N optimiser steps of this invocation without a final save, as a killed job would "
        "(for time-boxed jobs; continue with --resume)",
    )
    report_to: str = option("none", "experiment tracker (default: none)", choices=REPORT_TO)
    push_to_hub: str | None = option(None, "publish the final folder to this Hub repository", metavar="REPO_ID")
    progress: bool = option(True, "hide progress bars", flag="--no-progress")


@dataclass(kw_only=True)
class TrainConfig(RunArguments, OptimArguments, ModelArguments, DataArguments):
    """Everything `lastvit.training.train` needs. Fields are the `lastvit-train` flags with dashes
    turned into underscores (`--no-progress` is ``progress=False``); `dataset` may be a
    `datasets.DatasetDict`."""

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.betas = tuple(self.betas)
        if self.top_k is not None and self.top_k_ratio is not None:
            raise ConfigError("pass only one of --top-k and --top-k-ratio")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if self.pooling is not None and self.pooling not in POOLING_TYPES:
            raise ConfigError(f"unknown pooling {self.pooling!r}; choose one of {list(POOLING_TYPES)}")
        if self.report_to not in REPORT_TO:
            raise ConfigError(f"unknown --report-to {self.report_to!r}; choose one of {list(REPORT_TO)}")


def add_train_arguments(parser, defaults: dict | None = None, help: dict | None = None, required=()) -> None:
    """The `TrainConfig` flags in four groups (data, model, optimisation, run); `defaults`, `help` and
    `required` adjust flags for one CLI (e.g. lastvit-finetune-peft's milder weight decay)."""
    from lastvit.arguments import add_arguments
    from lastvit.data.arguments import add_data_arguments

    add_data_arguments(parser.add_argument_group("data"), defaults=defaults)
    add_arguments(parser.add_argument_group("model"), ModelArguments, defaults=defaults, help=help, required=required)
    add_arguments(
        parser.add_argument_group("optimisation (the paper's recipe by default)"), OptimArguments, defaults=defaults
    )
    add_arguments(parser.add_argument_group("run"), RunArguments, defaults=defaults)
