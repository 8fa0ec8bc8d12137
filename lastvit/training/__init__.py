"""Training: typed configs (`config`), the Accelerate loop (`trainer.train`), the learning-rate
schedule (`schedule`) and PEFT adapters (`peft`).

    from lastvit.training import TrainConfig, train
    results = train(TrainConfig(dataset="scenes", preset="micro", epochs=3, output_dir="runs/micro"))

`train` and the PEFT helpers import torch when first used, so the configs stay light to import.
"""

from .config import PRESETS, ConfigError, ModelArguments, OptimArguments, RunArguments, TrainConfig

__all__ = [
    "PRESETS",
    "ConfigError",
    "ModelArguments",
    "OptimArguments",
    "RunArguments",
    "TrainConfig",
    "TrainingStopped",
    "train",
]


def __getattr__(name):
    if name in ("train", "TrainingStopped"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
