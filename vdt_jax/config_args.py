"""The --config flag's arguments, checked before ml_collections sees them.

ml_collections loads the config file and applies every --config.<field>=...
override while the flag is *defined* (at import of the entry point), and a
misspelt file or field then ends in a long traceback with the useful line
last. `check_config_arguments(argv)` loads the file the command line names
(`path.py` or `path.py:argument`, as ml_collections does) and checks every
override's field first, so each mistake is one `UserError` that names the
closest valid file or field.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from typing import Iterator, Sequence

import ml_collections

from vdt_jax.errors import UserError

_HINT = "--print_config lists every field"


def config_spec(argv: Sequence[str], name: str, default: str) -> str:
    """The value of the last --<name>=... (or --<name> VALUE) before a bare "--"; `default` without one."""
    spec = default
    args = list(_until_double_dash(argv))
    for i, arg in enumerate(args):
        flag, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or flag != name:
            continue
        if eq:
            spec = value
        elif i + 1 < len(args):
            spec = args[i + 1]
    return spec


def override_fields(argv: Sequence[str], name: str) -> list[str]:
    """Dotted fields of every --<name>.<field>[=value] and --no<name>.<field> on the command line."""
    fields = []
    for arg in _until_double_dash(argv):
        flag = arg.lstrip("-").split("=", 1)[0]
        if not arg.startswith("-"):
            continue
        for prefix in (f"{name}.", f"no{name}."):
            if flag.startswith(prefix):
                fields.append(flag[len(prefix):])
                break
    return fields


def load_config(spec: str, flag: str = "--config") -> ml_collections.ConfigDict:
    """Runs `get_config()` (or `get_config(argument)` for "path.py:argument") of a config file.

    Raises:
      UserError: the file does not exist, fails to load, has no get_config, or rejects the argument.
    """
    path, _, argument = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"{flag}={spec}: no such config file ({os.path.abspath(path)}){_closest_file(path)}")
    module_spec = importlib.util.spec_from_file_location(f"_vdt_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # a user's config file with a mistake in it
        raise UserError(f"{flag}={spec}: the file failed to load: {type(error).__name__}: {error}") from error
    if not hasattr(module, "get_config"):
        raise UserError(f"{flag}={spec}: the file defines no get_config()")
    try:
        return module.get_config(argument) if argument else module.get_config()
    except (TypeError, ValueError) as error:
        raise UserError(f"{flag}={spec}: {error}") from error


def check_config_arguments(argv: Sequence[str], name: str, default: str) -> ml_collections.ConfigDict:
    """Loads the config --<name> names and checks that every --<name>.<field> override names a field.

    Returns:
      The config as the file gives it (before overrides).
    """
    spec = config_spec(argv, name, default)
    config = load_config(spec, f"--{name}")
    known = set(dotted_fields(config))
    for field in override_fields(argv, name):
        if field not in known:
            raise UserError(f"--{name}.{field}: {spec} has no field {field!r}{_closest_field(field, known, name)}")
    return config


def dotted_fields(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[str]:
    """Every field of `config` as a dotted path, nested ConfigDicts included (both the dict and its fields)."""
    for key, value in config.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, ml_collections.ConfigDict):
            yield from dotted_fields(value, path + ".")


def _closest_field(field: str, known: set[str], name: str) -> str:
    match = difflib.get_close_matches(field, sorted(known), n=1, cutoff=0.6)
    if not match:  # a field given without its parent, e.g. "widths" for "model.widths"
        by_leaf = {path.rsplit(".", 1)[-1]: path for path in sorted(known, reverse=True)}
        leaf = difflib.get_close_matches(field.rsplit(".", 1)[-1], sorted(by_leaf), n=1, cutoff=0.75)
        match = [by_leaf[leaf[0]]] if leaf else []
    return f"; did you mean --{name}.{match[0]}? ({_HINT})" if match else f" ({_HINT})"


def _closest_file(path: str) -> str:
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"; there is no folder {folder} here: run from the repository root or give the full path"
    names = sorted(n for n in os.listdir(folder) if n.endswith(".py") and not n.startswith("_"))
    match = difflib.get_close_matches(os.path.basename(path), names, n=1, cutoff=0.6)
    return f"; did you mean {os.path.join(os.path.dirname(path), match[0])}?" if match else f"; configs there: {', '.join(names)}"


def _until_double_dash(argv: Sequence[str]) -> Iterator[str]:
    for arg in argv:
        if arg == "--":
            return
        yield arg
