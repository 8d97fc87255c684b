"""Start-up shared by every entry point: one error path, the --config flag, one training start.

Every `python -m vdt_jax.<command>` ends with

    if __name__ == "__main__":
        entrypoint.run(main)          # instead of absl.app.run(main)

so a user mistake (`vdt_jax.errors.UserError`, absl's `UsageError`, a bad
flag or --config field) ends the program with one `error: ...` line on stderr
and exit status 2, without a traceback; `VDT_TRACEBACK=1` shows the
traceback (for bug reports). Any other exception is a bug and keeps its
traceback. The training entry points define their flags with
`define_run_flags` and their `main` calls `train_main`: the same --config,
--workdir and --print_config flags, the cheap checks before anything
expensive, the multi-process start-up and the one training loop.

This module imports no JAX: a mistake is reported before JAX even loads.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from typing import Any, Callable, Iterator

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

# compile_cache and distributed define their flags (--compile_cache, the multi-process ones) at import.
from vdt_jax import compile_cache, config_args, distributed, storage
from vdt_jax.errors import ConfigError, UserError

TRACEBACK_ENV = "VDT_TRACEBACK"

Summary = Callable[[ml_collections.ConfigDict, dict[str, Any], str, float], None]


def run(main: Callable[[list[str]], Any]) -> None:
    """`absl.app.run(main)`, with every user mistake printed as one `error: ...` line and exit status 2.

    Args:
      main: the entry point's main(argv), as for `absl.app.run`.
    """
    with exit_on_user_error():
        app.run(_usage_errors_as_user_errors(main), flags_parser=_parse_flags)


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turns a UserError, absl UsageError or flag error raised inside into `error: ...` on stderr, exit 2."""
    try:
        yield
    except (UserError, app.UsageError, flags.Error) as error:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        first, _, rest = str(error).strip().partition("\n")
        sys.stdout.flush()
        sys.stderr.write(f"error: {first}\n" + (rest + "\n" if rest else ""))
        sys.stderr.flush()
        sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        raise UserError(str(error)) from error


def _usage_errors_as_user_errors(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """absl would print the whole usage text for a UsageError; we print its one line instead."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> Any:
        try:
            return main(argv)
        except app.UsageError as error:
            raise UserError(str(error)) from error

    return wrapped


def define_run_flags(default_config: str, default_workdir: str, workdir_help: str) -> None:
    """--config (fields overridable as --config.<field>=...), --print_config and --workdir."""
    define_config_flag("config", default_config, "Path to an ml_collections config file (path.py or path.py:arg).")
    flags.DEFINE_string("workdir", default_workdir, workdir_help + " A local folder or a gs:// URL.")
    show_in_help("workdir")


def define_config_flag(name: str, default: str, help_text: str) -> None:
    """An ml_collections config-file flag, checked first (see `config_args`), and --print_config."""
    with exit_on_user_error():
        config_args.check_config_arguments(sys.argv[1:], name, default)
        try:
            config_flags.DEFINE_config_file(name, default, help_text)
        except (AttributeError, KeyError, TypeError, ValueError, OSError) as error:  # what ml_collections raises
            raise UserError(f"--{name}: {error}") from error
    flags.DEFINE_bool("print_config", False, f"Print the resolved --{name} (every field you can override) and exit.")
    show_in_help(name, "print_config")


def show_in_help(*names: str) -> None:
    """List these flags (defined outside the entry-point module) in --help, not only in --helpfull."""
    for name in names:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def print_config_requested(name: str = "config") -> bool:
    """With --print_config: prints the resolved config and returns True (the entry point then stops)."""
    if flags.FLAGS.print_config:
        print(flags.FLAGS[name].value)
    return flags.FLAGS.print_config


def quiet_logs() -> None:
    """Warnings and errors only, unless --verbosity was given."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax and TFDS are chatty at INFO; --verbosity=0 restores it


def train_main(
    argv: list[str],
    make_task: Callable[[ml_collections.ConfigDict, str], Any],
    summary: Summary,
    check_config: Callable[[ml_collections.ConfigDict], None] | None = None,
) -> None:
    """The body of a training entry point: cheap checks, start up, build the task, train, print the summary.

    Args:
      argv: the positional command-line arguments (none are accepted).
      make_task: (config, absolute workdir) -> the `Task` to train.
      summary: prints the end-of-run summary from (config, final metrics, workdir, seconds).
      check_config: the entry point's own cheap checks of the config (paths that must exist, ...),
        run before any data preparation, compilation or folder creation; raises UserError.
    """
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags look like --name=value)")
    config = flags.FLAGS.config
    if print_config_requested():
        return
    quiet_logs()
    workdir = storage.check_workdir(flags.FLAGS.workdir)
    distributed.plan(**distributed.flag_settings(), on_cloud_tpu=False)  # half-configured flags fail here
    check_batch_norm_groups(config)
    if check_config is not None:
        check_config(config)
    distributed.initialize_from_flags()  # join a multi-process run
    compile_cache.enable_from_flags()
    from vdt_jax.train import loop  # JAX loads here, after every cheap check

    start = time.perf_counter()
    metrics = loop.train_and_evaluate(config, workdir, make_task(config, workdir))
    summary(config, metrics, workdir, time.perf_counter() - start)


def check_batch_norm_groups(config: ml_collections.ConfigDict) -> None:
    """model.bn_group_size must be 0 or divide the global training batch (GroupedBatchNorm splits it)."""
    group, batch = config.model.bn_group_size, config.batch_size
    if group < 0 or (group and batch % group):
        raise ConfigError(
            f"--config.model.bn_group_size={group} must be 0 (statistics over the whole batch) or divide "
            f"--config.batch_size={batch}, e.g. the per-device batch"
        )


def check_init_from(config: ml_collections.ConfigDict) -> None:
    """config.init_from, when it names a path ("" and "auto" do not), must exist."""
    if config.init_from not in ("", "auto"):
        storage.check_exists(config.init_from, "--config.init_from")
