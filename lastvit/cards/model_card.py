"""Model cards for LastViT checkpoints, one template for all (`lastvit.cards.template`): the authors'
released checkpoints (`released`), converted checkpoints (`converted`), and trained or fine-tuned runs
(`trained`).

Regenerate the committed cards with ``python -m lastvit.cards.model_card``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .converted import converted_model_card
from .released import RELEASE_URLS, RELEASED_CHECKPOINTS, ReleasedCheckpoint, released_model_card, write_released_cards
from .template import CITATION, PAPER, PAPER_URL, describe_config, render_model_card
from .trained import trained_model_card

__all__ = [
    "CITATION",
    "PAPER",
    "PAPER_URL",
    "RELEASED_CHECKPOINTS",
    "RELEASE_URLS",
    "ReleasedCheckpoint",
    "converted_model_card",
    "describe_config",
    "released_model_card",
    "render_model_card",
    "trained_model_card",
    "write_released_cards",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the committed model cards of the released checkpoints.")
    parser.add_argument("--output-dir", type=Path, default=Path("model_cards"), help="where the cards go")
    args = parser.parse_args(argv)
    for path in write_released_cards(args.output_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
