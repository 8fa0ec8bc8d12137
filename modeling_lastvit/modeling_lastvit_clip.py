"""LastViT-CLIP: a LastViT image tower and transformers' CLIP text tower in one joint space (or, with
`config.text_tower="siglip"`, SigLIP's text tower, and with `config.image_projection=False` the pooled image feature
itself as the image embedding: a converted `SiglipModel`).

The image embedding is the LastViT pooled feature (LazyStrike, or CLS for the baseline) through the
tower's bias-free projection (`image_embeds`, as in the converted OpenAI/open_clip towers); the text
embedding is CLIP's end-of-text token through its projection. Training minimises the symmetric
InfoNCE loss with a learnable temperature (`logit_scale`, CLIP's initial value ln(1/0.07)).

`get_image_features` / `get_text_features` / `logits_per_image` follow transformers' `CLIPModel`, so
`pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)` works on a saved
folder. The class is registered for `AutoModel` (`register_for_auto_class`, in the package's
`__init__`), so `save_pretrained` writes this file and the files it imports beside the weights and the folder
loads where this package is not installed; the image tower alone is the sub-module `vision_model`
(a `LastViTModel`, saved by `save_image_tower`).
"""

import torch
from torch import nn
from transformers import CLIPTextModelWithProjection, PreTrainedModel, SiglipTextModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPOutput

from .configuration_lastvit_clip import LastViTCLIPConfig
from .modeling_lastvit import LastViTModel


class LastViTCLIPModel(PreTrainedModel):
    """Image-text dual encoder: `vision_model` (LastViTModel with projection) + `text_model`
    (CLIPTextModelWithProjection) + `logit_scale`."""

    config: LastViTCLIPConfig
    base_model_prefix = "lastvit_clip"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    _no_split_modules = ["LastViTLayer", "CLIPEncoderLayer", "CLIPTextEmbeddings"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: LastViTCLIPConfig):
        super().__init__(config)
        self.vision_model = LastViTModel._from_config(config.vision_config)
        text_class = SiglipTextModel if config.text_tower == "siglip" else CLIPTextModelWithProjection
        self.text_model = text_class._from_config(config.text_config)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        bias = config.logit_bias_init_value
        self.logit_bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LastViTCLIPModel):
            module.logit_scale.fill_(float(self.config.logit_scale_init_value))
            if module.logit_bias is not None:
                module.logit_bias.fill_(float(self.config.logit_bias_init_value))

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """The tower's outputs with `pooler_output` replaced by the projected global feature (as `CLIPModel`)."""
        outputs = self.vision_model(pixel_values=pixel_values, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=outputs.image_embeds if self.config.image_projection else outputs.pooler_output,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """The text tower's outputs with `pooler_output` = the projected end-of-text feature (as `CLIPModel`); for a
        SigLIP text tower, the last position of the text padded to full length, through its head (`text_tower`)."""
        if self.config.text_tower == "siglip":
            input_ids, attention_mask = self.pad_for_siglip(input_ids), None
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=outputs.pooler_output if self.config.text_tower == "siglip" else outputs.text_embeds,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def pad_for_siglip(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Right-pad `input_ids` with `pad_token_id` to the text tower's `max_position_embeddings` (SigLIP's
        `padding="max_length"`, under which it was trained and which puts its pooled last position in place)."""
        length = self.config.text_config.max_position_embeddings
        if input_ids.shape[-1] > length:
            raise ValueError(
                f"the texts are {input_ids.shape[-1]} tokens long; the SigLIP text tower takes at most {length}: "
                "tokenise with truncation."
            )
        if input_ids.shape[-1] == length:
            return input_ids
        return nn.functional.pad(
            input_ids, (0, length - input_ids.shape[-1]), value=self.config.text_config.pad_token_id
        )

    def get_patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Every final patch token through the image projection, ``[B, N, projection_dim]``: the dense
        features of zero-shot segmentation (the same final LayerNorm and projection as the global feature).
        Without `image_projection` (SigLIP), the final patch tokens themselves."""
        tokens = self.vision_model(pixel_values=pixel_values).last_hidden_state
        patches = self.vision_model.split_tokens(tokens).patches
        if self.vision_model.visual_projection is None:
            return patches
        return self.vision_model.visual_projection(patches)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> CLIPOutput:
        if input_ids is None or pixel_values is None:
            raise ValueError("LastViTCLIPModel needs both `input_ids` (tokenised texts) and `pixel_values` (images).")
        vision_outputs = self.get_image_features(pixel_values)
        text_outputs = self.get_text_features(input_ids, attention_mask)
        image_embeds = nn.functional.normalize(vision_outputs.pooler_output, dim=-1)
        text_embeds = nn.functional.normalize(text_outputs.pooler_output, dim=-1)
        if self.logit_bias is None:
            logits_per_text = self.logit_scale.exp() * text_embeds @ image_embeds.t()
        else:  # SigLIP's order of operations (`SiglipModel`): cosines, then scale and bias
            logits_per_text = text_embeds @ image_embeds.t() * self.logit_scale.exp() + self.logit_bias
        logits_per_image = logits_per_text.t()
        loss = None
        if return_loss:
            if logits_per_image.shape[0] != logits_per_image.shape[1]:
                raise ValueError(
                    f"the contrastive loss pairs image i with text i, but got {logits_per_image.shape[0]} images and "
                    f"{logits_per_image.shape[1]} texts; pass one caption per image."
                )
            loss = (
                symmetric_contrastive_loss(logits_per_image)
                if self.logit_bias is None
                else pairwise_sigmoid_loss(logits_per_image)
            )
        return CLIPOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )

    def save_image_tower(self, save_directory, *args, **kwargs):
        """The image tower alone as a LastViT folder (`AutoModel`, `trust_remote_code=True`); its
        `image_embeds` are this model's image embeddings before normalisation."""
        self.vision_model.save_pretrained(save_directory, *args, **kwargs)


def symmetric_contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's InfoNCE: mean of the image->text and text->image cross-entropies, pair i = (image i, text i)."""
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (
        nn.functional.cross_entropy(logits_per_image, targets)
        + nn.functional.cross_entropy(logits_per_image.t(), targets)
    ) / 2


def pairwise_sigmoid_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """SigLIP's loss of the biased logits: ``-sum log sigmoid(label * logit) / B``, label +1 for pair i = (image i,
    text i) and -1 for every other (image, text)."""
    labels = 2 * torch.eye(logits_per_image.shape[0], device=logits_per_image.device) - 1
    return -nn.functional.logsigmoid(labels * logits_per_image).sum() / logits_per_image.shape[0]


__all__ = ["LastViTCLIPModel", "pairwise_sigmoid_loss", "symmetric_contrastive_loss"]
