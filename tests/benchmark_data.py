"""Tiny benchmark datasets written in each exact on-disk format, and hand-made models whose maps are
known, for the reader and `lastvit-benchmark` tests (no download).

Images are black with red rectangles: the `localiser` model's Patch Score is the red mean of a
patch (monotonically), so its arg-max patch and its mean + std mask are the red patches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modeling_lastvit import LastViTConfig, LastViTForImageClassification, LastViTModel

SIZE, PATCH = 32, 8


def red_image(width: int, height: int, boxes=(), colour=(255, 0, 0)) -> Image.Image:
    """Black, with `colour` rectangles ``(x0, y0, x1, y1)`` (x1, y1 exclusive)."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        array[y0:y1, x0:x1] = colour
    return Image.fromarray(array)


def uniform_image(colour, size: int = SIZE) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8))


# --------------------------------------------------------------------------- models


def _config(**overrides) -> LastViTConfig:
    return LastViTConfig(
        **{
            "image_size": SIZE,
            "patch_size": PATCH,
            "hidden_size": 4,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "intermediate_size": 8,
            **overrides,
        }
    )


@torch.no_grad()
def _red_tokens(tower) -> None:
    """Blocks as the identity, patch token = (s, -s, 1, -1) with s = the patch's mean normalised red."""
    for parameter in tower.encoder.parameters():
        parameter.zero_()
    conv = tower.embeddings.patch_embeddings.projection
    conv.weight.zero_()
    conv.weight[0, 0] = 1.0 / PATCH**2
    conv.weight[1, 0] = -1.0 / PATCH**2
    conv.bias.copy_(torch.tensor([0.0, 0.0, 1.0, -1.0]))
    tower.embeddings.position_embeddings.zero_()
    if tower.embeddings.cls_token is not None:
        tower.embeddings.cls_token.copy_(torch.tensor([1.0, -1.0, 0.0, 0.0]))
    tower.layernorm.weight.fill_(1.0)
    tower.layernorm.bias.zero_()


def _save(model, folder: Path) -> Path:
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return folder


def save_localiser(folder: Path) -> Path:
    """A LastViT backbone (CLS pooling) whose Patch Score is s / sqrt(s^2 + 1), s = the patch's red
    mean in [-1, 1]: highest on the red patches."""
    model = LastViTModel(_config(pooling="cls")).eval()
    _red_tokens(model)
    return _save(model, folder)


def save_red_classifier(folder: Path, num_labels: int = 1000, positive: int = 151, negative: int = 7) -> Path:
    """A mean-pooling LastViT classifier: class `positive` for images more red than black, else
    `negative` (ImageNet 151 = a dog, 7 = a bird in ImageNet-9); its pooled feature separates the two."""
    model = LastViTForImageClassification(_config(pooling="mean", num_labels=num_labels)).eval()
    _red_tokens(model.base_model)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-10.0)
        model.classifier.weight[positive, 0] = 10.0
        model.classifier.weight[negative, 0] = -10.0
        model.classifier.bias[positive] = model.classifier.bias[negative] = 0.0
    return _save(model, folder)


def save_constant_clip(folder: Path, class_names: list[str], answer: str | None = None, feature=None) -> Path:
    """A LastViT-CLIP whose every patch feature (and image feature) is one vector: `feature`, or the text
    embedding of `answer` in the 80 templates, so that zero-shot segmentation labels every pixel with
    the class named `answer`."""
    from lastvit.clip.captions import train_word_tokenizer
    from lastvit.data.benchmarks.segmentation_suites import read_templates
    from lastvit.measure.zero_shot import class_text_embeddings
    from modeling_lastvit import LastViTCLIPModel

    from .tiny import tiny_clip_config

    templates = read_templates()
    tokenizer = train_word_tokenizer([t.format(name) for name in class_names for t in templates[:3]])
    config = tiny_clip_config(tokenizer, pooling="mean")
    # 112 px windows of 16 px patches: few sliding windows over images resized to SCLIP's 336-560 px
    config.vision_config.image_size, config.vision_config.patch_size = 112, 16
    model = LastViTCLIPModel(config).eval()
    target = class_text_embeddings(model, tokenizer, [answer], templates)[0] if feature is None else feature
    tower = model.vision_model
    with torch.no_grad():
        for parameter in tower.encoder.parameters():
            parameter.zero_()
        tower.embeddings.patch_embeddings.projection.weight.zero_()
        tower.embeddings.patch_embeddings.projection.bias.zero_()
        tower.embeddings.position_embeddings.zero_()
        tower.layernorm.weight.fill_(1.0)
        tower.layernorm.bias.zero_()
        tower.layernorm.bias[0] = 1.0
        tower.visual_projection.weight.zero_()
        tower.visual_projection.weight[:, 0] = torch.as_tensor(target)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return folder


