"""LastViT-CLIP configuration: a LastViT image tower and transformers' CLIP text tower in one joint space."""

from huggingface_hub.dataclasses import strict
from transformers import CLIPTextConfig, PreTrainedConfig

from .configuration_lastvit import LastViTConfig

# Written into every saved config so that a folder opens with any of these Auto classes via
# `trust_remote_code=True` (transformers only records the saver's own).
AUTO_MAP = {
    "AutoConfig": "configuration_lastvit_clip.LastViTCLIPConfig",
    "AutoModel": "modeling_lastvit_clip.LastViTCLIPModel",
    "AutoModelForZeroShotImageClassification": "modeling_lastvit_clip.LastViTCLIPModel",
}


@strict
class LastViTCLIPConfig(PreTrainedConfig):
    r"""
    Configuration of a [`LastViTCLIPModel`].

    Args:
        vision_config (`dict` or `LastViTConfig`): the image tower; its `projection_dim` is set to
            `projection_dim` (the projection is the tower's own `visual_projection`).
        text_config (`dict` or `CLIPTextConfig`): the text tower; its `projection_dim` is set likewise.
        projection_dim (`int`, defaults to 512): width of the joint embedding space.
        logit_scale_init_value (`float`, defaults to 2.6592): initial log inverse temperature, ln(1/0.07).
    """

    model_type = "lastvit-clip"
    sub_configs_defaults = {"vision_config": LastViTConfig, "text_config": CLIPTextConfig}

    vision_config: dict | LastViTConfig | None = None
    text_config: dict | CLIPTextConfig | None = None
    projection_dim: int = 512
    logit_scale_init_value: float | int = 2.6592

    def __post_init__(self, **kwargs):
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        super().__post_init__(**kwargs)
        # One joint space: both towers project to it (their own `projection_dim` is overridden).
        self.vision_config.projection_dim = self.text_config.projection_dim = self.projection_dim


__all__ = ["LastViTCLIPConfig"]
