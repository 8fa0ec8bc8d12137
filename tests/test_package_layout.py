"""The import graph between the packages: the library (`lastvit`) may import the models
(`modeling_lastvit`), never the reverse, so the models are what a checkpoint carries and nothing else.
(`test_saving_and_remote_code.py` checks the stricter rule on the files a saved folder holds.)"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_PACKAGE = ROOT / "modeling_lastvit"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module a file imports (anywhere in it, functions included), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_the_model_package_never_imports_the_library():
    files = sorted(MODEL_PACKAGE.rglob("*.py"))
    assert any(path.name == "modeling_lastvit_clip.py" for path in files)
    problems = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if module.split(".")[0] in ("lastvit", "training_scripts", "benchmarks")
    ]
    assert not problems, "modeling_lastvit must not import the library:\n" + "\n".join(problems)


def test_the_model_package_is_flat_model_files():
    assert not [p for p in MODEL_PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"]
