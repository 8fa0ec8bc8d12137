"""LastViTImageProcessor: ImageNet-style evaluation preprocessing on the PIL/NumPy backend."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("modeling_lastvit") is None:  # plain `pytest` without the repo on sys.path
    sys.path.insert(0, str(REPO_ROOT))

from PIL import Image
from transformers import AutoImageProcessor
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling

from modeling_lastvit import LastViTConfig, LastViTImageProcessor, LastViTModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_array(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An HWC uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def random_pil_image(height: int = 200, width: int = 300, seed: int = 0) -> Image.Image:
    return Image.fromarray(random_array(height, width, seed))


def test_defaults_are_the_lastvit_evaluation_preprocessing():
    processor = LastViTImageProcessor()
    assert processor.size == {"shortest_edge": 256}
    assert processor.crop_size == {"height": 224, "width": 224}
    assert tuple(processor.image_mean) == pytest.approx(IMAGENET_MEAN)
    assert tuple(processor.image_std) == pytest.approx(IMAGENET_STD)
    assert processor.resample == PILImageResampling.BILINEAR
    assert processor.rescale_factor == pytest.approx(1 / 255)
    for flag in ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"):
        assert getattr(processor, flag) is True, flag
    assert processor.model_input_names == ["pixel_values"]


@pytest.mark.parametrize("height, width", [(200, 300), (300, 200), (224, 224), (100, 90)])
def test_non_square_pil_images_become_224_by_224_float_tensors(height, width):
    processor = LastViTImageProcessor()
    pixel_values = processor(random_pil_image(height, width), return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 224, 224)
    assert pixel_values.dtype == torch.float32
    assert torch.isfinite(pixel_values).all()


def test_batches_of_images_of_different_sizes_stack_into_one_tensor():
    processor = LastViTImageProcessor()
    images = [
        random_pil_image(200, 300, seed=1),
        random_pil_image(400, 250, seed=2),
        random_pil_image(256, 256, seed=3),
    ]
    pixel_values = processor(images, return_tensors="pt").pixel_values
    assert pixel_values.shape == (3, 3, 224, 224)


def test_shortest_edge_is_resized_to_256_keeping_the_aspect_ratio():
    processor = LastViTImageProcessor()
    landscape = processor(random_pil_image(200, 300), do_center_crop=False, return_tensors="pt").pixel_values
    portrait = processor(random_pil_image(300, 200), do_center_crop=False, return_tensors="pt").pixel_values
    assert landscape.shape == (1, 3, 256, 384)
    assert portrait.shape == (1, 3, 384, 256)


def test_uniform_image_is_rescaled_and_normalised_with_imagenet_statistics():
    processor = LastViTImageProcessor()
    rgb = (255, 0, 128)
    pixel_values = processor(Image.new("RGB", (260, 250), rgb), return_tensors="pt").pixel_values
    expected = torch.tensor([(v / 255 - m) / s for v, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD)])
    torch.testing.assert_close(pixel_values[0], expected[:, None, None].expand(3, 224, 224), rtol=0, atol=1e-5)


def test_grayscale_and_rgba_images_are_converted_to_three_channels():
    processor = LastViTImageProcessor()
    gray = random_pil_image(240, 260).convert("L")
    rgba = random_pil_image(240, 260, seed=4).convert("RGBA")
    pixel_values = processor([gray, rgba], return_tensors="pt").pixel_values
    assert pixel_values.shape == (2, 3, 224, 224)
    # a grey image stays grey: its three channels differ only by the per-channel mean/std
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    unnormalised = pixel_values[0] * std + mean
    torch.testing.assert_close(unnormalised[0], unnormalised[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(unnormalised[0], unnormalised[2], rtol=0, atol=1e-5)


def test_numpy_hwc_uint8_input_gives_the_same_result_as_pil():
    processor = LastViTImageProcessor()
    array = random_array(200, 300, seed=5)
    from_numpy = processor(array, return_tensors="pt").pixel_values
    from_pil = processor(Image.fromarray(array), return_tensors="pt").pixel_values
    assert from_numpy.shape == (1, 3, 224, 224)
    torch.testing.assert_close(from_numpy, from_pil, rtol=0, atol=1e-6)

    batch = processor([array, random_array(300, 260, seed=6)], return_tensors="pt").pixel_values
    assert batch.shape == (2, 3, 224, 224)


def test_works_on_the_pil_backend_without_torchvision():
    processor = LastViTImageProcessor()
    assert isinstance(processor, PilBackend)
    pixel_values = processor(random_pil_image(), return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 224, 224)
    # Precondition note: this environment is meant to have no torchvision. Where it is installed the
    # check below is skipped rather than failed; the processor must work either way.
    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision" not in sys.modules


def test_output_feeds_a_224_pixel_model():
    processor = LastViTImageProcessor()
    config = LastViTConfig(
        image_size=224, patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    )
    model = LastViTModel(config).eval()
    inputs = processor([random_pil_image(), random_pil_image(320, 240, seed=7)], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    assert out.last_hidden_state.shape == (2, 1 + 14 * 14, 32)
    assert out.pooler_output.shape == (2, 32)


def test_save_load_round_trip_keeps_every_setting(tmp_path):
    processor = LastViTImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "LastViTImageProcessor"
    assert saved["size"] == {"shortest_edge": 36}
    assert saved["crop_size"] == {"height": 32, "width": 32}

    reloaded = LastViTImageProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is LastViTImageProcessor
    assert reloaded.size == {"shortest_edge": 36}
    assert reloaded.crop_size == {"height": 32, "width": 32}
    assert list(reloaded.image_mean) == [0.5, 0.5, 0.5]
    assert list(reloaded.image_std) == [0.25, 0.25, 0.25]
    assert reloaded.resample == PILImageResampling.BICUBIC

    image = random_pil_image(40, 50)
    torch.testing.assert_close(
        reloaded(image, return_tensors="pt").pixel_values, processor(image, return_tensors="pt").pixel_values
    )


def test_default_processor_round_trip_gives_the_same_config(tmp_path):
    processor = LastViTImageProcessor()
    processor.save_pretrained(tmp_path)
    reloaded = LastViTImageProcessor.from_pretrained(tmp_path)
    assert json.loads(reloaded.to_json_string()) == json.loads(processor.to_json_string())


def test_auto_image_processor_resolves_a_saved_folder(tmp_path):
    LastViTImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_lastvit.LastViTImageProcessor"}
    assert (tmp_path / "image_processing_lastvit.py").is_file()

    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is LastViTImageProcessor
    assert processor.crop_size == {"height": 32, "width": 32}
    assert processor(random_pil_image(), return_tensors="pt").pixel_values.shape == (1, 3, 32, 32)


def test_auto_image_processor_falls_back_to_the_model_config_of_the_folder(tmp_path):
    """A preprocessor_config.json without `image_processor_type`/`auto_map` (e.g. hand-written for a
    converted checkpoint) still resolves to LastViT through config.json's model type."""
    config = LastViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    )
    config.save_pretrained(tmp_path)
    LastViTImageProcessor(crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    processor_config_path = tmp_path / "preprocessor_config.json"
    processor_config = json.loads(processor_config_path.read_text())
    processor_config.pop("image_processor_type")
    processor_config.pop("auto_map", None)
    processor_config_path.write_text(json.dumps(processor_config))

    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is LastViTImageProcessor
    assert processor.crop_size == {"height": 32, "width": 32}
