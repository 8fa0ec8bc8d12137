"""How fast `lastvit-benchmark` reads images, and how that compares with the model.

Generates an ImageNet-val-like set (``--images`` JPEGs of 500 x 375, Kaggle's ``LOC_val_solution.csv``
layout, one box each) and measures, on this machine:
1. the loader alone (decode + Resize 256 + CenterCrop 224 + normalise, `lastvit.data.benchmarks`
   through the benchmark's DataLoader) with 0, 1, 2, ... worker processes: images/s;
2. one whole ``imagenet-pib`` run (`lastvit.measure.benchmarks.run_benchmark`) of a randomly
   initialised LastViT (ViT-S/16 by default, LazyStrike K=1) at 224 px: the loader's and the model's
   images/s as its report.json records them.
Writes Markdown (``--out``, default benchmarks/RESULTS_LOADER.md) and JSON (``--json``).

    python -m benchmarks.bench_loader                       # 200 images, ViT-S/16, about a minute on 2 cores
    python -m benchmarks.bench_loader --images 1000 --preset base --device cuda --out /tmp/loader_gpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lastvit.training.config import PRESETS

SIZES = ("base", "small")
"""The 224 px presets of `lastvit.training.config.PRESETS` this benchmark runs."""


def write_images(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` 500 x 375 JPEGs (smooth noise and a rectangle) in Kaggle's ImageNet val layout."""
    rng = np.random.default_rng(seed)
    images = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    images.mkdir(parents=True)
    rows = ["ImageId,PredictionString"]
    for i in range(count):
        coarse = rng.integers(0, 255, (15, 20, 3), dtype=np.uint8)
        array = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.BICUBIC)).copy()
        x0, y0 = int(rng.integers(0, 350)), int(rng.integers(0, 250))
        array[y0 : y0 + 100, x0 : x0 + 120] = rng.integers(0, 255, 3)
        image_id = f"ILSVRC2012_val_{i + 1:08d}"
        Image.fromarray(array).save(images / f"{image_id}.JPEG", quality=90)
        rows.append(f"{image_id},n01440764 {x0} {y0} {x0 + 120} {y0 + 100}")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench\n")
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_loader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--preset", choices=SIZES, default="small")
    parser.add_argument("--run-workers", type=int, default=2, help="loader workers of the whole run (default: 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the model (default: 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS_LOADER.md"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from lastvit.data.benchmarks.imagenet import ImageNetBoxes
    from lastvit.data.benchmarks.options import BenchmarkOptions
    from lastvit.measure.benchmark_model import BenchmarkModel
    from lastvit.measure.benchmark_streaming import Throughput, eval_transform, stream
    from lastvit.measure.benchmarks import run_benchmark
    from modeling_lastvit import LastViTConfig, LastViTModel

    with tempfile.TemporaryDirectory() as tmp:
        data = write_images(Path(tmp) / "imagenet", args.images)
        torch.manual_seed(0)
        config = LastViTConfig(pooling="lazystrike", lazystrike_top_k=1, **PRESETS[args.preset]._asdict())
        mean, std = tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
        model = BenchmarkModel(LastViTModel(config).eval(), "backbone", mean, std)
        loader = {}
        for workers in args.workers:
            options = BenchmarkOptions(
                benchmark="imagenet-pib", data_dir=data, model="-", batch_size=args.batch_size,
                num_workers=workers, progress=False,
            )  # fmt: skip
            dataset = ImageNetBoxes(data, eval_transform(model, keep_native=False))
            timer = Throughput(torch.device("cpu"))
            start = time.perf_counter()
            for _ in stream(dataset, options, timer, "loader"):
                pass
            loader[workers] = round(len(dataset) / (time.perf_counter() - start), 1)
        options = BenchmarkOptions(
            benchmark="imagenet-pib", data_dir=data, model=f"random LastViT-{args.preset[0].upper()}/16",
            batch_size=args.batch_size, num_workers=args.run_workers, device=args.device, progress=False,
            no_single_object_filter=True,
        )  # fmt: skip
        report = run_benchmark(options, model)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}, "
        f"{args.threads} torch thread(s), device {report['device']}",
        "images": args.images,
        "batch_size": args.batch_size,
        "loader_alone_images_per_s": loader,
        "run": {"model": options.model, **report["throughput"]},
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    args.out.write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(results: dict) -> str:
    run = results["run"]
    lines = [
        "# lastvit-benchmark loader throughput",
        "",
        (
            "Written by `python -m benchmarks.bench_loader` (not edited by hand). "
            f"{results['images']} generated 500 x 375 JPEGs in Kaggle's ImageNet val layout, decoded and "
            "Resize 256 / CenterCrop 224 / normalised in the DataLoader's workers, batch "
            f"{results['batch_size']}. Machine: {results['machine']}."
        ),
        "",
        "## The loader alone",
        "",
        "| worker processes | images/s |",
        "|---|---|",
    ]
    lines += [f"| {workers} | {rate} |" for workers, rate in results["loader_alone_images_per_s"].items()]
    lines += [
        "",
        f"## A whole `imagenet-pib` run ({run['model']}, {run['num_workers']} workers)",
        "",
        "| | seconds | images/s |",
        "|---|---|---|",
        f"| model (forward + Patch Score + Point-in-Box) | {run['model_s']} | {run['model_images_per_s']} |",
        f"| waiting for the loader | {run['loader_wait_s']} | {run['loader_images_per_s']} |",
        f"| end to end | {run['wall_s']} | {run['end_to_end_images_per_s']} |",
        "",
        (
            "On a shared machine the figures move with the other jobs' load; the loader's share of the run is the "
            "point: while the model works, the workers prepare the next batches."
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
