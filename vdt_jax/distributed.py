"""Multi-process start-up: join JAX's multi-controller runtime when the run spans several processes.

One command serves every topology. `initialize()` decides, before JAX touches
any device, whether this process is one of several and calls
`jax.distributed.initialize` if so:

  explicit   --coordinator_address, --num_processes and --process_id (or the
             VDT_COORDINATOR_ADDRESS, VDT_NUM_PROCESSES and VDT_PROCESS_ID
             environment variables) are all set: a GPU cluster without SLURM,
             or two processes on one machine.
  detected   a Cloud TPU VM (a pod slice: every worker runs the same command)
             or a SLURM job step with more than one task (`srun`); JAX reads
             the coordinator, process count and id from the TPU metadata
             server or the SLURM_* variables.
  single     anything else: nothing to do.

`--distributed=on` forces the JAX call (its cluster detection also covers
Open MPI, Kubernetes and mpi4py); `--distributed=off` never makes it. Giving
only some of the explicit settings is an error that names the missing ones.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Mapping, Sequence

from absl import flags, logging

from vdt_jax.errors import UserError

MODES = ("auto", "on", "off")
_ENV = {
    "mode": "VDT_DISTRIBUTED",
    "coordinator_address": "VDT_COORDINATOR_ADDRESS",
    "num_processes": "VDT_NUM_PROCESSES",
    "process_id": "VDT_PROCESS_ID",
    "local_device_ids": "VDT_LOCAL_DEVICE_IDS",
}
_SLURM_STEP_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")

flags.DEFINE_enum(
    "distributed", None, MODES, f"Multi-process start-up, default auto (or ${_ENV['mode']}); see vdt_jax/distributed.py"
)
flags.DEFINE_string(
    "coordinator_address", None, f"host:port of process 0 (or ${_ENV['coordinator_address']}); GPU clusters only."
)
flags.DEFINE_integer("num_processes", None, f"Number of processes (or ${_ENV['num_processes']}).")
flags.DEFINE_integer("process_id", None, f"This process's id in [0, num_processes) (or ${_ENV['process_id']}).")
flags.DEFINE_list(
    "local_device_ids", None, f"Accelerators this process drives, e.g. 0,1,2,3 (or ${_ENV['local_device_ids']})."
)


class DistributedConfigError(UserError, ValueError):
    """The multi-process settings are incomplete or inconsistent."""


@dataclasses.dataclass(frozen=True)
class StartupPlan:
    """What `initialize` will do, and why (for the start-up log line)."""

    call_jax: bool
    reason: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None


def plan(
    mode: str | None = None,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int | str] | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    on_cloud_tpu: bool | None = None,
) -> StartupPlan:
    """Decides how this process starts; arguments win over the VDT_* environment variables.

    Args:
      mode: "auto" (default), "on" or "off".
      coordinator_address, num_processes, process_id, local_device_ids: the
        explicit settings; None falls back to the environment.
      environ: the environment to read (default os.environ).
      on_cloud_tpu: override the Cloud TPU VM detection (for tests).

    Raises:
      DistributedConfigError: half-configured or contradictory settings.
    """
    env = os.environ if environ is None else environ
    mode = (mode or env.get(_ENV["mode"]) or "auto").lower()
    if mode not in MODES:
        raise DistributedConfigError(f"--distributed / ${_ENV['mode']} must be one of {MODES}, got {mode!r}")
    explicit = {
        "coordinator_address": coordinator_address or env.get(_ENV["coordinator_address"]) or None,
        "num_processes": _as_int("num_processes", num_processes, env),
        "process_id": _as_int("process_id", process_id, env),
    }
    devices = _device_ids(local_device_ids if local_device_ids is not None else env.get(_ENV["local_device_ids"]))
    given = [k for k, v in explicit.items() if v is not None]
    if mode == "off":
        if given:
            raise DistributedConfigError(f"--distributed=off contradicts the settings given: {_names(given)}")
        return StartupPlan(False, "--distributed=off")
    if given:
        return _explicit_plan(mode, explicit, devices, given)
    if mode == "on":
        return StartupPlan(True, "--distributed=on: JAX detects the cluster", local_device_ids=devices)
    if _is_slurm_multi_task(env):
        return StartupPlan(True, f"SLURM job step with {env['SLURM_NTASKS']} tasks", local_device_ids=devices)
    if _on_cloud_tpu_vm() if on_cloud_tpu is None else on_cloud_tpu:
        return StartupPlan(True, "Cloud TPU VM: JAX asks the metadata server for the workers", local_device_ids=devices)
    return StartupPlan(False, "single process")


def _explicit_plan(mode: str, explicit: dict, devices, given: list[str]) -> StartupPlan:
    missing = [k for k, v in explicit.items() if v is None]
    if missing and mode != "on":
        raise DistributedConfigError(
            f"multi-process start-up is half configured: {_names(given)} set but {_names(missing)} missing. "
            "Set all three for an explicit launch, none to let JAX detect a TPU pod or SLURM job, "
            "or pass --distributed=on to let JAX's cluster detection fill in the rest."
        )
    address, count, index = explicit["coordinator_address"], explicit["num_processes"], explicit["process_id"]
    if address is not None and (":" not in address or not address.rsplit(":", 1)[1].isdigit()):
        raise DistributedConfigError(f"coordinator address {address!r} must be host:port, e.g. 10.0.0.2:8476")
    if count is not None and count < 1:
        raise DistributedConfigError(f"num_processes must be >= 1, got {count}")
    if count is not None and index is not None and not 0 <= index < count:
        raise DistributedConfigError(f"process_id must be in [0, num_processes={count}), got {index}")
    return StartupPlan(True, f"explicit: process {index} of {count}, coordinator {address}", address, count, index, devices)


def initialize(**settings) -> StartupPlan:
    """Joins the multi-controller runtime if `plan(**settings)` says so; call before any JAX computation.

    Returns:
      The plan that was carried out.
    """
    decided = plan(**settings)
    if decided.call_jax:
        import jax

        if not jax.distributed.is_initialized():
            jax.distributed.initialize(
                coordinator_address=decided.coordinator_address,
                num_processes=decided.num_processes,
                process_id=decided.process_id,
                local_device_ids=list(decided.local_device_ids) if decided.local_device_ids else None,
            )
        logging.info(
            "vdt-jax distributed (%s): process %d of %d, %d local / %d global devices",
            decided.reason, jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
        )
    else:
        logging.info("vdt-jax distributed: %s", decided.reason)
    return decided


def flag_settings() -> dict:
    """The --distributed, --coordinator_address, ... command-line flags, as `plan` / `initialize` arguments."""
    values = flags.FLAGS
    return {
        "mode": values.distributed,
        "coordinator_address": values.coordinator_address,
        "num_processes": values.num_processes,
        "process_id": values.process_id,
        "local_device_ids": values.local_device_ids,
    }


def initialize_from_flags() -> StartupPlan:
    """`initialize` with the --distributed, --coordinator_address, ... command-line flags."""
    return initialize(**flag_settings())


def _as_int(name: str, value: int | None, env: Mapping[str, str]) -> int | None:
    if value is not None:
        return int(value)
    raw = env.get(_ENV[name])
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise DistributedConfigError(f"${_ENV[name]} must be an integer, got {raw!r}") from None


def _device_ids(value) -> tuple[int, ...] | None:
    if value is None or value == "" or value == []:
        return None
    items = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(int(str(item).strip()) for item in items)
    except ValueError:
        raise DistributedConfigError(f"local device ids must be integers like 0,1,2,3, got {value!r}") from None


def _names(keys: list[str]) -> str:
    return ", ".join(f"--{k} (${_ENV[k]})" for k in keys)


def _is_slurm_multi_task(env: Mapping[str, str]) -> bool:
    """JAX's SLURM detection needs these variables, which `srun` sets for each task of a step."""
    if not all(env.get(name) for name in _SLURM_STEP_VARS):
        return False
    try:
        return int(env["SLURM_NTASKS"]) > 1
    except ValueError:
        return False


def _on_cloud_tpu_vm() -> bool:
    """True on a Cloud TPU VM with libtpu; JAX works this out (from PCI ids) when it is imported.

    The flag is private to JAX, hence the defensive lookup: if it moves, pass
    --distributed=on on TPU pods.
    """
    try:
        return bool(getattr(importlib.import_module("jax._src.cloud_tpu_init"), "running_in_cloud_tpu_vm", False))
    except ImportError:
        return False
