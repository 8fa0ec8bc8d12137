"""Captions and a download-free tokenizer for image-text training on the scenes benchmark.

A scene's caption names its class and, by default, its background ("a photo of a bird on pine wood"),
from a few templates picked by a seeded generator, so a run is reproducible. With
``background_rate < 1`` only that share of captions names the background (the rest name the object
alone), as web alt-text sometimes names the setting: the background words are then a shortcut that
matches image and text without the object, the lazy aggregation LazyStrike is meant to avoid. The tokenizer is a word-level
vocabulary trained on those captions (plus the zero-shot prompts) with the `tokenizers` library and
wrapped as a `PreTrainedTokenizerFast`, saved in the model folder; real image-text data brings its
own text column and may bring any transformers tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath

import numpy as np

from lastvit.errors import LastViTUserError

TEMPLATES = (
    "a photo of a {cls} on {background}.",
    "a {cls} in front of {background}.",
    "a picture of a {cls} over {background}.",
    "a small {cls} on a {background} background.",
)
OBJECT_TEMPLATES = ("a photo of a {cls}.", "a {cls}.", "a picture of a {cls}.")
# Prompts for zero-shot classification; "This is a photo of {}." is the pipeline's default.
PROMPTS = ("a photo of a {}.", "This is a photo of {}.")
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}


class CaptionError(LastViTUserError):
    """Bad image-text data: the message names the problem and the fix."""


def readable(name: str) -> str:
    """`small_animal` -> `small animal`; `gimp/Wood/pine.pat` -> `pine` (file stem, no digits)."""
    stem = PurePosixPath(name).stem if "/" in name or "." in name else name
    words = re.sub(r"[\d_\-]+", " ", stem).strip().lower()
    return re.sub(r"\s+", " ", words) or "texture"


def scene_captions(
    labels: Sequence[int],
    background_ids: Sequence[str],
    class_names: Sequence[str],
    seed: int,
    background_rate: float = 1.0,
) -> list[str]:
    """One caption per scene: a seeded template with the class name and, for a `background_rate`
    share of scenes, the background's name (`TEMPLATES`; the others use `OBJECT_TEMPLATES`)."""
    if not 0.0 <= background_rate <= 1.0:
        raise CaptionError(f"background_rate is the share of captions naming the background; got {background_rate}.")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(TEMPLATES), size=len(labels))
    templates = [TEMPLATES[pick] for pick in picks]
    if background_rate < 1:  # drawn after `picks`, so background_rate=1 gives the captions it always gave
        object_only = rng.random(len(labels)) >= background_rate
        object_picks = rng.integers(0, len(OBJECT_TEMPLATES), size=len(labels))
        templates = [OBJECT_TEMPLATES[o] if only else t for t, only, o in zip(templates, object_only, object_picks)]
    return [
        template.format(cls=readable(class_names[label]), background=readable(background))
        for template, label, background in zip(templates, labels, background_ids)
    ]


def check_captions(captions: Sequence, where: str) -> None:
    """Every caption must be a non-empty string."""
    for index, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            raise CaptionError(
                f"{where}: caption {index} is {caption!r}; every image needs a non-empty text. Fix or drop that row."
            )


def train_word_tokenizer(texts: Iterable[str], max_length: int = 32):
    """A word-level `PreTrainedTokenizerFast` (lower-cased, split on whitespace and punctuation) that
    ends every text with [EOS], CLIP's pooled position; ids: [PAD]=0, [UNK]=1, [BOS]=2, [EOS]=3."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS.values()))
    tokenizer.train_from_iterator(list(texts) + [p.format("") for p in PROMPTS], trainer=trainer)
    eos = SPECIAL_TOKENS["eos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, 3)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=max_length, padding_side="right", **SPECIAL_TOKENS
    )


def tokenize(tokenizer, captions: Sequence[str], max_length: int) -> dict:
    """Pad to the batch's longest caption, truncate to `max_length` keeping [EOS] last."""
    return tokenizer(list(captions), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
