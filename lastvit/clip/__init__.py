"""Image-text (CLIP) training with a LastViT image tower: the model (`modeling_lastvit_clip`, saved as
remote code), scene captions and a download-free tokenizer (`captions`), and the trainer (`training`).

`from lastvit.clip import LastViTCLIPModel` (or importing `lastvit.clip.modeling_lastvit_clip`)
registers `LastViTCLIPConfig` / `LastViTCLIPModel` with `AutoConfig`, `AutoModel` and
`AutoModelForZeroShotImageClassification`, so a LastViT-CLIP folder loads with the Auto classes and
pipelines without `trust_remote_code` (as `import modeling_lastvit` does for LastViT). A bare
`import lastvit.clip` stays light (no torch): `lastvit-train-clip --help` imports this package.
"""

import importlib

__all__ = ["LastViTCLIPConfig", "LastViTCLIPModel", "symmetric_contrastive_loss"]
_EXPORTS = set(__all__)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(".modeling_lastvit_clip", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _EXPORTS)
