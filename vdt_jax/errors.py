"""The one error type for user mistakes.

Entry points print a `UserError` as a single `error: ...` line and exit with
status 2 (see `vdt_jax.entrypoint`); anything else is a bug and keeps its
traceback. Messages name the file, key or value that is wrong and say what to do.
"""


class UserError(Exception):
    """A mistake the user can fix: a wrong path, setting, file or value; the message says which and how."""
