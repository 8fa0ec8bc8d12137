"""Independent reference forwards, in plain torch, of the checkpoint layouts `lastvit-convert` reads.

Each class follows its source's own code (torchvision's `VisionTransformer`, facebookresearch/dino's
`vision_transformer.py`, OpenAI CLIP's `model.py`) and uses the source's module names, so that
`state_dict()` yields exactly the source's keys and shapes. Nothing here imports the package: the
parity tests compare the converted LastViT against these forwards.

Resizing position embeddings: DINO's is the original repository's (bicubic, `scale_factor` with a
0.1 offset). torchvision and OpenAI CLIP cannot run at other sizes; for them the forward resizes as
the converter documents (bicubic to the target grid, `align_corners=False`, no antialias).
"""

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F


def _resize_grid(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1, n*n, D] -> [1, h*w, D], bicubic to the target size (the documented torchvision/CLIP rule)."""
    side = math.isqrt(pos.shape[1])
    if (side, side) == grid:
        return pos
    img = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=grid, mode="bicubic", align_corners=False)
    return img.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)


def authors_lazystrike(patch_tokens: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The authors' LazyStrike readout (LAST-ViT `cls_pretrain/conf.py`, with the selection fix described
    in the design notes), with the hard-coded 768 replaced by the width D: FFT along channels,
    fftshift, max-normalised Gaussian window over arange(-D//2+1, D//2+1) with sigma sqrt(D),
    ifftshift, inverse FFT, real part; score x / |x_hat - x|; per-channel top-K; mean of the original x."""
    dim = patch_tokens.shape[-1]
    kernel = torch.exp(-0.5 * (torch.arange(-dim // 2 + 1, dim // 2 + 1).float() / dim**0.5) ** 2)
    kernel = (kernel / torch.max(kernel)).unsqueeze(0).unsqueeze(0)
    x_detach = patch_tokens
    x = torch.fft.fft(patch_tokens, dim=-1)
    x = torch.fft.fftshift(x, dim=-1)
    x = x * kernel
    x = torch.fft.ifftshift(x, dim=-1)
    x = torch.fft.ifft(x, dim=-1).real
    diff = x_detach / torch.abs(x - x_detach)
    _, indices = torch.topk(diff, k=k, dim=1, largest=True)
    return torch.gather(x_detach, 1, indices).mean(dim=1)


# --------------------------------------------------------------------------------------------
# torchvision.models.VisionTransformer
# --------------------------------------------------------------------------------------------


class TorchvisionMLP(nn.Sequential):
    def __init__(self, dim: int, mlp_dim: int):
        super().__init__(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp_dim, dim), nn.Dropout(0.0))


class TorchvisionEncoderBlock(nn.Module):
    def __init__(self, num_heads: int, dim: int, mlp_dim: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = TorchvisionMLP(dim, mlp_dim)

    def forward(self, input):
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x)
        x = x + input
        y = self.ln_2(x)
        y = self.mlp(y)
        return x + y


class TorchvisionEncoder(nn.Module):
    def __init__(self, seq_length: int, num_layers: int, num_heads: int, dim: int, mlp_dim: int):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential(
            OrderedDict(
                (f"encoder_layer_{i}", TorchvisionEncoderBlock(num_heads, dim, mlp_dim)) for i in range(num_layers)
            )
        )
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, input, grid):
        pos = torch.cat((self.pos_embedding[:, :1], _resize_grid(self.pos_embedding[:, 1:], grid)), dim=1)
        return self.ln(self.layers(self.dropout(input + pos)))


class TorchvisionViT(nn.Module):
    """torchvision's VisionTransformer; `forward(x, lazystrike_k=K)` is the authors' LaSt-ViT forward."""

    def __init__(
        self,
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=4,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=5,
        representation_size=None,
    ):
        super().__init__()
        self.patch_size, self.hidden_dim = patch_size, hidden_dim
        self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.randn(1, 1, hidden_dim) * 0.02)
        seq_length = (image_size // patch_size) ** 2 + 1
        self.encoder = TorchvisionEncoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim)
        heads = OrderedDict()
        if representation_size is None:
            heads["head"] = nn.Linear(hidden_dim, num_classes)
        else:
            heads["pre_logits"] = nn.Linear(hidden_dim, representation_size)
            heads["act"] = nn.Tanh()
            heads["head"] = nn.Linear(representation_size, num_classes)
        self.heads = nn.Sequential(heads)

    def forward(self, x, lazystrike_k=None):
        n, _, h, w = x.shape
        grid = (h // self.patch_size, w // self.patch_size)
        x = self.conv_proj(x).reshape(n, self.hidden_dim, grid[0] * grid[1]).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.encoder(x, grid)
        if lazystrike_k is None:
            return self.heads(x[:, 0])
        return self.heads(authors_lazystrike(x[:, 1:], lazystrike_k))


# --------------------------------------------------------------------------------------------
# facebookresearch/dino vision_transformer.py
# --------------------------------------------------------------------------------------------


class DinoMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DinoAttention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class DinoBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DinoAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = DinoMlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DinoPatchEmbed(nn.Module):
    def __init__(self, patch_size, dim):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoViT(nn.Module):
    """DINO's VisionTransformer (num_classes=0: `head` is Identity); forward returns all normed tokens."""

    def __init__(self, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0):
        super().__init__()
        self.patch_embed = DinoPatchEmbed(patch_size, embed_dim)
        num_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, embed_dim) * 0.02)
        self.blocks = nn.ModuleList([DinoBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Identity()

    def interpolate_pos_encoding(self, x, w, h):  # verbatim semantics of the original
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        class_pos_embed = self.pos_embed[:, 0]
        patch_pos_embed = self.pos_embed[:, 1:]
        dim = x.shape[-1]
        w0 = w // self.patch_embed.patch_size
        h0 = h // self.patch_embed.patch_size
        w0, h0 = w0 + 0.1, h0 + 0.1
        patch_pos_embed = F.interpolate(
            patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
            mode="bicubic",
        )
        assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)

    def forward(self, x):
        B, _, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class DinoHeadStub(nn.Module):
    """DINOHead's parameter names (mlp, weight-normed last layer): present in training checkpoints."""

    def __init__(self, dim, out_dim=16, bottleneck=8):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, 24), nn.GELU(), nn.Linear(24, bottleneck))
        self.last_layer = nn.Module()
        self.last_layer.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        self.last_layer.weight_v = nn.Parameter(torch.randn(out_dim, bottleneck))


