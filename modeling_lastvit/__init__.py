"""LaSt-ViT (LazyStrike ViT) and ViTs with registers for Hugging Face Transformers: the models a
checkpoint carries, LastViT (`configuration_lastvit`, `modeling_lastvit`, `pooling_lastvit`,
`image_processing_lastvit`) and LastViT-CLIP (`configuration_lastvit_clip`, `modeling_lastvit_clip`).

Importing this package registers the classes with transformers' Auto classes, and marks them for
remote code (`register_for_auto_class`) so that `save_pretrained` writes the model files beside the
weights and every saved checkpoint also loads with `trust_remote_code=True` where this package is
not installed. These files import only each other, torch and transformers (never `lastvit`).
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForZeroShotImageClassification,
)

from .configuration_lastvit import LastViTConfig
from .configuration_lastvit_clip import LastViTCLIPConfig
from .image_processing_lastvit import LastViTImageProcessor
from .modeling_lastvit import (
    LastViTBackbone,
    LastViTForImageClassification,
    LastViTModel,
    LastViTModelOutput,
    LastViTPreTrainedModel,
)
from .modeling_lastvit_clip import LastViTCLIPModel, symmetric_contrastive_loss
from .pooling_lastvit import LazyStrikePooler, PooledFeatures, lazystrike_pool

AutoConfig.register(LastViTConfig.model_type, LastViTConfig, exist_ok=True)
AutoModel.register(LastViTConfig, LastViTModel, exist_ok=True)
AutoModelForImageClassification.register(LastViTConfig, LastViTForImageClassification, exist_ok=True)
AutoBackbone.register(LastViTConfig, LastViTBackbone, exist_ok=True)
AutoImageProcessor.register(LastViTConfig, image_processor_classes={"pil": LastViTImageProcessor}, exist_ok=True)
AutoConfig.register(LastViTCLIPConfig.model_type, LastViTCLIPConfig, exist_ok=True)
AutoModel.register(LastViTCLIPConfig, LastViTCLIPModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(LastViTCLIPConfig, LastViTCLIPModel, exist_ok=True)

LastViTConfig.register_for_auto_class()
LastViTModel.register_for_auto_class("AutoModel")
LastViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
LastViTBackbone.register_for_auto_class("AutoBackbone")
LastViTImageProcessor.register_for_auto_class("AutoImageProcessor")
LastViTCLIPConfig.register_for_auto_class()
LastViTCLIPModel.register_for_auto_class("AutoModel")

__all__ = [
    "LastViTBackbone",
    "LastViTCLIPConfig",
    "LastViTCLIPModel",
    "LastViTConfig",
    "LastViTForImageClassification",
    "LastViTImageProcessor",
    "LastViTModel",
    "LastViTModelOutput",
    "LastViTPreTrainedModel",
    "LazyStrikePooler",
    "PooledFeatures",
    "lazystrike_pool",
    "symmetric_contrastive_loss",
]
