"""The benchmark names (`BENCHMARKS`) and the options of ``lastvit-benchmark`` (`BenchmarkOptions`),
torch-free so that ``--help`` stays light."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lastvit.arguments import option


class BenchmarkInfo(NamedTuple):
    kind: str
    """pib, corloc, coarse-seg, zero-shot, in9, knn or linear-probe."""
    summary: str
    layout: str
    paper: str
    """The paper's numbers for it (table and values), for the report."""


BENCHMARKS = {
    "imagenet-pib": BenchmarkInfo(
        "pib",
        "Point-in-Box of the Patch Score on ImageNet val (Resize 256 / CenterCrop 224; single object, box < 25%)",
        "DIR = ImageNet val with boxes: LOC_val_solution.csv + ILSVRC/Data/CLS-LOC/val/ (Kaggle) or the devkit's "
        "val/*.xml with ILSVRC2012_img_val/; LOC_synset_mapping.txt sets the class order",
        "Tab. 3: ViT-B/16 42.7 -> 55.1, DINO 44.5 -> 69.7, CLIP 39.8 -> 50.1 (ResNet-50 68.4)",
    ),
    "imagenet-zeroshot": BenchmarkInfo(
        "zero-shot-cls",
        "zero-shot top-1 / top-5 on ImageNet val (CLIP's 1000 class names in its 80 templates)",
        "DIR = ImageNet val with boxes, as for imagenet-pib (the labels come from the annotations; no filter)",
        "Tab. 8 (OpenCLIP B/16): Attention-Pool 55.8, Max-Pool 53.1, K=1 53.5, K=49 55.8, K=98 56.2, K=196 55.3",
    ),
    "voc07-corloc": BenchmarkInfo(
        "corloc",
        "CorLoc on VOC07 trainval, LOST's protocol (full resolution, mean + std Patch-Score mask)",
        "DIR = VOC2007 (or VOCdevkit/ above it): Annotations/, JPEGImages/, ImageSets/Main/trainval.txt",
        "Tab. 7 (ViT-S/16 DINO): LOST 61.9, DINO+LazyStrike 64.4; Tab. 9 (sup. B/32): K=7 32.1",
    ),
    "voc12-corloc": BenchmarkInfo(
        "corloc",
        "CorLoc on VOC12 trainval, LOST's protocol",
        "DIR = VOC2012 (or VOCdevkit/ above it): Annotations/, JPEGImages/, ImageSets/Main/trainval.txt",
        "Tab. 7 (ViT-S/16 DINO): LOST 64.0, DINO+LazyStrike 67.6; Tab. 9 (sup. B/32): K=7 37.6",
    ),
    "coco20k-corloc": BenchmarkInfo(
        "corloc",
        "CorLoc on COCO20k (LOST's 19,817 train2014 images), LOST's protocol",
        "DIR = COCO: annotations/instances_train2014.json + train2014/ (or images/train2014/); "
        "--image-list LOST's coco_20k_filenames.txt (default DIR/coco_20k_filenames.txt)",
        "Tab. 7 (ViT-S/16 DINO): LOST 50.7, DINO+LazyStrike 51.6",
    ),
    "voc12-coarse-seg": BenchmarkInfo(
        "coarse-seg",
        "coarse segmentation Jaccard on VOC12 val (CRATE's protocol; mean + std Patch-Score mask)",
        "DIR = VOC2012: JPEGImages/, SegmentationClass/*.png, ImageSets/Segmentation/val.txt",
        "Tab. 6: sup. B/16 22.3 -> 32.8, sup. S/16 29.5 -> 41.9, DINO S/16 47.7 -> 55.1",
    ),
    "voc20-zeroshot": BenchmarkInfo(
        "zero-shot",
        "zero-shot segmentation mIoU, PASCAL VOC 20 classes (background ignored), SCLIP's protocol",
        "DIR = VOC2012: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/val.txt",
        "Tab. 4: CLIP-B/16 49.0 -> 75.0, CLIP-L/14 17.1 -> 72.4",
    ),
    "voc21-zeroshot": BenchmarkInfo(
        "zero-shot",
        "zero-shot segmentation mIoU, PASCAL VOC 21 classes (with background), SCLIP's protocol",
        "DIR = VOC2012: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/val.txt",
        "not in the paper's Tab. 4 (SCLIP's VOC21 setting)",
    ),
    "context59-zeroshot": BenchmarkInfo(
        "zero-shot",
        "zero-shot segmentation mIoU, Pascal Context 59 classes, SCLIP's protocol",
        "DIR = VOC2010 (mmseg's converted layout): JPEGImages/, SegmentationClassContext/, "
        "ImageSets/SegmentationContext/val.txt",
        "Tab. 4: CLIP-B/16 11.2 -> 15.2, CLIP-L/14 5.1 -> 15.1",
    ),
    "ade20k-zeroshot": BenchmarkInfo(
        "zero-shot",
        "zero-shot segmentation mIoU, ADE20K 150 classes, SCLIP's protocol",
        "DIR = ADEChallengeData2016 (or its parent): images/validation/, annotations/validation/",
        "Tab. 4: CLIP-B/16 3.1 -> 8.3, CLIP-L/14 1.6 -> 8.4",
    ),
    "cityscapes-zeroshot": BenchmarkInfo(
        "zero-shot",
        "zero-shot segmentation mIoU, Cityscapes 19 classes, SCLIP's protocol",
        "DIR = Cityscapes: leftImg8bit/val/<city>/, gtFine/val/<city>/*_gtFine_labelTrainIds.png (or _labelIds)",
        "Tab. 4: CLIP-B/16 6.5 -> 12.1, CLIP-L/14 2.7 -> 12.3",
    ),
    "coco-object-zeroshot": BenchmarkInfo(
        "zero-shot",
        "zero-shot segmentation mIoU, COCO-Object (80 things + background), SCLIP's protocol",
        "DIR = COCO-Stuff 164k: images/val2017/, annotations/val2017/*_instanceTrainIds.png (or the raw "
        "stuffthingmaps PNGs)",
        "Tab. 4: CLIP-B/16 8.8 -> 13.3, CLIP-L/14 3.0 -> 15.0",
    ),
    "coco-stuff-zeroshot": BenchmarkInfo(
        "zero-shot",
        "zero-shot segmentation mIoU, COCO-Stuff 171 classes, SCLIP's protocol",
        "DIR = COCO-Stuff 164k: images/val2017/, annotations/val2017/*_labelTrainIds.png (or the raw stuffthingmaps)",
        "Tab. 4: CLIP-B/16 7.2 -> 11.8, CLIP-L/14 3.2 -> 11.9",
    ),
    "in9-backgrounds": BenchmarkInfo(
        "in9",
        "ImageNet-9 backgrounds challenge: accuracy per variation and BG-gap (mixed_same - mixed_rand)",
        "DIR = the release's bg_challenge/: original/, mixed_same/, mixed_rand/ (+ only_fg/, only_bg_t/, ...), "
        "each val/<00_dog .. 08_fish>/",
        "not in the paper (a counterfactual check of where a classifier looks, Xiao et al. 2020)",
    ),
    "knn": BenchmarkInfo(
        "knn",
        "DINO's weighted k-NN top-1 (k = 20, T = 0.07) on the pooled feature",
        "DIR = class folders: train/<class>/*, val/<class>/* (ImageNet: val sorted into class folders)",
        "not a table of the paper (DINO reports it for its backbones)",
    ),
    "linear-probe": BenchmarkInfo(
        "linear-probe",
        "linear classifier on frozen pooled features (eval-transform features, no augmentation)",
        "DIR = class folders: train/<class>/*, val/<class>/*",
        "not a table of the paper",
    ),
}


