"""User-facing error hierarchy.

Why a hierarchy: the CLI catches :class:`ModalrecError` and prints its message without a traceback
(exit code 2), while genuine bugs still surface as tracebacks. Every message should name the file,
the line (1-based, counting the header as line 1) and the field where that is known.
"""

from __future__ import annotations

from pathlib import Path


class ModalrecError(Exception):
    """Base class for errors caused by user input (data, config, run directories)."""


class DataError(ModalrecError):
    """Bad input data. Formats ``file:line: field: message`` so that editors can jump to it.

    >>> str(DataError("rating is not a number: 'five'", file="u.data", line=12, field="rating"))
    "u.data:12: field 'rating': rating is not a number: 'five'"
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.message = message
        where = ""
        if self.file is not None:
            where = self.file + (f":{line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        if field is not None:
            where += f"field {field!r}: "
        super().__init__(where + message)


class ConfigError(ModalrecError):
    """Bad configuration (TOML file, CLI options, hyperparameters)."""


class RunDirError(ModalrecError):
    """A run directory is missing, incomplete or has been tampered with (checksum mismatch)."""


class FitError(ModalrecError):
    """Training failed in a way the user can act on (diverged to NaN, no usable data)."""
