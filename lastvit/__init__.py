"""The LaSt-ViT toolkit around the model: data (`lastvit.data`), measurement (`lastvit.measure`),
model cards (`lastvit.cards`), training (`lastvit.training`) and atomic folder writing
(`lastvit.files`).

The model a checkpoint carries lives in `modeling_lastvit` and never imports this package, so
`save_pretrained` can copy it as remote code.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lastvit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "unknown"
