"""Run folders that are local paths or object-store URLs (gs://, s3://): the one place that tells them apart.

Orbax writes checkpoints to both natively (TensorStore speaks gs:// and s3://,
and Orbax commits a checkpoint on an object store without renaming folders).
Everything else a run writes into its workdir (metrics.jsonl, config.json,
TensorBoard events, fine-tuning outputs) goes through this module or
`vdt_jax.atomic`, which hand URLs to `etils.epath` (for gs:// it uses
TensorFlow's file system when TensorFlow is installed, else gcsfs: `pip install
"vdt-jax[gcs]"`; `EPATH_USE_TF=false` forces gcsfs). TensorBoard events go to
gs:// through tensorboardX's own google-cloud-storage writer.

`check_workdir` and `check_exists` are the cheap start-up checks: they run
before any data preparation, compilation or folder creation.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from vdt_jax.errors import UserError

# Object stores whose URLs a workdir may be: what etils.epath and TensorStore both read and write.
URL_SCHEMES = ("gs", "s3")
_EXTRA_FOR_SCHEME = {"gs": ("gcsfs", "vdt-jax[gcs]"), "s3": ("s3fs", "s3fs")}


def is_url(path: str) -> bool:
    return "://" in str(path)


def absolute(path: str) -> str:
    """An absolute local path (Orbax requires one), or the URL unchanged."""
    return str(path) if is_url(path) else os.path.abspath(path)


def _epath(path: str) -> Any:
    from etils import epath

    return epath.Path(path)


def exists(path: str) -> bool:
    return _epath(path).exists() if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _epath(path).is_dir() if is_url(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a folder; [] when it does not exist."""
    if not isdir(path):
        return []
    return [p.name for p in _epath(path).iterdir()] if is_url(path) else os.listdir(path)


def makedirs(path: str) -> None:
    """Create a folder and its parents (on object stores folders are implicit: nothing to do)."""
    if not is_url(path):
        os.makedirs(path, exist_ok=True)


def read_text(path: str) -> str:
    if is_url(path):
        return _epath(path).read_text()
    with open(path) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file: on an object store one upload, which appears whole or not at all."""
    if is_url(path):
        _epath(path).write_bytes(data)
        return
    with open(path, "wb") as f:
        f.write(data)


def append_text(path: str, text: str) -> None:
    """Append to a text file; objects cannot be appended to, so on an object store it is rewritten whole."""
    if not is_url(path):
        with open(path, "a") as f:
            f.write(text)
        return
    previous = read_text(path) if exists(path) else ""
    write_bytes(path, (previous + text).encode())


def rename(source: str, target: str) -> None:
    """Move a file or folder (on an object store: copy every object, then delete; not atomic)."""
    if is_url(source):
        _epath(source).rename(target)
    else:
        os.replace(source, target)


def check_url_support(url: str) -> None:
    """Raises a UserError unless `url` names an object store this installation can write to."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in URL_SCHEMES:
        raise UserError(f"{url}: unsupported URL scheme {scheme}://; use a local path or one of "
                        + ", ".join(f"{s}://" for s in URL_SCHEMES))
    module, package = _EXTRA_FOR_SCHEME[scheme]
    if importlib.util.find_spec(module) is None and importlib.util.find_spec("tensorflow") is None:
        raise UserError(f"{url}: writing to {scheme}:// needs {module} (pip install \"{package}\") or TensorFlow")
    if scheme == "gs" and importlib.util.find_spec("google.cloud.storage") is None:
        raise UserError(f"{url}: TensorBoard events on gs:// need google-cloud-storage (pip install \"vdt-jax[gcs]\")")


def check_workdir(path: str, flag: str = "--workdir") -> str:
    """The absolute workdir (or URL) if it is, or can become, a writable folder; else a UserError.

    Nothing is created: a failed start leaves the file system as it found it.
    """
    if not path:
        raise UserError(f"{flag} is empty: give the folder (or gs://bucket/folder) the run writes to")
    if is_url(path):
        check_url_support(path)
        return path
    path = os.path.abspath(path)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise UserError(f"{flag}={path} {where}; pass a folder (it is created when missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag}={path}: {existing} is not writable by this user")
    return path


def check_exists(path: str, what: str) -> None:
    """A UserError naming `what` (e.g. "--config.init_from") unless `path` exists."""
    if not exists(path):
        shown = path if is_url(path) else os.path.abspath(path)
        raise UserError(f"{what}={path}: no such file or folder ({shown})")
