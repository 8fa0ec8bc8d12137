"""The LaSt-ViT toolkit around the models: checkpoint conversion (`lastvit.conversion`), data
(`lastvit.data`), measurement (`lastvit.measure`), model cards (`lastvit.cards`), training
(`lastvit.training`) and atomic folder writing (`lastvit.files`).

The models a checkpoint carries (LastViT and LastViT-CLIP) live in `modeling_lastvit` and never import
this package (`tests/test_package_layout.py`), so `save_pretrained` can copy them as remote code.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lastvit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "unknown"
