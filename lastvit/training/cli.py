"""What the training CLIs share after parsing: run the training and turn known failures into one line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from .config import ConfigError


def run_training(
    make_config: Callable[[], tuple],
) -> int:
    """``make_config()`` returns ``(TrainConfig, train keyword arguments)``. Prints the results as
    JSON (main process only); exit code 2 for contradicting options, 1 for bad data, a bad model
    path, a Hub problem or a stopped run, each as one line naming the problem and the fix."""
    try:
        config, train_kwargs = make_config()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from lastvit.errors import LastViTUserError

    from .trainer import train

    try:
        results = train(config, **train_kwargs)
    except LastViTUserError as error:  # bad data, model path, Hub access, a stopped run...: one line
        print(f"error: {error}", file=sys.stderr)
        return 1
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(results, indent=2))
    return 0
