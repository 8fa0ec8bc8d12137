"""LaSt-ViT (LazyStrike ViT) and ViTs with registers for Hugging Face Transformers.

Importing this package registers the LastViT classes with transformers' Auto classes, and marks
them for remote code so that every saved checkpoint also loads with `trust_remote_code=True`
where this package is not installed.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
)

from lastvit import __version__  # noqa: F401 (the one version: pyproject.toml's, from the installed metadata)

from .configuration_lastvit import LastViTConfig
from .image_processing_lastvit import LastViTImageProcessor
from .modeling_lastvit import (
    LastViTBackbone,
    LastViTForImageClassification,
    LastViTModel,
    LastViTModelOutput,
    LastViTPreTrainedModel,
)
from .pooling_lastvit import LazyStrikePooler, PooledFeatures, lazystrike_pool

AutoConfig.register(LastViTConfig.model_type, LastViTConfig, exist_ok=True)
AutoModel.register(LastViTConfig, LastViTModel, exist_ok=True)
AutoModelForImageClassification.register(LastViTConfig, LastViTForImageClassification, exist_ok=True)
AutoBackbone.register(LastViTConfig, LastViTBackbone, exist_ok=True)
AutoImageProcessor.register(LastViTConfig, image_processor_classes={"pil": LastViTImageProcessor}, exist_ok=True)

LastViTConfig.register_for_auto_class()
LastViTModel.register_for_auto_class("AutoModel")
LastViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
LastViTBackbone.register_for_auto_class("AutoBackbone")
LastViTImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "LastViTBackbone",
    "LastViTConfig",
    "LastViTForImageClassification",
    "LastViTImageProcessor",
    "LastViTModel",
    "LastViTModelOutput",
    "LastViTPreTrainedModel",
    "LazyStrikePooler",
    "PooledFeatures",
    "lazystrike_pool",
]
