"""Start-up shared by the training entry points (`python -m vdt_jax.pretrain`, `python -m vdt_jax.finetune`).

Each entry point defines its flags with `define_run_flags` and its `main` calls
`train_main`, so both parse the same --config/--workdir flags, join a
multi-process run the same way and go through the one training loop.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from vdt_jax import compile_cache  # at import: defines --compile_cache
from vdt_jax import distributed  # at import: defines the multi-process flags
from vdt_jax.train import loop
from vdt_jax.train.task import Task

Summary = Callable[[ml_collections.ConfigDict, dict[str, Any], str, float], None]


def define_run_flags(default_config: str, default_workdir: str, workdir_help: str) -> None:
    """--config (an ml_collections config file, fields overridable as --config.<field>=...) and --workdir."""
    config_flags.DEFINE_config_file("config", default_config, "Path to an ml_collections config file.")
    flags.DEFINE_string("workdir", default_workdir, workdir_help)


def start_run() -> str:
    """Quiet the chatty libraries, check --workdir, join a multi-process run, turn on the
    persistent compilation cache; returns the absolute workdir."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax and TFDS are chatty at INFO; --verbosity=0 restores it
    if "://" in flags.FLAGS.workdir:
        raise app.UsageError(
            f"--workdir={flags.FLAGS.workdir}: use a filesystem path that every host sees (for a bucket, "
            "a gcsfuse mount such as /gcs/<bucket>/<run>, see launch/tpu_install.sh), not a URL"
        )
    try:
        distributed.initialize_from_flags()
    except distributed.DistributedConfigError as error:
        raise app.UsageError(str(error)) from error
    compile_cache.enable_from_flags()
    return os.path.abspath(flags.FLAGS.workdir)


def train_main(argv: list[str], make_task: Callable[[ml_collections.ConfigDict, str], Task], summary: Summary) -> None:
    """The body of a training entry point: start up, build the task, train and evaluate, print the summary.

    Args:
      argv: the positional command-line arguments (none are accepted).
      make_task: (config, absolute workdir) -> the `Task` to train.
      summary: prints the end-of-run summary from (config, final metrics, workdir, seconds).
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    workdir = start_run()
    config = flags.FLAGS.config
    start = time.perf_counter()
    metrics = loop.train_and_evaluate(config, workdir, make_task(config, workdir))
    summary(config, metrics, workdir, time.perf_counter() - start)
