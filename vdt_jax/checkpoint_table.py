"""What checkpoints a workdir holds: step, time and metrics, for `--list_checkpoints` of export and predict.

    python -m vdt_jax.predict --workdir=workdirs/finetune_demo --list_checkpoints
    python -m vdt_jax.export  --workdir=workdirs/finetune_demo --list_checkpoints

Steps are the numbered folders under `<workdir>/checkpoints/` that Orbax has
finished writing (its metadata file is present); the time is when that
checkpoint was committed; metrics are the evaluation logged at that step in
metrics.jsonl (and the training loss logged there).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any

from vdt_jax import storage
from vdt_jax.errors import UserError
from vdt_jax.train.curves import read_metrics

METADATA = "_CHECKPOINT_METADATA"  # written by Orbax when a step is complete
CHECKPOINT_DIR = "checkpoints"  # vdt_jax.checkpointing.CHECKPOINT_DIR, not imported: that would load JAX


class CheckpointNotFound(UserError, FileNotFoundError):
    """A workdir without checkpoints, or a step it does not hold."""


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    step: int
    time: str
    evaluation: dict[str, float] | None
    train_loss: float | None


def checkpoint_steps(workdir: str) -> list[int]:
    """The complete checkpoint steps of `workdir`, ascending.

    Raises:
      CheckpointNotFound: `workdir` or its checkpoints/ folder does not exist.
    """
    folder = os.path.join(storage.absolute(workdir), CHECKPOINT_DIR)
    if not storage.isdir(workdir):
        raise CheckpointNotFound(f"--workdir={workdir}: no such directory")
    if not storage.isdir(folder):
        raise CheckpointNotFound(f"--workdir={workdir}: holds no checkpoints/ folder; is it a vdt-jax training workdir?")
    names = storage.listdir(folder)
    return sorted(int(n) for n in names if n.isdigit() and storage.exists(os.path.join(folder, n, METADATA)))


def resolve_step(workdir: str, step: int | None) -> int:
    """`step`, checked to exist, or the latest complete step."""
    steps = checkpoint_steps(workdir)
    if not steps:
        raise CheckpointNotFound(f"--workdir={workdir}: its checkpoints/ folder holds no complete checkpoint yet")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CheckpointNotFound(f"--step={step}: no such checkpoint in {workdir}; available steps: {steps}")
    return step


def _commit_time(folder: str) -> str:
    try:
        nanoseconds = json.loads(storage.read_text(os.path.join(folder, METADATA))).get("commit_timestamp_nsecs")
    except (OSError, ValueError):
        nanoseconds = None
    if not nanoseconds and storage.is_url(folder):
        return "-"  # object stores have no folder times
    seconds = nanoseconds / 1e9 if nanoseconds else os.path.getmtime(folder)
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _metrics_by_step(workdir: str) -> tuple[dict[int, dict], dict[int, dict]]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not storage.exists(path):
        return {}, {}
    train, evaluation = read_metrics(path)
    return {int(r["step"]): r for r in train}, {int(r["step"]): r for r in evaluation}


def evaluation_at(workdir: str, step: int) -> dict[str, Any] | None:
    """{"step", "metrics"} of the evaluation logged at `step` in metrics.jsonl, or None."""
    record = _metrics_by_step(workdir)[1].get(step)
    if record is None:
        return None
    return {"step": step, "metrics": {k: v for k, v in record.items() if k not in ("split", "step")}}


def describe(workdir: str) -> list[CheckpointInfo]:
    """Every complete checkpoint of `workdir` with its time and metrics."""
    folder = os.path.join(storage.absolute(workdir), CHECKPOINT_DIR)
    train, evaluation = _metrics_by_step(workdir)
    infos = []
    for step in checkpoint_steps(workdir):
        record = evaluation.get(step)
        metrics = {k: v for k, v in record.items() if k not in ("split", "step")} if record else None
        loss = train.get(step, {}).get("loss")
        infos.append(CheckpointInfo(step, _commit_time(os.path.join(folder, str(step))), metrics, loss))
    return infos


HEADLINE = ("top1", "accuracy", "auc", "mean_dice")


def format_table(workdir: str) -> str:
    """A readable table of `describe(workdir)`: step, time, training loss and the evaluation's headline metrics."""
    infos = describe(workdir)
    if not infos:
        return f"{workdir}: no complete checkpoints yet"
    lines = [f"checkpoints in {os.path.join(storage.absolute(workdir), CHECKPOINT_DIR)}:", f"{'step':>8}  {'saved':19}  {'train loss':>10}  evaluation"]
    for info in infos:
        loss = f"{info.train_loss:.4f}" if info.train_loss is not None else "-"
        if info.evaluation:
            keys = [k for k in HEADLINE if k in info.evaluation] + sorted(k for k in info.evaluation if k.startswith("dice/"))
            shown = ", ".join(f"{k} {info.evaluation[k]:.4f}" for k in keys) or "(logged)"
        else:
            shown = "-"
        lines.append(f"{info.step:>8}  {info.time:19}  {loss:>10}  {shown}")
    return "\n".join(lines)
