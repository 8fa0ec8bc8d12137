"""The data flags every CLI shares (`--dataset`, `--data-dir`, `--eval-split`, `--image-column`, ...),
defined once as a dataclass. A CLI adds the ones it uses:

    from lastvit.data.arguments import DataArguments, add_data_arguments
    add_data_arguments(parser.add_argument_group("data"), include=("dataset", "data_dir", "eval_split"))
    data = DataArguments.from_args(parser.parse_args())

Importing this module imports neither torch nor datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lastvit.arguments import add_arguments, from_args, option

SCENES = "scenes"


@dataclass(kw_only=True)
class DataArguments:
    """Where the images come from and how they are read. `dataset` may also be an already built
    `datasets.DatasetDict` when called from Python."""

    dataset: Any = option(
        SCENES,
        "'scenes' (built-in, offline), 'imagefolder' (with --data-dir), a save_to_disk folder, "
        "or a Hub dataset name (default: scenes)",
    )
    data_dir: str | None = option(None, "folder of class subfolders for --dataset imagefolder")
    train_split: str = option("train", "training split name (default: train)")
    eval_split: str | None = option(None, "evaluation split (default: validation, else test)")
    image_column: str = option("image", "column holding the images (default: image)")
    label_column: str = option("label", "column holding class indices (default: label)")
    scenes_train: int = option(4000, "scenes: training images (default: 4000)")
    scenes_test: int = option(1000, "scenes: test images (default: 1000)")
    scenes_clutter: int = option(0, "scenes: clutter fragments per image")
    on_bad_image: str = option(
        "stop",
        "an unreadable image stops the run naming the file, or is skipped and counted",
        choices=("stop", "skip"),
    )
    crop_scale_min: float = option(0.08, "smallest area fraction of RandomResizedCrop (default: 0.08)")
    num_workers: int = option(0, "DataLoader worker processes (default: 0)")

    @property
    def dataset_name(self) -> str:
        """How cards and logs name the data: the flag's value, or a note for an in-memory dataset."""
        return self.dataset if isinstance(self.dataset, str) else "<in-memory DatasetDict>"

    @classmethod
    def from_args(cls, namespace, **overrides) -> DataArguments:
        return from_args(cls, namespace, **overrides)


def add_data_arguments(parser, include=None, defaults: dict | None = None, help: dict | None = None) -> None:
    """Add the data flags (all, or those named in `include`) to `parser` or an argument group;
    `defaults`/`help` override a flag's default or help text for one CLI (e.g. evaluate's
    `--eval-split` help says "split to evaluate")."""
    add_arguments(parser, DataArguments, include=include, defaults=defaults, help=help)
