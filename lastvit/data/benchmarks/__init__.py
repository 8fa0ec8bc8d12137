"""Readers for the paper's benchmarks in the on-disk layouts people already have.

One module per format family, each a lazy `torch.utils.data.Dataset` (`common.BenchmarkDataset`):
the constructor reads only the annotations (file lists, boxes, sizes); `__getitem__` decodes one
image (and its label map), so a DataLoader's workers do the decoding and resizing and no
whole-dataset tensor is ever built.

- `imagenet`: ImageNet val with boxes (the devkit's per-image XML, or Kaggle's
  ``LOC_val_solution.csv`` + ``LOC_synset_mapping.txt``), the authors' Point-in-Box filter;
  class-folder splits for k-NN and the linear probe.
- `voc`: PASCAL VOC 2007/2012 detection XML (LOST's CorLoc boxes) and segmentation PNGs.
- `coco`: COCO instances JSON (COCO20k: LOST's image list).
- `segmentation_suites`: the zero-shot segmentation sets as SCLIP evaluates them (VOC20/21,
  Pascal Context 59, ADE20K, Cityscapes, COCO-Stuff, COCO-Object).
- `in9`: the ImageNet-9 backgrounds challenge.
- `options`: the benchmark names and the `lastvit-benchmark` options (imports neither torch nor PIL).

Every sample is a dict: ``pixel_values`` (the transformed image, or the PIL image without a
transform), ``index``, ``id``, ``size`` (original ``(width, height)``) and, as the benchmark has
them, ``label``, ``boxes`` (``(x0, y0, x1, y1)`` in original pixels) and ``target`` (an integer
label map, 255 = ignore). Importing this package imports nothing heavy.
"""
