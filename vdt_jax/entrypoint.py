"""Start-up shared by the `python -m vdt_jax.pretrain` and `python -m vdt_jax.finetune` entry points."""

from __future__ import annotations

import os

from absl import app, flags, logging

from vdt_jax import compile_cache  # at import: defines --compile_cache
from vdt_jax import distributed  # at import: defines the multi-process flags


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
