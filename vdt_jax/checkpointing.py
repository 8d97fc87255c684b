"""Orbax checkpoints of a run: train state, data-iterator position and config, together.

Layout: `<workdir>/checkpoints/<step>/{state,data,config}`. `state` holds
params, batch_stats, opt_state and step; `data` is grain's iterator state (one
JSON file per process); `config` is the run's resolved config as JSON. Saves
are asynchronous and every process takes part (Orbax coordinates multi-host
writes); paths are made absolute because Orbax requires it.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


class Checkpointer:
    """Save every `every_steps` steps (plus forced saves), keep the newest `keep`, resume the latest."""

    def __init__(self, workdir: str, *, every_steps: int, keep: int, async_save: bool = True):
        self.directory = checkpoint_dir(workdir)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(int(every_steps), 1),
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        """True at the save interval, and at a preemption sync point Orbax detects."""
        return self.manager.should_save(step)

    def save(self, step: int, state: Any, data_iterator: Any, config: ml_collections.ConfigDict, *, force: bool = False) -> bool:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(serialization.to_state_dict(state)),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            config=ocp.args.JsonSave(config.to_dict()),
        )
        return self.manager.save(step, args=args, force=force)

    def restore(self, step: int, state: Any, data_iterator: Any) -> Any:
        """Restore `state` (a template with the target shardings) and the iterator position in place.

        The state restores onto any topology. The data position is per process, so after a change in
        the number of processes it cannot carry over: the iterator then starts afresh, with a warning.
        """
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), serialization.to_state_dict(state)
        )
        items = {"state": ocp.args.StandardRestore(target)}
        data_file = f"process_{jax.process_index()}-of-{jax.process_count()}.json"  # grain's naming
        if os.path.exists(os.path.join(self.directory, str(step), "data", data_file)):
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        else:
            logging.warning(
                "checkpoint step %d was written by a different number of processes (no data/%s): "
                "restoring the model and optimizer; the data order starts again from the beginning",
                step, data_file,
            )
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return serialization.from_state_dict(state, restored["state"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _resolve(path: str) -> str:
    """A workdir, its checkpoints/ folder, or one step folder -> the folder holding step folders."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
        return os.path.join(path, CHECKPOINT_DIR)
    return path


def load_variables(path: str, step: int | None = None) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
    """Model variables and config of a saved run, as numpy, on any topology.

    Args:
      path: a run's workdir, its `checkpoints/` folder, or a step folder inside it.
      step: the step to load; None for the latest.

    Returns:
      ({"params": ..., "batch_stats": ...}, the run's config).
    """
    path = _resolve(path)
    if os.path.isdir(os.path.join(path, "state")):  # a single step folder
        step = int(os.path.basename(path)) if step is None else step
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoints at {path}: expected a vdt-jax workdir or its checkpoints/ folder")
    manager = ocp.CheckpointManager(
        path,
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
        # Without handlers the state's metadata is None, Orbax falls back to the shardings it was saved
        # with, and a checkpoint from more processes (unknown device ids) fails with "Topology mismatch".
        item_handlers={"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()},
    )
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"{path} holds no checkpoint steps")
    step = manager.latest_step() if step is None else step
    if step not in steps:
        raise ValueError(f"no checkpoint for step {step} in {path}; available steps: {sorted(steps)}")
    # Restore onto this host's first device whatever topology wrote the checkpoint.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    metadata = manager.item_metadata(step)["state"]
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore())
    )
    manager.close()
    state = jax.tree.map(np.asarray, restored["state"])
    variables = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
    return variables, ml_collections.ConfigDict(restored["config"])
