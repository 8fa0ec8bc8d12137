"""Model cards for LastViT checkpoints, one template for all (`lastvit.cards.template`): the authors'
released checkpoints (`released`) and trained or fine-tuned runs (`trained`). The card of a converted
checkpoint is written by the conversion room (`lastvit.conversion.cards`) with the same template.

The committed cards of the released checkpoints (`model_cards/<name>/README.md`) are generated, never
edited by hand; regenerate them with

    python -c "from lastvit.cards.released import write_released_cards; write_released_cards('model_cards')"

(`tests/test_conversion_cards.py` compares them with what `released_model_card` renders).
"""

from __future__ import annotations

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
    "describe_config",
    "released_model_card",
    "render_model_card",
    "trained_model_card",
    "write_released_cards",
]
