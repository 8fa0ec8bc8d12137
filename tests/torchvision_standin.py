"""TEST-ONLY STAND-IN for torchvision, so that timm imports on machines where torchvision does not load.

timm imports torchvision at import time (data transforms, datasets, `FrozenBatchNorm2d`, FX feature extraction),
but a ViT's construction and forward never call any of it. `import_timm()` puts a stand-in `torchvision` package
in `sys.modules` (only when the real one cannot be imported), imports timm, takes the stand-in out of
`sys.modules` again (so that nothing imported later, e.g. `datasets` or transformers' backend checks, sees a
torchvision), and from then on records every use
of the stand-in: any attribute read, call or instantiation after the import lands in `uses_after_import()`.
The parity tests assert that list is empty, i.e. the stand-in was only touched while timm was importing and
timm's own forward ran unchanged. The stand-in never replaces a torchvision that imports.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

_STATE = {"importing": True, "uses_after_import": []}
_SUBMODULES = (
    "torchvision",
    "torchvision.transforms",
    "torchvision.transforms.functional",
    "torchvision.transforms.v2",
    "torchvision.datasets",
    "torchvision.ops",
    "torchvision.ops.misc",
    "torchvision.models",
    "torchvision.models.feature_extraction",
    "torchvision.utils",
    "torchvision.io",
)


def _record(what: str) -> None:
    if not _STATE["importing"]:
        _STATE["uses_after_import"].append(what)


class _PlaceholderMeta(type):
    """A class-level attribute read returns another placeholder (enum members, nested names), recorded."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        _record(f"{cls.__qualname__}.{name}")
        return _placeholder(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        _record(f"{cls.__qualname__}(...)")
        raise RuntimeError(
            f"torchvision stand-in: {cls.__qualname__} was called; timm needs the real torchvision here."
        )


def _placeholder(qualname: str) -> type:
    return _PlaceholderMeta(qualname.rsplit(".", 1)[-1], (), {"__qualname__": qualname, "__module__": "torchvision"})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        _record(f"{self.__name__}.{name}")
        return _placeholder(f"{self.__name__}.{name}")


def _install() -> None:
    for name in _SUBMODULES:
        module = _StandInModule(name)
        module.__path__ = []  # a package: `from torchvision.x import y` resolves through sys.modules
        module.__version__ = "0.0.0+standin"
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__file__ = __file__
        sys.modules[name] = module
    for name in _SUBMODULES[1:]:
        parent, child = name.rsplit(".", 1)
        setattr(sys.modules[parent], child, sys.modules[name])


def import_timm():
    """timm, imported with the real torchvision when it loads, else with the stand-in. Returns (timm, used_standin)."""
    try:
        importlib.import_module("torchvision")
        used_standin = False
    except (ImportError, RuntimeError, OSError, AttributeError):  # missing, or the CPU wheel's operator mismatch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _install()
        used_standin = True
    _STATE["importing"] = True
    try:
        timm = importlib.import_module("timm")
        importlib.import_module("timm.models.vision_transformer")
        importlib.import_module("timm.models.eva")
    finally:
        _STATE["importing"] = False
        if used_standin:  # out of sys.modules again: nothing imported later can mistake it for torchvision
            for name in _SUBMODULES:
                sys.modules.pop(name, None)
    return timm, used_standin


def uses_after_import() -> list[str]:
    """Every use of the stand-in after timm finished importing (must stay empty)."""
    return list(_STATE["uses_after_import"])
