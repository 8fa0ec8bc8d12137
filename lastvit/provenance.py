"""What a result was made with: the versions of every package that can change a number, the
platform and thread count, so that a report says which environment reproduces it.

Both studies record :func:`environment` in their ``report.json`` (next to the data's
``data_fingerprint``, see :mod:`lastvit.data.fingerprint`), and ``lastvit-study --check`` compares
a report's record with the running environment through :func:`package_differences`.
"""

from __future__ import annotations

import platform
from importlib import metadata

NUMBER_CHANGING_PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "numpy",
    "pillow",
    "peft",
    "safetensors",
    "huggingface_hub",
    "tokenizers",
    "evaluate",
    "scipy",
)
"""Distributions whose version can change a study's numbers (kernels, data, training loop,
image decoding, statistics); an absent one is recorded as None."""


def package_versions(packages=NUMBER_CHANGING_PACKAGES) -> dict[str, str | None]:
    """``{distribution: installed version or None}`` from the installed metadata."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(device=None) -> dict:
    """The environment of a run: ``device``, ``python``, ``platform``, ``machine``,
    ``cpu_threads`` (torch's intra-op threads), ``packages`` (:func:`package_versions`), the
    ``torch`` and ``transformers`` versions at the top level too, and ``gpu`` on CUDA."""
    import torch

    info = {
        "device": str(device if device is not None else "cpu"),
        "torch": torch.__version__,
        "transformers": package_versions(("transformers",))["transformers"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "packages": package_versions(),
    }
    if getattr(device, "type", str(device)).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def package_differences(recorded: dict, current: dict | None = None) -> list[tuple[str, str | None, str | None]]:
    """``(name, recorded version, current version)`` for each package (and ``python``) whose
    version differs between a recorded :func:`environment` and ``current`` (default: this one),
    in :data:`NUMBER_CHANGING_PACKAGES` order, python first."""
    current = current if current is not None else {"python": platform.python_version(), "packages": package_versions()}
    differences = []
    if recorded.get("python") != current.get("python"):
        differences.append(("python", recorded.get("python"), current.get("python")))
    recorded_packages, current_packages = recorded.get("packages", {}), current.get("packages", {})
    for name in recorded_packages:
        if recorded_packages[name] != current_packages.get(name):
            differences.append((name, recorded_packages[name], current_packages.get(name)))
    return differences


__all__ = ["NUMBER_CHANGING_PACKAGES", "environment", "package_differences", "package_versions"]
