"""The one base class of the errors a user can cause (a bad flag, path, file or dataset), and the
top-level handler every `lastvit-*` command uses to print them as one line.

Each library room keeps its own error class (`DataError`, `ModelPathError`, `ConfigError`,
`PublishError`, ...), all derived from `LastViTUserError`, so a command reports any of them as
``error: <message>`` (exit code 1) without a traceback, while a bug (any other exception) still
shows its traceback. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class LastViTUserError(ValueError):
    """A problem with what the user gave (flags, paths, files, data); the message names it and the fix."""


def report_user_errors(run: Callable[[], int | None], code: int = 1) -> int:
    """Run a command's body; a `LastViTUserError` is printed as one line and gives exit `code`."""
    try:
        return run() or 0
    except LastViTUserError as error:
        print(f"error: {error}", file=sys.stderr)
        return code
