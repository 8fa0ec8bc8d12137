"""The paper's learning-rate schedule as a `LambdaLR` factor."""

import math


def lr_lambda(total_steps: int, warmup_ratio: float, min_lr_ratio: float):
    """1% linear warm-up from 0.1x, then cosine from 1x to `min_lr_ratio`x (the paper's schedule)."""
    warmup = max(1, round(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
