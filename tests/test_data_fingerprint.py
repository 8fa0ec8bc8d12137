"""Generated data does not drift: the scenes are resampled by the project's own integer code
(`lastvit.data.resample`), not by Pillow, and the default study's splits have a committed hash
(`lastvit.data.fingerprint`), so any change in the generator's output fails here; so does a change to the
pre-training study's default design or scenes that its committed report (docs/study_pretraining) did not run."""

import hashlib
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from lastvit.data.fingerprint import scenes_fingerprint
from lastvit.data.resample import composite_over, fit_size, premultiply, resize, resize_array
from lastvit.study import pretraining
from lastvit.study.config import StudyConfig
from lastvit.study.runner import build_data
from tests.test_scenes import debian  # noqa: F401  (fixture: fails with the install command)

EXPECTED_DEFAULT_STUDY_DATA = {
    "test": "63811179d73227c306460c355a074644749d4dc71c3ae601cd256d3ec8bcdb08",
    "train": "6f240fb8c7f2e650cc4221c009652a065638bd229dda8eb64f839c4caf9a29d4",
    "validation": "316ddaaefd3a4868c0ac6c91ad50497b28e039663d1f91f0741a9cb886cd5ab5",
}
"""`scenes_fingerprint` of the data `lastvit-study` builds by default (CPU scale, data seed 0; test and
validation include their counterfactual renderings)."""
EXPECTED_RESAMPLED = {"box": "baa03859ba351399", "bilinear": "aa68b2ac210852e3", "bicubic": "c39c09d33e54aa43"}
"""md5 prefixes of two resizes of a seeded random image per filter (see the test): exact integer code."""


def _random_image(seed=0, shape=(37, 53, 3)):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_default_study_data_has_the_committed_fingerprint(debian):  # noqa: F811
    config = StudyConfig(scale="cpu", progress=False).resolved(cuda_available=False)
    found = scenes_fingerprint(build_data(config))
    assert found == EXPECTED_DEFAULT_STUDY_DATA, (
        f"The default study's data changed: committed {EXPECTED_DEFAULT_STUDY_DATA}, built here {found}. If the "
        "change is deliberate, update EXPECTED_DEFAULT_STUDY_DATA and regenerate docs/study and docs/study_pretraining "
        "in the pinned environment (constraints/study-cpu.txt); otherwise find what changed the pixels."
    )


def test_the_committed_pretraining_report_ran_the_default_design_on_the_scenes_built_here(debian):  # noqa: F811
    report = json.loads((Path(__file__).parents[1] / "docs" / "study_pretraining" / "report.json").read_text())
    defaults = pretraining.PretrainingStudyConfig(output_dir="unused", progress=False)
    recorded = json.loads(json.dumps(defaults.record()))
    where = ("output_dir", "overwrite", "progress")
    assert {k: v for k, v in report["config"].items() if k not in where} == {
        k: v for k, v in recorded.items() if k not in where
    }, "docs/study_pretraining no longer runs the default design: regenerate it (CONTRIBUTING.md)"
    found = scenes_fingerprint(pretraining.build_data(defaults))
    assert found == report["data_fingerprint"], (
        f"The pre-training study's scenes changed: committed {report['data_fingerprint']}, built here {found}; "
        "regenerate docs/study_pretraining (CONTRIBUTING.md) or find what changed the pixels."
    )


def test_resampling_gives_committed_pixels_for_every_filter_and_a_fractional_box():
    image = _random_image()
    digests = {
        name: hashlib.md5(
            resize_array(image, (19, 23), name).tobytes()
            + resize_array(image, (40, 30), name, (3.5, 2.25, 50, 35)).tobytes()
        ).hexdigest()[:16]
        for name in ("box", "bilinear", "bicubic")
    }
    assert digests == EXPECTED_RESAMPLED


def test_resampling_is_the_usual_antialiased_filter_within_one_level_of_pillow():
    image = _random_image(1, (60, 80, 3))
    for size, box in (((31, 17), None), ((64, 48), (5.5, 3.0, 70.0, 50.0)), ((160, 120), None)):
        ours = resize_array(image, size, "bilinear", box).astype(int)
        pillow = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, box=box)).astype(int)
        assert np.abs(ours - pillow).max() <= 1


def test_resampling_keeps_constants_and_same_size_images_and_averages_pairs_half_up():
    flat = np.full((13, 9, 4), 77, np.uint8)
    for name in ("box", "bilinear", "bicubic"):
        assert (resize_array(flat, (5, 21), name, (0.5, 1.25, 8.0, 12.0)) == 77).all()
    image = _random_image()
    assert (resize_array(image, (53, 37), "bicubic") == image).all()
    assert resize_array(np.array([[10, 11, 20, 30]], np.uint8), (2, 1), "box").tolist() == [[11, 25]]
    rgba = Image.fromarray(_random_image(2, (8, 6, 4)), "RGBA")
    assert resize(rgba, (3, 4)).mode == "RGBA" and resize(rgba, (3, 4)).size == (3, 4)
    with pytest.raises(ValueError, match="Unknown filter"):
        resize_array(image, (4, 4), "lanczos")


def test_premultiply_and_compositing_round_half_up():
    assert premultiply(np.array([[[255, 101, 1, 128]]], np.uint8)).tolist() == [[[128, 51, 1, 128]]]
    over = composite_over(np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 255, 51]]], np.uint8), (128, 128, 128))
    assert over.tolist() == [[[128, 128, 128], [255, 0, 0], [102, 102, 153]]]
    assert fit_size((1000, 250), 512) == (512, 128) and fit_size((30, 20), 512) == (30, 20)


def _tiny_split(label=0, pixel=0, box=(1.0, 2.0, 3.0, 4.0)):
    image = np.zeros((4, 4, 3), np.uint8)
    image[0, 0, 0] = pixel
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["a", "b"]),
            "bbox": datasets.List(datasets.Value("float32"), length=4),
            "mask": datasets.Image(),
        }
    )
    mask = Image.fromarray(np.zeros((4, 4), np.uint8))
    rows = {"image": [Image.fromarray(image)], "label": [label], "bbox": [list(box)], "mask": [mask]}
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)})


def test_fingerprint_changes_with_any_pixel_label_or_box_and_only_then():
    reference = scenes_fingerprint(_tiny_split())
    assert scenes_fingerprint(_tiny_split()) == reference and len(reference["train"]) == 64
    for changed in (_tiny_split(pixel=1), _tiny_split(label=1), _tiny_split(box=(1.0, 2.0, 3.0, 5.0))):
        assert scenes_fingerprint(changed) != reference
