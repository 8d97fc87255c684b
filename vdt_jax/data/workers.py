"""What grain's data-loader worker processes do besides loading: outlive SIGTERM, never outlive their parent.

With data.num_workers > 0, `vdt_jax.data.loading.train_loader` puts a
`SetUpWorker` first among the transforms. grain sends the pipeline to each
worker process pickled, so the transform is unpickled once in every worker,
and that is where it sets the worker up (`set_up_this_worker`):

  - SIGTERM is ignored: schedulers that signal every process of a job
    (SLURM, a VM shutting down) would otherwise end the workers, and with them
    the run, before the main process has saved the agreed preemption
    checkpoint (`vdt_jax.train.preemption`); the workers stop when the main
    process shuts its loaders down;
  - a daemon thread watches the parent: once the main process is gone (a
    kill -9, the OOM killer) the worker exits within `POLL_SECONDS`. Ignoring
    SIGTERM, it would otherwise live on, reparented, holding its memory, and
    so would multiprocessing's resource tracker, which exits when the last
    process holding its pipe does.

Why not the entry-point module: grain starts workers with multiprocessing's
"spawn", which re-imports the main module in each worker except when it is a
package's `__main__` (`python -m vdt_jax.pretrain`), so code there never runs
in the workers. Why a polling thread rather than prctl(PR_SET_PDEATHSIG): the
death signal fires when the *thread* that started the worker ends, and which
thread that is belongs to grain.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import grain

POLL_SECONDS = 0.5
_set_up = False


class SetUpWorker(grain.transforms.Map):
    """An identity transform that sets up the data-loader worker process it is unpickled in."""

    def map(self, element: Any) -> Any:
        return element

    def __reduce__(self) -> tuple:
        return _unpickle_set_up_worker, ()


def _unpickle_set_up_worker() -> SetUpWorker:
    if multiprocessing.parent_process() is not None:  # a worker; never the main process (e.g. copy.deepcopy)
        set_up_this_worker()
    return SetUpWorker()


def set_up_this_worker() -> None:
    """Ignore SIGTERM and exit with the parent process; once per process."""
    global _set_up
    if _set_up:
        return
    _set_up = True
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watch_parent(os.getppid())


def watch_parent(parent_pid: int, poll_seconds: float = POLL_SECONDS) -> threading.Thread:
    """Starts a daemon thread that ends this process as soon as `parent_pid` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent_pid and parent_pid != 1:  # 1: the parent was already gone
            time.sleep(poll_seconds)
        os._exit(1)  # no clean-up: the process that would receive the results is gone

    thread = threading.Thread(target=watch, name="vdt-watch-parent", daemon=True)
    thread.start()
    return thread
