"""LastViT image processor: ImageNet-style evaluation preprocessing on the PIL/NumPy backend.

Defaults follow the LaSt-ViT evaluation (Resize 256 on the short side, CenterCrop 224, ImageNet
mean/std). Converted checkpoints store the source's own settings (e.g. CLIP's mean/std) in their
`preprocessor_config.json`. Built on transformers' `PilBackend`, so it needs no torchvision.
"""

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


class LastViTImageProcessor(PilBackend):
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 256}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


__all__ = ["LastViTImageProcessor"]
