"""The one exception type for bad input: it names the file or key and what was expected."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: a file, array or parameter that is not what the pipeline expects.

    The message always starts with the offending file or parameter, so a user can act on it
    without reading a traceback.
    """

    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")
