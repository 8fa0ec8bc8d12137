"""Every console script exists, declares its flags through dataclasses, and `--help` stays light.

That every command the README and docs/ name is one of these, and parses, is `tests/test_docs.py`.
"""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
HEAVY = ("torch", "transformers", "datasets", "accelerate", "matplotlib", "peft")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_target_exists(name):
    module, _, function = SCRIPTS[name].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_flag_is_a_dataclass_field_and_defaults_to_the_dataclass_default(name):
    """One way to declare options: each CLI's flags come from the dataclasses it names in `OPTIONS`
    (`lastvit.arguments`), and `--help` shows their defaults (or the CLI's declared `DEFAULTS`)."""
    from lastvit.arguments import declared_defaults

    module = importlib.import_module(SCRIPTS[name].partition(":")[0])
    expected = declared_defaults(*module.OPTIONS, defaults=getattr(module, "DEFAULTS", None))
    actions = [a for a in module.build_parser()._actions if a.dest != "help"]
    assert actions
    for action in actions:
        assert action.dest in expected, f"{name}: {action.option_strings or action.dest} is not a dataclass field"
        assert action.default == expected[action.dest] or (action.required and expected[action.dest] is None), (
            f"{name}: {action.option_strings} defaults to {action.default!r}, its dataclass to {expected[action.dest]!r}"
        )


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_imports_no_heavy_library(name):
    module, _, function = SCRIPTS[name].partition(":")
    code = (
        "import sys\n"
        f"from {module} import {function} as main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert "HEAVY []" in result.stdout, f"{name} --help imports {result.stdout.splitlines()[-1]}"


def test_no_command_line_module_imports_another():
    import ast

    for path in sorted((ROOT / "training_scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                assert node.level == 0, f"{path.name} imports a sibling CLI module (relative import)"
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n == "training_scripts" or n.startswith("training_scripts.") for n in names), (
                f"{path.name} imports another command-line module: shared code belongs in the lastvit library"
            )
