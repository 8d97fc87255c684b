"""The one error type for user mistakes, and the subclass for config values.

Entry points print a `UserError` as a single `error: ...` line and exit with
status 2 (`vdt_jax.entrypoint.run`); anything else is a bug and keeps its
traceback (`VDT_TRACEBACK=1` shows it for user errors too). Messages name the
file, key or value that is wrong and say what to do.
"""


class UserError(Exception):
    """A mistake the user can fix: a wrong path, setting, file or value; the message says which and how."""


class ConfigError(UserError, ValueError):
    """A config field holds a value the code cannot use (a `ValueError` too, for callers that catch those)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (a `FileNotFoundError` too)."""


class MissingDependencyError(UserError, ImportError):
    """An optional package this use needs is not installed; the message names the pip extra."""
