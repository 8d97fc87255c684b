"""Files that appear whole or not at all: every writer of results, figures and tables goes through here."""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def atomic_write(path: str, write: Callable[[str], object]) -> None:
    """Call `write(tmp_path)`, then rename onto `path`.

    The temporary sits beside `path` and keeps its extensions (writers such as
    nibabel pick the format from them), so an interrupted run never leaves a
    half-written file and never destroys the previous one.
    """
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """`atomic_write` of a text file."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)