def dino_training_checkpoint(backbone: DinoViT) -> dict:
    """The layout of a DINO `checkpoint.pth`: student under DDP (`module.`), teacher without, both as
    MultiCropWrapper(backbone, head), plus the run's arguments and bookkeeping."""
    import argparse

    head = DinoHeadStub(backbone.norm.normalized_shape[0])
    teacher = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    teacher.update({f"head.{k}": v for k, v in head.state_dict().items()})
    student = {f"module.{k}": torch.randn_like(v) for k, v in teacher.items()}
    return {
        "student": student,
        "teacher": teacher,
        "epoch": 80,
        "args": argparse.Namespace(arch="vit_tiny", patch_size=8, out_dim=16, lr=5e-4),
        "dino_loss": {"center": torch.zeros(1, 16)},
    }


# --------------------------------------------------------------------------------------------
# OpenAI CLIP model.py (visual tower) and open_clip checkpoints
# --------------------------------------------------------------------------------------------


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, act=QuickGELU, attn_mask=None):
        super().__init__()
        self.attn_mask = attn_mask  # a plain attribute, as in OpenAI's model.py: not in the state dict
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(d_model, d_model * 4)),
                    ("gelu", act()),
                    ("c_proj", nn.Linear(d_model * 4, d_model)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(d_model)

    def forward(self, x):
        y = self.ln_1(x)
        mask = None if self.attn_mask is None else self.attn_mask[: x.shape[0], : x.shape[0]]
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class ClipTransformer(nn.Module):
    def __init__(self, width, layers, heads, act=QuickGELU, attn_mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, act, attn_mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class ClipVisionTransformer(nn.Module):
    """OpenAI CLIP's VisionTransformer; `lazystrike_k` reads LazyStrike from the ln_post tokens, then proj."""

    def __init__(self, input_resolution=32, patch_size=8, width=32, layers=2, heads=4, output_dim=16, act=QuickGELU):
        super().__init__()
        self.patch_size = patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = ClipTransformer(width, layers, heads, act)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x, lazystrike_k: int = 0):
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1)
        pos = self.positional_embedding.unsqueeze(0)
        x = x + torch.cat((pos[:, :1], _resize_grid(pos[:, 1:], grid)), dim=1)
        x = self.ln_pre(x)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        if lazystrike_k:
            pooled = authors_lazystrike(self.ln_post(x)[:, 1:], lazystrike_k)
        else:
            pooled = self.ln_post(x[:, 0, :])
        return pooled @ self.proj


def causal_mask(context_length: int) -> torch.Tensor:
    """OpenAI's `build_attention_mask`: -inf above the diagonal (a token sees itself and what precedes it)."""
    return torch.empty(context_length, context_length).fill_(float("-inf")).triu_(1)


class ClipStub(nn.Module):
    """A whole OpenAI CLIP model (`model.py`'s `CLIP`): the visual tower, the causal text transformer,
    `text_projection`, `logit_scale`, and OpenAI's bookkeeping buffers. `forward` is `encode_image`;
    `encode_text` pools at the arg-max of the ids (the end-of-text id is the largest); `logits` is
    `CLIP.forward`'s `logits_per_image`. The default text tower (vocabulary 50, context 8) keeps the
    image-tower tests' key layout."""

    def __init__(self, act=QuickGELU, vocab_size=50, context_length=8, text_width=16, text_heads=2, **visual):
        super().__init__()
        self.visual = ClipVisionTransformer(act=act, **visual)
        self.transformer = ClipTransformer(text_width, 1, text_heads, act, attn_mask=causal_mask(context_length))
        self.token_embedding = nn.Embedding(vocab_size, text_width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, text_width))
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.randn(text_width, visual.get("output_dim", 16)))
        self.logit_scale = nn.Parameter(torch.tensor(4.6))
        self.register_buffer("input_resolution", torch.tensor(visual.get("input_resolution", 32)))
        self.register_buffer("context_length", torch.tensor(context_length))
        self.register_buffer("vocab_size", torch.tensor(vocab_size))

    def forward(self, image):
        return self.visual(image)

    def encode_text(self, text):
        """`text`: [B, context_length] ids, start + tokens + end-of-text, zero-padded (OpenAI's `tokenize`)."""
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

    def logits(self, image, text):
        image_features = F.normalize(self.visual(image), dim=-1)
        text_features = F.normalize(self.encode_text(text), dim=-1)
        return self.logit_scale.exp() * image_features @ text_features.t()
