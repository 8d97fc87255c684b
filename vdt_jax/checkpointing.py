"""Orbax checkpoints of a run: train state, data-iterator position and config, together.

Layout: `<workdir>/checkpoints/<step>/{state,data,config}`. `state` holds
params, batch_stats, opt_state and step; `data` is grain's iterator state (one
JSON file per process); `config` is the run's resolved config as JSON. Saves
are asynchronous and every process takes part (Orbax coordinates multi-host
writes); local paths are made absolute because Orbax requires it, and a
gs:// workdir is written directly (Orbax commits a step on an object store
with a marker file instead of a folder rename).

Resuming (`Checkpointer.restore_latest`) takes the newest *usable* step. A
step that cannot be read (a file truncated or deleted inside it, as a crash
of the storage layer leaves it) is reported with the reason, moved aside to
`checkpoints/<step>.corrupt-<UTC time>` and the previous step is tried. It is
moved rather than left in place because Orbax would otherwise keep counting
it as the newest step: its retention would delete good steps before it, and
the resumed run could not save that step number again. Nothing is deleted.
A step that reads fine but does not fit the run (another model or optimizer)
is the user's mistake, not damage: that stops the run with a message.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization

from vdt_jax import storage
from vdt_jax.errors import ConfigError, MissingFileError, UserError

CHECKPOINT_DIR = "checkpoints"


class CheckpointMismatchError(UserError):
    """A readable checkpoint that does not fit the run's state (another config wrote it)."""


class DamagedCheckpointError(RuntimeError):
    """A checkpoint step that cannot be read completely."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(storage.absolute(workdir), CHECKPOINT_DIR)


class Checkpointer:
    """Save every `every_steps` steps (plus forced saves), keep the newest `keep`, resume the newest usable one."""

    def __init__(self, workdir: str, *, every_steps: int, keep: int, async_save: bool = True):
        self.directory = checkpoint_dir(workdir)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(int(every_steps), 1),
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=False,  # the folder appears with the first save, so a failed start leaves none
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

        Raises:
          DamagedCheckpointError: this process's data-position file is missing.
        """
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), serialization.to_state_dict(state)
        )
        items = {"state": ocp.args.StandardRestore(target)}
        if self._data_position_saved(step):
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return serialization.from_state_dict(state, restored["state"])

    def restore_latest(self, state: Any, data_iterator: Any) -> tuple[Any, int | None]:
        """Restore the newest usable step; damaged steps are moved aside with a warning.

        Returns:
          (the restored state, its step), or (`state` unchanged, None) when there is no usable step.

        Raises:
          CheckpointMismatchError: the newest step reads fine but does not fit `state`.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                error = None
                restored = self.restore(step, state, data_iterator)
            except Exception as raised:  # classified below: damage, or a mismatch with this run
                error = raised
            if _all_processes(error is None):
                return restored, step
            problem = self.damage(step)
            if not _any_process(problem is not None):
                raise CheckpointMismatchError(
                    f"checkpoint step {step} in {self.directory} does not fit this run ({_describe(error)}); "
                    f"resume with the config it was written with ({self.directory}/{step}/config) or use a new --workdir"
                ) from error
            self._set_aside(step, problem or _describe(error))
        return state, None

    def damage(self, step: int) -> str | None:
        """Why `step` cannot be read completely (every array, the config, this process's data position), or None."""
        reader = _reader(self.directory)
        try:
            if self._data_position_saved(step):
                json.loads(storage.read_text(_data_file(self.directory, step)))
            _read_step(reader, step)
        except Exception as error:  # anything that stops a full read is damage
            return _describe(error)
        finally:
            reader.close()
        return None

    def _data_position_saved(self, step: int) -> bool:
        """This process's data file exists; False after a change in process count (with a warning).

        Raises:
          DamagedCheckpointError: files of this process count exist, but not this process's.
        """
        if storage.exists(_data_file(self.directory, step)):
            return True
        same_count = [n for n in _data_files(self.directory, step) if n.endswith(f"-of-{jax.process_count()}.json")]
        if same_count or not _data_files(self.directory, step):
            raise DamagedCheckpointError(f"data/{os.path.basename(_data_file(self.directory, step))} is missing")
        logging.warning(
            "checkpoint step %d was written by a different number of processes: restoring the model and "
            "optimizer; the data order starts again from the beginning", step,
        )
        return False

    def _set_aside(self, step: int, problem: str) -> None:
        aside = os.path.join(self.directory, f"{step}.corrupt-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        message = f"checkpoint step {step} is unusable ({problem}); moved it to {aside} and trying the step before"
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"vdt_check_step_{step}")
        if jax.process_index() == 0:
            storage.rename(os.path.join(self.directory, str(step)), aside)
            print(f"Warning: {message}", flush=True)
        logging.warning(message)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"vdt_set_aside_step_{step}")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _data_file(directory: str, step: int) -> str:
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"  # grain's naming
    return os.path.join(directory, str(step), "data", name)


def _data_files(directory: str, step: int) -> list[str]:
    return [n for n in storage.listdir(os.path.join(directory, str(step), "data")) if n.endswith(".json")]


def _describe(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:400]


def _all_processes(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def _any_process(flag: bool) -> bool:
    return not _all_processes(not flag)


def _resolve(path: str) -> str:
    """A workdir, its checkpoints/ folder, or one step folder -> the folder holding step folders."""
    path = storage.absolute(path)
    if storage.isdir(os.path.join(path, CHECKPOINT_DIR)):
        return os.path.join(path, CHECKPOINT_DIR)
    return path


def _reader(directory: str) -> ocp.CheckpointManager:
    """A read-only manager that restores a step whatever topology wrote it."""
    return ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
        # Without handlers the state's metadata is None, Orbax falls back to the shardings it was saved
        # with, and a checkpoint from more processes (unknown device ids) fails with "Topology mismatch".
        item_handlers={"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()},
    )


def _read_step(reader: ocp.CheckpointManager, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, config) of one step as saved, onto this host's first device."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    metadata = reader.item_metadata(step)["state"]
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    restored = reader.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore())
    )
    return restored["state"], restored["config"]


def load_variables(path: str, step: int | None = None) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
    """Model variables and config of a saved run, as numpy, on any topology.

    Args:
      path: a run's workdir, its `checkpoints/` folder, or a step folder inside it (local or gs://).
      step: the step to load; None for the latest.

    Returns:
      ({"params": ..., "batch_stats": ...}, the run's config).

    Raises:
      MissingFileError: no checkpoints there. ConfigError: no such step.
    """
    path = _resolve(path)
    if storage.isdir(os.path.join(path, "state")):  # a single step folder
        step = int(os.path.basename(path.rstrip("/"))) if step is None else step
        path = os.path.dirname(path.rstrip("/"))
    if not storage.isdir(path):
        raise MissingFileError(f"no checkpoints at {path}: expected a vdt-jax workdir or its checkpoints/ folder")
    reader = _reader(path)
    try:
        steps = sorted(reader.all_steps())
        if not steps:
            raise MissingFileError(f"{path} holds no checkpoint steps (has the run saved one yet?)")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise ConfigError(f"no checkpoint for step {step} in {path}; available steps: {steps}")
        state, config = _read_step(reader, step)
    finally:
        reader.close()
    state = jax.tree.map(np.asarray, state)
    variables = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
    return variables, ml_collections.ConfigDict(config)
