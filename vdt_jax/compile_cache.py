"""JAX's persistent compilation cache, on by default for every entry point.

A resumed or repeated run loads its compiled train and eval steps from disk
instead of compiling them again (README, "Speed": the demo's start-up). Where
the cache lives, first match wins:

  --compile_cache=DIR       the flag of every entry point ("off" disables it)
  $VDT_JAX_COMPILE_CACHE    the same values, for launch scripts
  $JAX_COMPILATION_CACHE_DIR  JAX's own variable, if the machine sets it
  ~/.cache/vdt_jax/jax_compile  ($XDG_CACHE_HOME/vdt_jax/jax_compile)

Entries are keyed by the program, the JAX/XLA version and the devices, so a
stale entry is never used; deleting the directory is always safe. Every process
of a multi-host run may share one directory.
"""

from __future__ import annotations

import os

from absl import flags

ENV = "VDT_JAX_COMPILE_CACHE"
OFF = ("off", "none", "false", "0")

_FLAG = flags.DEFINE_string(
    "compile_cache", None, f"Persistent compilation cache directory, or 'off' (default: ${ENV} or ~/.cache/vdt_jax/jax_compile)."
)


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vdt_jax", "jax_compile")


def resolve(flag_value: str | None, *, default_on: bool = True) -> str | None:
    """The cache directory to use, or None for no cache.

    Args:
      flag_value: the --compile_cache value (None when not given).
      default_on: whether to use `default_dir()` when nothing else decides.
    """
    for value in (flag_value, os.environ.get(ENV), os.environ.get("JAX_COMPILATION_CACHE_DIR")):
        if value:
            return None if value.lower() in OFF else os.path.abspath(os.path.expanduser(value))
    return default_dir() if default_on else None


def enable(directory: str | None) -> str | None:
    """Points JAX at `directory` (None: leaves the cache off); returns it."""
    if directory is None:
        return None
    import jax  # here, so that importing this module (every entry point does) does not load JAX

    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    # Cache every program that took over half a second to compile: the train
    # and eval steps, not the many tiny helpers.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return directory


def enable_from_flags(*, default_on: bool = True) -> str | None:
    """`enable(resolve(--compile_cache))`; call after absl has parsed the flags."""
    return enable(resolve(_FLAG.value, default_on=default_on))
