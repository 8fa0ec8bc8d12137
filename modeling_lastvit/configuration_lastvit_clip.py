"""LastViT-CLIP configuration: a LastViT image tower and transformers' CLIP (or SigLIP) text tower in one joint
space."""

from huggingface_hub.dataclasses import strict
from transformers import CLIPTextConfig, PreTrainedConfig, SiglipTextConfig

from .configuration_lastvit import LastViTConfig

# Written into every saved config so that a folder opens with any of these Auto classes via
# `trust_remote_code=True` (transformers only records the saver's own).
AUTO_MAP = {
    "AutoConfig": "configuration_lastvit_clip.LastViTCLIPConfig",
    "AutoModel": "modeling_lastvit_clip.LastViTCLIPModel",
    "AutoModelForZeroShotImageClassification": "modeling_lastvit_clip.LastViTCLIPModel",
}
# `text_tower` -> the config class of that text tower
TEXT_TOWER_CONFIGS = {"clip": CLIPTextConfig, "siglip": SiglipTextConfig}


@strict
class LastViTCLIPConfig(PreTrainedConfig):
    r"""
    Configuration of a [`LastViTCLIPModel`].

    Args:
        vision_config (`dict` or `LastViTConfig`): the image tower; its `projection_dim` is set to
            `projection_dim` (the projection is the tower's own `visual_projection`).
        text_config (`dict`, `CLIPTextConfig` or `SiglipTextConfig`): the text tower; its `projection_dim` is set
            likewise (a SigLIP text tower's `projection_size` must equal `projection_dim`).
        text_tower (`str`, defaults to `"clip"`): `"clip"`: transformers' `CLIPTextModelWithProjection` (causal mask,
            pooled at the end-of-text token, then a bias-free projection). `"siglip"`: transformers' `SiglipTextModel`
            as SigLIP trains it: no causal mask, no attention mask, every text right-padded with `pad_token_id` to
            `max_position_embeddings` tokens, pooled at the last position, then its `head` (a linear layer with a
            bias) to the joint space. Texts already that long run exactly as in `SiglipModel`.
        image_projection (`bool`, defaults to `True`): the image embedding is the pooled feature through the image
            tower's bias-free `visual_projection` (CLIP). `False`: the pooled feature itself (SigLIP, whose
            attention-pool head ends in the joint space); the tower's `pooled_feature_size` must then equal
            `projection_dim`.
        projection_dim (`int`, defaults to 512): width of the joint embedding space.
        logit_scale_init_value (`float`, defaults to 2.6592): initial log inverse temperature, ln(1/0.07).
        logit_bias_init_value (`float`, *optional*): if set, a learned `logit_bias` added to every logit and
            `return_loss` gives SigLIP's pairwise sigmoid loss instead of CLIP's InfoNCE (SigLIP starts it at -10,
            with `logit_scale_init_value` ln(10)). `None` (default): CLIP's logits and loss.
    """

    model_type = "lastvit-clip"
    sub_configs_defaults = {"vision_config": LastViTConfig, "text_config": CLIPTextConfig}

    vision_config: dict | LastViTConfig | None = None
    text_config: dict | CLIPTextConfig | SiglipTextConfig | None = None
    text_tower: str = "clip"
    image_projection: bool = True
    projection_dim: int = 512
    logit_scale_init_value: float | int = 2.6592
    logit_bias_init_value: float | int | None = None

    def __post_init__(self, **kwargs):
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        if self.text_tower not in TEXT_TOWER_CONFIGS:
            raise ValueError(
                f"Invalid LastViTCLIPConfig: unknown `text_tower` {self.text_tower!r}; use one of "
                f"{tuple(TEXT_TOWER_CONFIGS)}."
            )
        text_class = TEXT_TOWER_CONFIGS[self.text_tower]
        if self.text_config is None or isinstance(self.text_config, dict):  # built here: the spec knows CLIP's only
            self.text_config = text_class(**(self.text_config or {}))
        elif not isinstance(self.text_config, text_class):
            raise ValueError(
                f"Invalid LastViTCLIPConfig: `text_tower={self.text_tower!r}` needs a {text_class.__name__}, got a "
                f"{type(self.text_config).__name__}."
            )
        super().__post_init__(**kwargs)
        # One joint space: both towers project to it (their own `projection_dim` is overridden).
        self.text_config.projection_dim = self.projection_dim
        self.vision_config.projection_dim = self.projection_dim if self.image_projection else None
        if self.text_tower == "siglip" and self.text_config.projection_size != self.projection_dim:
            raise ValueError(
                f"Invalid LastViTCLIPConfig: the SigLIP text tower's head maps to {self.text_config.projection_size} "
                f"dimensions, not `projection_dim` ({self.projection_dim})."
            )
        if not self.image_projection and self.vision_config.pooled_feature_size != self.projection_dim:
            raise ValueError(
                f"Invalid LastViTCLIPConfig: without `image_projection` the image embedding is the pooled feature, "
                f"{self.vision_config.pooled_feature_size} wide, not `projection_dim` ({self.projection_dim})."
            )


__all__ = ["LastViTCLIPConfig"]
