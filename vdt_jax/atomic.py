"""Files that appear whole or not at all: every writer of results, figures and tables goes through here.

Local files are written beside their target and renamed onto it; on an object
store (a gs:// workdir) the file is written to a local temporary folder and
uploaded as one object, which readers see whole or not at all.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

from vdt_jax import storage


def atomic_write(path: str, write: Callable[[str], object]) -> None:
    """Call `write(tmp_path)`, then rename onto `path`.

    The temporary sits beside `path` and keeps its extensions (writers such as
    nibabel pick the format from them), so an interrupted run never leaves a
    half-written file and never destroys the previous one.
    """
    if storage.is_url(path):
        with tempfile.TemporaryDirectory(prefix="vdt-upload-") as folder:
            tmp = os.path.join(folder, os.path.basename(path))
            write(tmp)
            with open(tmp, "rb") as f:
                storage.write_bytes(path, f.read())
        return
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
