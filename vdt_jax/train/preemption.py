"""Preemption: agree across processes on one step to checkpoint at, then stop.

Spot / preemptible TPU VMs and cluster schedulers announce an eviction with
SIGTERM and kill the process some seconds later. A multi-host run cannot
simply save when the signal lands: every process must save the *same* step
(each writes its part of the checkpoint), and the signal may reach only some
of them, at different moments. `PreemptionWatch.reached_sync_point(step)`,
called once per training step by every process, returns True at exactly one
step, the same on all processes; the loop then saves, waits for the write to
finish and raises `Preempted`, which ends the program with exit status 0.
Running the same command again resumes from that checkpoint.

Two ways to agree, chosen automatically:

  "jax"     when `jax.distributed` is initialized (every multi-host run),
            JAX's preemption sync manager owns SIGTERM: the process that
            receives it tells the coordination service, every process
            reports the step it is at, and all agree on the next step after
            the furthest one (`multihost_utils.reached_preemption_sync_point`,
            which Orbax's `CheckpointManager.should_save` also consults, so
            both say "save" at the same step). No per-step cost.
  "signal"  otherwise: a Python SIGTERM handler sets a flag. A single process
            acts on it at the next step; several processes (distributed
            runtime without the preemption service) compare flags with a
            tiny all-gather every `check_every` steps and stop at the first
            such step where any of them was signalled.

Limits: in "jax" mode a notice that arrives before the loop has reported its
starting step (`PreemptionWatch.start`: during start-up, data preparation or
the checkpoint restore) is agreed against step 0, which a resumed run never
meets, so that run goes on until it is killed; it loses nothing the
checkpoint it resumed from does not hold. A notice during a long evaluation
is acted on after it. Only the main process is covered:
schedulers that signal every process (SLURM, a VM shutting down) also
reach grain's data-loader worker processes (data.num_workers > 0), which
would die and take the run down before the agreed step; the data loader
makes them ignore SIGTERM (`vdt_jax.data.workers`).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import numpy as np
from absl import logging


class Preempted(SystemExit):
    """The run saved a checkpoint after a preemption notice and stopped; rerun the same command to resume.

    A `SystemExit` with status 0: the process ends cleanly (no traceback)
    unless a caller catches it.
    """

    def __init__(self, step: int, checkpoint_dir: str):
        super().__init__(0)
        self.step = step
        self.checkpoint_dir = checkpoint_dir

    def __str__(self) -> str:
        return (
            f"preempted: saved step {self.step} to {self.checkpoint_dir}; "
            "run the same command again to resume from it"
        )


def jax_sync_manager_available() -> bool:
    """True when jax.distributed runs with its preemption sync manager (it installs a SIGTERM handler)."""
    from jax._src import distributed as jax_distributed  # the manager lives only on this private state object

    state = jax_distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None


class PreemptionWatch:
    """Tells the loop at which step every process saves and stops after a preemption notice.

    Args:
      check_every: in "signal" mode with several processes, compare the
        processes' flags every this many steps (a small all-gather).
      mode: "jax" or "signal"; None picks "jax" whenever the distributed
        runtime's preemption service is up.
    """

    def __init__(self, *, check_every: int = 10, mode: str | None = None):
        self.mode = mode or ("jax" if jax_sync_manager_available() else "signal")
        if self.mode not in ("jax", "signal"):
            raise ValueError(f"preemption mode must be 'jax' or 'signal', got {self.mode!r}")
        self.check_every = max(int(check_every), 1)
        self._signalled = threading.Event()
        self._installed = False
        self._previous_handler: Any = None
        if self.mode == "signal":
            self._install_handler()

    @property
    def signalled(self) -> bool:
        """A SIGTERM reached this process ("signal" mode only; JAX keeps its own record)."""
        return self._signalled.is_set()

    def start(self, step: int) -> None:
        """Call once before the first step: JAX agrees on "the furthest reported step + 1", and a
        process that has not reported yet counts as step 0, which a resumed run never reaches."""
        if self.mode == "jax":
            self.reached_sync_point(step)

    def reached_sync_point(self, step: int) -> bool:
        """Call with the current step, every step, on every process; True once, at the agreed step."""
        if self.mode == "jax":
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        if jax.process_count() == 1:
            return self.signalled
        if step % self.check_every:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.signalled, np.int32))
        return bool(np.any(flags))

    def close(self) -> None:
        """Puts back the SIGTERM handler that was there before."""
        if self._installed:
            # None means a handler set outside Python; the default is the closest we can restore.
            previous = signal.SIG_DFL if self._previous_handler is None else self._previous_handler
            signal.signal(signal.SIGTERM, previous)
            self._installed = False

    def __enter__(self) -> "PreemptionWatch":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _install_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logging.warning("not on the main thread: SIGTERM cannot be caught, preemption saves are off")
            return
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_signal)
        self._installed = True

    def _on_signal(self, signum: int, frame: Any) -> None:
        del frame
        if not self._signalled.is_set():
            logging.warning("received %s: will checkpoint at the next step all processes agree on and stop",
                            signal.Signals(signum).name)
        self._signalled.set()

