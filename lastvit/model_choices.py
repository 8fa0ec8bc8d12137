"""The model config's closed sets of values (pooling rules, LazyStrike score rules), for the command
lines' choices, without importing torch or transformers.

They are written once, in `modeling_lastvit/configuration_lastvit.py`. Importing that module runs
`modeling_lastvit/__init__.py` (torch, transformers, the Auto registrations: seconds), which a CLI's
`--help` must not do, so the literals are read from the file's source here (the remote-code rule
keeps the model files free of any import from this library).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


def _config_literals(*names: str) -> tuple:
    spec = importlib.util.find_spec("modeling_lastvit")  # locates the package without running it
    source = Path(spec.origin).with_name("configuration_lastvit.py").read_text()
    values = {
        target.id: ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in names
    }
    return tuple(values[name] for name in names)


POOLING_TYPES, SCORE_RULES = _config_literals("POOLING_TYPES", "SCORE_RULES")

__all__ = ["POOLING_TYPES", "SCORE_RULES"]
