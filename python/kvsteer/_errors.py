"""Exceptions of kvsteer: one class per error kind of the C++ library (include/kvsteer/error.h).

Each also derives from the builtin exception a Python caller would expect, so that
``except ValueError`` or ``except FileNotFoundError`` keep working.
"""


class Error(RuntimeError):
    """Any failure reported by kvsteer. ``code`` is the C++ ErrorCode's stable name."""

    code = "error"


class InvalidArgumentError(Error, ValueError):
    """A value passed in is out of range or malformed (wrong shape, NaN coefficient, bad layer)."""

    code = "invalid_argument"


class NotFoundError(Error, FileNotFoundError):
    """A file, key or item does not exist."""

    code = "not_found"


class IoError(Error, OSError):
    """Reading or writing a file failed."""

    code = "io"


class FormatError(Error):
    """A file is corrupt, or made for another model (a vector of another model) or a newer format."""

    code = "format"


class UnsupportedError(Error):
    """An architecture, cache type or layout kvsteer cannot steer."""

    code = "unsupported"


class BackendError(Error):
    """libllama failed."""

    code = "backend"


class CancelledError(Error):
    """The computation was stopped (Ctrl-C raises KeyboardInterrupt instead)."""

    code = "cancelled"