def benchmark_help() -> str:
    """The names, one line each with the data layout, for ``--help``."""
    lines = []
    for name, info in BENCHMARKS.items():
        lines += [f"  {name}", f"      {info.summary}", f"      data: {info.layout}"]
    return "\n".join(lines)


@dataclass(kw_only=True)
class BenchmarkOptions:
    """Everything one ``lastvit-benchmark`` run needs (``benchmark`` is the positional NAME)."""

    benchmark: str = option(
        help="the benchmark (listed above)", flag="benchmark", metavar="NAME", choices=tuple(BENCHMARKS)
    )
    data_dir: Path = option(help="the dataset's folder, in the layout listed for NAME")
    model: str = option(help="a LastViT / LastViT-CLIP folder (e.g. a lastvit-convert output) or Hub id")
    output_dir: Path | None = option(None, "where report.md and report.json go (default: outputs/benchmarks/NAME)")
    overwrite: bool = option(False, "replace an existing --output-dir")
    batch_size: int = option(64, "images per model call (default: 64)")
    num_workers: int = option(4, "DataLoader processes that decode and resize (default: 4; 0 = in the main process)")
    device: str = option("auto", "auto (default: CUDA when available), cpu, cuda, cuda:1, ...")
    trust_remote_code: bool = option(False, "load a model whose classes are not this package's (runs its code)")
    limit: int | None = option(
        None, "evaluate only N images: the first N, or N spread over the classes of class folders (a quick check)"
    )
    no_single_object_filter: bool = option(
        False, "imagenet-pib: keep every image, not only the authors' single object with box area < 0.25 of the image"
    )
    image_list: Path | None = option(None, "coco20k-corloc: LOST's coco_20k_filenames.txt")
    remove_hards: bool = option(False, "voc*-corloc: LOST's --no_hard (drop truncated/difficult objects)")
    knn_k: int = option(20, "knn: neighbours (default: 20)")
    probe_epochs: int = option(100, "linear-probe: epochs over the cached features (default: 100)")
    progress: bool = option(True, "hide the progress bar", flag="--no-progress")

    @property
    def info(self) -> BenchmarkInfo:
        return BENCHMARKS[self.benchmark]

    def resolved_output_dir(self) -> Path:
        return self.output_dir if self.output_dir is not None else Path("outputs") / "benchmarks" / self.benchmark