# --------------------------------------------------------------------------- formats


def imagenet_xml(wnid_boxes, size) -> str:
    objects = "".join(
        f"<object><name>{wnid}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for wnid, b in wnid_boxes
    )
    return (
        f"<annotation><filename>x</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"<depth>3</depth></size>{objects}</annotation>"
    )


# (image id, image size, red rectangles, annotated boxes with their wnid)
IMAGENET_CASES = [
    ("ILSVRC2012_val_00000001", (48, 48), [(8, 8, 24, 24)], [("n02", (8, 8, 24, 24))]),  # hit
    ("ILSVRC2012_val_00000002", (48, 48), [(8, 8, 24, 24)], [("n01", (30, 30, 44, 44))]),  # miss
    ("ILSVRC2012_val_00000003", (48, 48), [(8, 8, 24, 24)], [("n01", (8, 8, 24, 24)), ("n01", (30, 30, 44, 44))]),
    ("ILSVRC2012_val_00000004", (48, 48), [(8, 8, 24, 24)], [("n02", (0, 0, 40, 40))]),  # box > 25%
    ("ILSVRC2012_val_00000005", (64, 48), [(36, 20, 52, 36)], [("n01", (36, 20, 52, 36))]),  # hit
]
SYNSETS = ("n01", "n02")


