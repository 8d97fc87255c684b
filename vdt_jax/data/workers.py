"""What grain's data-loader worker processes do besides loading: outlive SIGTERM, never outlive their parent.

grain starts its workers (data.num_workers > 0) with multiprocessing's
"spawn", which imports the entry-point module again in each worker under the
name "__mp_main__". Each entry point calls `set_up_data_workers(__name__)` at
its top level; there, and only there, the worker

  - ignores SIGTERM: schedulers that signal every process of a job (SLURM, a
    VM shutting down) would otherwise end the workers, and with them the run,
    before the main process has saved the agreed preemption checkpoint
    (`vdt_jax.train.preemption`); they stop when the main process shuts its
    loaders down;
  - watches its parent: once the main process is gone (a kill -9, the OOM
    killer), the worker exits within `POLL_SECONDS`. Ignoring SIGTERM, it
    would otherwise live on, reparented, holding its memory, and so would
    multiprocessing's resource tracker, which exits when the last process
    holding its pipe does.

A polling thread rather than prctl(PR_SET_PDEATHSIG): the death signal fires
when the *thread* that started the worker ends, and which thread grain starts
its workers from is grain's business.
"""

from __future__ import annotations

import os
import signal
import threading
import time

POLL_SECONDS = 0.5
WORKER_MODULE_NAME = "__mp_main__"


def set_up_data_workers(module_name: str) -> bool:
    """Call at the top level of an entry-point module with its `__name__`; True in a data worker."""
    if module_name != WORKER_MODULE_NAME:
        return False
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watch_parent(os.getppid())
    return True


def watch_parent(parent_pid: int, poll_seconds: float = POLL_SECONDS) -> threading.Thread:
    """Starts a daemon thread that ends this process as soon as `parent_pid` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent_pid and parent_pid != 1:  # 1: the parent was already gone
            time.sleep(poll_seconds)
        os._exit(1)  # no clean-up: the process that would receive the results is gone

    thread = threading.Thread(target=watch, name="vdt-watch-parent", daemon=True)
    thread.start()
    return thread
