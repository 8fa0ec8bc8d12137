"""lastvit-scenes: generate the offline scenes benchmark (`lastvit.data.scenes.build_scenes`) and save it.

For example:

    lastvit-scenes --num-train 20000 --num-test 2000 --output data/scenes
    lastvit-scenes --objects my_cutouts/ --backgrounds my_photos/ --output data/mine
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lastvit.arguments import add_arguments, option
from lastvit.data.scenes import (
    BACKGROUND_SOURCES,
    DEFAULT_BACKGROUND_SOURCES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SCALE_RANGE,
    INSTALL_COMMAND,
    VARIANTS,
    ScenesSourceError,
    build_scenes,
    export_imagefolder,
)
from lastvit.files import write_folder


@dataclass(kw_only=True)
class ScenesArguments:
    variant: str = option(
        "scenes",
        "scenes: Tux Paint photo cut-outs in 7 classes; fashion: Fashion-MNIST items at half opacity",
        choices=VARIANTS,
    )
    num_train: int = option(20000, "number of training images (default 20000)")
    num_test: int = option(2000, "number of test images (default 2000)")
    image_size: int | None = option(None, "image side in pixels (default 64; 48 for fashion)")
    seed: int = option(0, "fixes the held-out instances and backgrounds and every image (default 0)")
    clutter: int = option(0, "fragments of objects of other classes per image (default 0)")
    objects: Path | None = option(
        None,
        "your own cut-outs: one sub-folder per class (its name is the class) of RGBA images; scenes only",
        metavar="DIR",
    )
    backgrounds: Path | None = option(
        None, "your own backgrounds: a folder of images, searched recursively (.pat textures are tiled)", metavar="DIR"
    )
    background_sources: str = option(
        ",".join(DEFAULT_BACKGROUND_SOURCES),
        f"comma-separated, among {','.join(BACKGROUND_SOURCES)} (default: the Debian ones; skimage and sklearn "
        "need those packages); ignored with --backgrounds",
    )
    test_fraction: float = option(
        0.25, "share of the object instances of each class and of the backgrounds held out for test (default 0.25)"
    )
    output: Path | None = option(
        None, "save the DatasetDict here with save_to_disk (reload: datasets.load_from_disk(DIR))", metavar="DIR"
    )
    imagefolder: Path | None = option(
        None,
        "write an imagefolder with metadata.jsonl and masks here (reload: lastvit.data.scenes.load_imagefolder(DIR))",
        metavar="DIR",
    )
    scale_range: tuple[float, float] = option(
        DEFAULT_SCALE_RANGE,
        "the object's longer side as a share of the image side (default 0.2 0.45)",
        metavar=("LOW", "HIGH"),
    )
    opacity: float | None = option(None, "object opacity (default: 1 for scenes, 0.5 for fashion)")
    overwrite: bool = option(False, "replace existing --output / --imagefolder folders")


OPTIONS = (ScenesArguments,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-scenes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Generate the offline scenes benchmark: real cut-outs on real backgrounds, exact boxes and masks,\n"
            "held-out object instances and backgrounds in the test split. Saves a datasets.DatasetDict (--output)\n"
            "and/or an imagefolder (--imagefolder). The default sources are Debian files; install them with:\n\n"
            f"    {INSTALL_COMMAND}"
        ),
    )
    add_arguments(parser, ScenesArguments)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output is None and args.imagefolder is None:
        parser.error("give --output DIR and/or --imagefolder DIR: where should the dataset go?")
    if args.num_train < 0 or args.num_test < 0:
        parser.error("--num-train and --num-test must be >= 0")
    if args.clutter < 0:
        parser.error("--clutter must be >= 0")
    if args.variant == "fashion" and args.objects is not None:
        parser.error("--objects applies to --variant scenes; the fashion variant's objects are Fashion-MNIST items")
    args.image_size = args.image_size or DEFAULT_IMAGE_SIZE[args.variant]
    if args.image_size < 8:
        parser.error("--image-size must be at least 8")
    if not 0 < args.test_fraction < 1:
        parser.error("--test-fraction must be between 0 and 1 (exclusive)")
    args.background_sources = tuple(s.strip() for s in args.background_sources.split(",") if s.strip())
    unknown = set(args.background_sources) - set(BACKGROUND_SOURCES)
    if unknown or not args.background_sources:
        parser.error(f"--background-sources: unknown {sorted(unknown)}; choose from {','.join(BACKGROUND_SOURCES)}")
    for folder in (args.output, args.imagefolder):
        if folder is not None and folder.exists() and any(folder.iterdir()) and not args.overwrite:
            parser.error(f"{folder} already holds files; pass --overwrite to replace them, or choose another folder")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        dataset = build_scenes(
            args.num_train,
            args.num_test,
            args.image_size,
            args.seed,
            args.clutter,
            args.objects,
            args.backgrounds,
            variant=args.variant,
            background_sources=args.background_sources,
            test_fraction=args.test_fraction,
            scale_range=tuple(args.scale_range),
            opacity=args.opacity,
            progress=True,
        )
    except (ScenesSourceError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output is not None:
        write_folder(args.output, lambda path: dataset.save_to_disk(str(path)))
        print(f"saved {args.output}  (reload: datasets.load_from_disk({str(args.output)!r}))")
    if args.imagefolder is not None:
        write_folder(args.imagefolder, lambda path: export_imagefolder(dataset, path))
        print(f"wrote {args.imagefolder}  (reload: lastvit.data.scenes.load_imagefolder({str(args.imagefolder)!r}))")
    for split, part in dataset.items():
        names = part.features["label"].names
        counts = np.bincount(np.asarray(part["label"], dtype=np.int64), minlength=len(names))
        print(f"{split}: {part.num_rows} images; per class {dict(zip(names, counts.tolist()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
