"""The one error type the CLI turns into a single line and an exit code."""

from __future__ import annotations


class MemstackError(Exception):
    """A problem the operator can act on. `str()` is one line naming it."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
