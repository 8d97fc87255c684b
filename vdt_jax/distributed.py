"""Multi-process start-up: `jax.distributed.initialize` when the run spans several processes."""

from __future__ import annotations

import os

import jax


def initialize() -> None:
    """Join the multi-controller runtime when the environment says this is one of several processes.

    Single-process runs (the default) do nothing. Multi-host launches set
    VDT_COORDINATOR_ADDRESS, VDT_NUM_PROCESSES and VDT_PROCESS_ID (or run on a
    TPU pod / SLURM, where JAX detects them itself with VDT_DISTRIBUTED=1).
    """
    if os.environ.get("VDT_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=os.environ["VDT_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["VDT_NUM_PROCESSES"]),
            process_id=int(os.environ["VDT_PROCESS_ID"]),
        )
    elif os.environ.get("VDT_DISTRIBUTED") == "1":
        jax.distributed.initialize()
