"""Running a model for measuring: the device, bf16 autocast on CUDA, eager attention (the backend
that returns attention weights), and one pass over a set that keeps what the maps and metrics need
(`encode`) or only the predictions (`predictions`)."""

from __future__ import annotations

import torch


def resolve_device(device: str | None = None) -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; anything else as given."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (as the trainer's GPU configs), full precision on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def eager_attention(model) -> str | None:
    """Eager attention (the backend that returns attention weights); returns the one to restore."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous != "eager":
        model.set_attn_implementation("eager")
    return previous


@torch.no_grad()
def encode(
    model,
    pixel_values: torch.Tensor,
    batch_size: int = 128,
    device=None,
    progress: bool = False,
    attention: bool = False,
    hidden_states: bool = False,
) -> dict:
    """Run the classifier once over `pixel_values`; keep (on the CPU, float32) logits, the pooled
    feature, the final CLS output (None without a CLS token), the final patch tokens, the votes
    (None unless the pooling votes), with `attention` the last layer's head-averaged CLS
    attention to the patches, and with `hidden_states` the L2 norm of every token after every
    layer, before the final LayerNorm (``layer_norms`` [B, layers, tokens])."""
    from tqdm.auto import tqdm

    device = resolve_device(device)
    model.to(device).eval()
    config = model.config
    attention = attention and config.use_cls_token
    previous = eager_attention(model) if attention else None
    keys = ("logits", "pooled", "cls", "patches", "votes", "cls_attention", "layer_norms")
    out = {key: [] for key in keys}
    try:
        for start in tqdm(range(0, len(pixel_values), batch_size), desc="encoding", disable=not progress):
            batch = pixel_values[start : start + batch_size].to(device)
            with autocast(device):
                base = model.base_model(
                    pixel_values=batch, output_attentions=attention, output_hidden_states=hidden_states
                )
                logits = model.classifier(model.classifier_features(base))  # the head's own input rule
            tokens = model.split_tokens(base.last_hidden_state)
            out["logits"].append(logits)
            out["pooled"].append(base.pooler_output)
            out["patches"].append(tokens.patches)
            if tokens.cls is not None:
                out["cls"].append(tokens.cls.reshape(len(batch), -1))
            if base.patch_votes is not None:
                out["votes"].append(base.patch_votes)
            if hidden_states:  # the output of each block, before the final LayerNorm
                layers = base.hidden_states[-config.num_hidden_layers :]
                out["layer_norms"].append(torch.stack([h.float().norm(dim=-1) for h in layers], dim=1))
            if attention:
                last = base.attentions[-1]  # [B, heads, T, T]
                out["cls_attention"].append(last[:, :, 0, config.num_prefix_tokens :].mean(dim=1))
    finally:
        if previous is not None and previous != "eager":
            model.set_attn_implementation(previous)
    return {key: torch.cat(values).float().cpu() if values else None for key, values in out.items()}


@torch.no_grad()
def predictions(model, pixel_values: torch.Tensor, batch_size: int = 128, device=None) -> torch.Tensor:
    """Arg-max class of every image ``[B]`` (on the CPU)."""
    device = resolve_device(device)
    model.to(device).eval()
    out = []
    for start in range(0, len(pixel_values), batch_size):
        with autocast(device):
            out.append(model(pixel_values=pixel_values[start : start + batch_size].to(device)).logits.argmax(-1).cpu())
    return torch.cat(out)


__all__ = ["autocast", "eager_attention", "encode", "predictions", "resolve_device"]