def write_imagenet(root: Path, layout: str, cases=IMAGENET_CASES, synset_mapping: bool = True) -> Path:
    """ImageNet val with boxes in the devkit's XML layout (``"devkit"``) or Kaggle's (``"kaggle"``)."""
    if layout == "kaggle":
        images = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
        images.mkdir(parents=True)
        rows = ["ImageId,PredictionString"]
        for image_id, _, _, boxes in cases:
            rows.append(image_id + "," + " ".join(f"{w} {b[0]} {b[1]} {b[2]} {b[3]}" for w, b in boxes) + " ")
        (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    else:
        images, xml = root / "ILSVRC2012_img_val", root / "val"
        images.mkdir(parents=True)
        xml.mkdir()
        for image_id, size, _, boxes in cases:
            (xml / f"{image_id}.xml").write_text(imagenet_xml(boxes, size))
    for image_id, size, red, _ in cases:
        red_image(*size, red).save(images / f"{image_id}.JPEG", quality=100)
    if synset_mapping:
        (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} name of {w}\n" for w in SYNSETS))
    return root


def voc_xml(objects, size) -> str:
    body = "".join(
        f"<object><name>{o['name']}</name><truncated>{int(o.get('truncated', 0))}</truncated>"
        f"<difficult>{int(o.get('difficult', 0))}</difficult><bndbox><xmin>{o['box'][0]}</xmin>"
        f"<ymin>{o['box'][1]}</ymin><xmax>{o['box'][2]}</xmax><ymax>{o['box'][3]}</ymax></bndbox></object>"
        for o in objects
    )
    return (
        f"<annotation><folder>VOC</folder><filename>x.jpg</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{body}</annotation>"
    )


# The red object covers patches (1..2, 1) of a 6 x 5 grid: LOST box (8, 8, 24, 16) = VOC (9, 9, 24, 16).
VOC_DETECTION_CASES = [
    ("000001", [(8, 8, 24, 16)], [{"name": "dog", "box": (9, 9, 24, 16)}]),  # hit (IoU 1)
    ("000002", [(8, 8, 24, 16)], [{"name": "dog", "box": (25, 25, 48, 40)}]),  # miss
    ("000003", [(8, 8, 24, 16)], [{"name": "cat", "box": (9, 9, 24, 16), "difficult": 1}]),  # hard only
]


def voc_palette() -> list[int]:
    palette = [0] * 768
    palette[15 * 3 : 15 * 3 + 3] = [192, 128, 128]
    palette[255 * 3 : 255 * 3 + 3] = [224, 224, 192]
    return palette


def save_label_png(path: Path, labels: np.ndarray, palette: bool = False) -> None:
    """A label map as a PNG of class indices: palette mode (VOC's) or grayscale."""
    array = np.ascontiguousarray(labels.astype(np.uint8))
    image = Image.frombytes("P" if palette else "L", array.shape[::-1], array.tobytes())
    if palette:
        image.putpalette(voc_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_voc(root: Path, year: str = "2007", cases=VOC_DETECTION_CASES, size=(48, 40)) -> Path:
    """``VOCdevkit/VOC<year>`` with Annotations, JPEGImages and ImageSets/Main/trainval.txt."""
    folder = root / "VOCdevkit" / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for image_id, red, objects in cases:
        red_image(*size, red).save(folder / "JPEGImages" / f"{image_id}.jpg", quality=100)
        (folder / "Annotations" / f"{image_id}.xml").write_text(voc_xml(objects, size))
    (folder / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{c[0]}\n" for c in cases))
    return root


def voc_segmentation_cases():
    """Two 32 x 32 images: person (15) on the red patches (rows 8..15, cols 8..23) with a void line
    (255) under it; in the second the person's mask is away from the red."""
    first = np.zeros((SIZE, SIZE), dtype=np.int64)
    first[8:16, 8:24] = 15
    first[16, 8:24] = 255
    second = np.zeros((SIZE, SIZE), dtype=np.int64)
    second[24:32, 0:8] = 15
    return [("2008_000001", [(8, 8, 24, 16)], first), ("2008_000002", [(8, 8, 24, 16)], second)]


def write_voc_segmentation(root: Path, cases=None, size=(SIZE, SIZE)) -> Path:
    """``VOCdevkit/VOC2012`` with SegmentationClass palette PNGs and ImageSets/Segmentation/val.txt."""
    cases = voc_segmentation_cases() if cases is None else cases
    folder = root / "VOCdevkit" / "VOC2012"
    (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (folder / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (folder / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for image_id, red, labels in cases:
        red_image(labels.shape[1], labels.shape[0], red).save(folder / "JPEGImages" / f"{image_id}.jpg", quality=100)
        save_label_png(folder / "SegmentationClass" / f"{image_id}.png", labels, palette=True)
    (folder / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{c[0]}\n" for c in cases))
    return root


def write_imagefolder(root: Path, images: dict[str, list]) -> Path:
    """``root/<class>/<i>.png`` for ``{class: [PIL images]}``."""
    for name, members in images.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(members):
            image.save(root / name / f"{i}.png")
    return root


def write_suite(name: str, root: Path, labels: np.ndarray) -> Path:
    """One image (black) and its label map `labels` (in the set's raw encoding) in the layout of the
    zero-shot segmentation set `name` (`lastvit.data.benchmarks.segmentation_suites`)."""
    height, width = labels.shape
    image = red_image(width, height)
    if name in ("voc20", "voc21"):
        return write_voc_segmentation(root, [("2008_000001", [], labels)])
    if name == "context59":
        folder = root / "VOCdevkit" / "VOC2010"
        (folder / "JPEGImages").mkdir(parents=True)
        image.save(folder / "JPEGImages" / "2008_000001.jpg")
        save_label_png(folder / "SegmentationClassContext" / "2008_000001.png", labels)
        (folder / "ImageSets" / "SegmentationContext").mkdir(parents=True)
        (folder / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000001\n")
    elif name == "ade20k":
        folder = root / "ADEChallengeData2016"
        (folder / "images" / "validation").mkdir(parents=True)
        image.save(folder / "images" / "validation" / "ADE_val_00000001.jpg")
        save_label_png(folder / "annotations" / "validation" / "ADE_val_00000001.png", labels)
    elif name == "cityscapes":
        (root / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
        image.save(root / "leftImg8bit" / "val" / "aachen" / "aachen_000000_000019_leftImg8bit.png")
        save_label_png(root / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png", labels)
    else:  # coco-stuff, coco-object: mmseg's / SCLIP's converted maps
        suffix = "_labelTrainIds.png" if name == "coco-stuff" else "_instanceTrainIds.png"
        (root / "images" / "val2017").mkdir(parents=True)
        image.save(root / "images" / "val2017" / "000000000139.jpg")
        save_label_png(root / "annotations" / "val2017" / f"000000000139{suffix}", labels)
    return root
