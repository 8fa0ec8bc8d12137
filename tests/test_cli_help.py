"""`--help` of the CLIs is fast: it imports none of the heavy libraries (checked in a fresh process)."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "datasets", "accelerate", "peft", "matplotlib")


@pytest.mark.parametrize("module", ["train", "finetune_peft", "publish", "demo"])
def test_help_imports_no_heavy_library(module):
    code = (
        "import sys\n"
        f"from training_scripts import {module} as cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
