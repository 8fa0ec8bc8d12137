"""transformers' own common model tests (ModelTesterMixin, BackboneTesterMixin) for the installed version.

The mixins live in transformers' repository (`tests/test_modeling_common.py`), not in the wheel. The
sdist of the installed version ships them, so the first run fetches it from PyPI with pip (no Hub), keeps
the two files in a cache folder and runs offline from then on. Set `LASTVIT_TRANSFORMERS_TESTS` to
choose the folder (e.g. a CI cache).

The sdist leaves out two modules that `test_modeling_common.py` imports: `tests/exporters/test_export.py`
(the torch.export mixin) and `tests/generation/test_utils.py` (the `generate()` mixin). They are replaced
by empty mixins here: LastViT cannot `generate()`, and the export tests are not in the sdist to run.
"""

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "transformers_common_tests"
FILES = ("test_modeling_common.py", "test_backbone_common.py")
STUBS = {
    "__init__.py": "",
    "exporters/__init__.py": "",
    "exporters/test_export.py": (
        "class ExportTesterMixin:\n    " + '"""Empty: tests/exporters/ is not in the transformers sdist."""\n'
    ),
    "generation/__init__.py": "",
    "generation/test_utils.py": (
        "class GenerationTesterMixin:\n    " + '"""Empty: tests/generation/ is not in the transformers sdist."""\n'
    ),
}


def cache_folder() -> Path:
    default = Path.home() / ".cache" / "lastvit" / f"transformers-tests-{transformers.__version__}"
    return Path(os.environ.get("LASTVIT_TRANSFORMERS_TESTS", default))


def fetch(folder: Path) -> None:
    """Download the installed version's sdist with pip and keep its common test files under `folder`."""
    version = transformers.__version__
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-binary", ":all:"]
        subprocess.run([*command, "--no-deps", "--quiet", "-d", tmp], check=True, timeout=600)
        (sdist,) = Path(tmp).glob("transformers-*.tar.gz")
        package = Path(tmp) / PACKAGE
        with tarfile.open(sdist) as archive:
            for name in FILES:
                member = archive.extractfile(f"transformers-{version}/tests/{name}")
                (package / name).parent.mkdir(parents=True, exist_ok=True)
                (package / name).write_bytes(member.read())
        for name, text in STUBS.items():
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            (package / name).write_text(text)
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(package, folder / PACKAGE)  # appears whole or not at all


def load():
    """Import the cached common test modules, fetching them first if needed; returns (modeling, backbone)."""
    folder = cache_folder()
    if not all((folder / PACKAGE / name).exists() for name in FILES):
        fetch(folder)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    from transformers_common_tests import test_backbone_common, test_modeling_common

    return test_modeling_common, test_backbone_common
