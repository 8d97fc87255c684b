"""The one training loop, shared by pre-training and fine-tuning.

`train_and_evaluate(config, workdir, task)` builds the mesh, the sharded state
and the jitted steps, resumes from the newest checkpoint in `workdir` (state,
optimizer, step counter and data position) or starts fresh, then trains,
logs, evaluates and checkpoints until `total_steps`. Killing the process at any
moment and running the same command again continues as if nothing happened.
On a preemption notice (SIGTERM) every process saves the same agreed step and
the run stops with `preemption.Preempted` (exit status 0).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from vdt_jax import checkpointing, storage
from vdt_jax.atomic import write_text_atomic
from vdt_jax.train import mesh as mesh_lib
from vdt_jax.train import optim, preemption, reporting
from vdt_jax.train import state as state_lib
from vdt_jax.train import step as step_lib
from vdt_jax.train.task import Task


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stopped without saving that state."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long the run is, in steps."""

    steps_per_epoch: int
    total_steps: int
    eval_every: int
    log_every: int


def make_run_schedule(config: ml_collections.ConfigDict, num_train_examples: int) -> Schedule:
    steps_per_epoch = max(num_train_examples // config.batch_size, 1)
    total = config.num_train_steps if config.num_train_steps > 0 else int(math.ceil(config.num_epochs * steps_per_epoch))
    eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
    return Schedule(steps_per_epoch, total, eval_every, max(config.log_every_steps, 1))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, task: Task) -> dict[str, Any]:
    """Train `task` as `config` says, in `workdir`; returns the final evaluation metrics.

    Args:
      config: the run's config (see configs/default.py).
      workdir: checkpoints, metrics.jsonl, TensorBoard events and config.json go here.
      task: the model, data, loss and evaluation (`vdt_jax.train.task`).
    """
    workdir = storage.absolute(workdir)
    mesh = mesh_lib.make_mesh()
    run = make_run_schedule(config, task.num_train_examples)
    per_process_batch = mesh_lib.per_process_batch_size(config.batch_size, mesh)
    peak_lr = optim.learning_rate(config.optimizer, config.batch_size)
    lr_schedule = optim.make_schedule(
        config.optimizer, peak_lr=peak_lr, total_steps=run.total_steps, steps_per_epoch=run.steps_per_epoch
    )
    model = task.build_model()
    abstract_params = jax.eval_shape(lambda: model.init(jax.random.key(0), task.example_inputs()))["params"]
    tx = optim.make_optimizer(config.optimizer, lr_schedule, trainable=task.trainable(abstract_params))
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    state = state_lib.create_train_state(model, tx, task.example_inputs(), init_rng, mesh)
    train_iter = task.train_iterator(seed=config.seed, per_process_batch=per_process_batch)
    ckpt = checkpointing.Checkpointer(
        workdir, every_steps=config.checkpoint_every_steps, keep=config.keep_checkpoints
    )
    try:
        state = _resume_or_start(state, task, train_iter, ckpt, config, workdir, tx, mesh)
    except BaseException:
        ckpt.close()
        raise
    # Only now, with the state in hand, does the run write into its workdir: a failed start leaves none.
    reporter = reporting.Reporter(workdir, total_steps=run.total_steps, global_batch=config.batch_size)
    reporter.print(
        f"{task.__class__.__name__}: {state_lib.count_params(state.params):,} parameters, "
        f"{jax.device_count()} devices, {jax.process_count()} processes, global batch {config.batch_size}, "
        f"{run.total_steps} steps ({run.steps_per_epoch}/epoch), peak lr {peak_lr:.4g}"
    )
    watch = preemption.PreemptionWatch()
    try:
        metrics = _train(state, task, train_iter, ckpt, reporter, config, run, step_rng, lr_schedule, mesh, watch)
    finally:
        watch.close()
        ckpt.wait()
        ckpt.close()
        reporter.close()
    return metrics


def _resume_or_start(state, task, train_iter, ckpt, config, workdir, tx, mesh):
    """Restore the newest usable checkpoint if there is one; else apply the task's initial weights."""
    state, step = ckpt.restore_latest(state, train_iter)
    if step is not None:
        reporting.print_once(f"Resumed from {ckpt.directory}/{step} (step {int(state.step)}).")
        return state
    initial = task.initial_variables(mesh_lib.to_host(state.variables))
    if initial is not None:
        state = state_lib.create_train_state(
            task.build_model(), tx, task.example_inputs(), jax.random.key(0), mesh, initial_variables=initial
        )
    if jax.process_index() == 0:
        storage.makedirs(workdir)
        write_text_atomic(os.path.join(workdir, "config.json"), json.dumps(config.to_dict(), indent=2, default=str))
    return state


def _train(state, task, train_iter, ckpt, reporter, config, run, step_rng, lr_schedule, mesh, watch) -> dict[str, Any]:
    train_step = step_lib.jit_train_step(task, lr_schedule, state, mesh)
    step = int(state.step)
    eval_metrics: dict[str, Any] = {}
    previous = None  # metrics of the previous step, checked one step late to keep the device busy
    window: list[dict] = []
    first_step = step
    watch.start(step)
    while step < run.total_steps:
        batch = mesh_lib.global_batch(next(train_iter), mesh)
        state, metrics = train_step(state, batch, step_rng)
        step += 1
        if step == first_step + 1:  # throughput excludes compilation
            jax.block_until_ready(metrics)
            reporter.start(step)
        preempted = watch.reached_sync_point(step)  # every process, every step: True at one agreed step
        if previous is not None:
            window.append(_check_finite(previous, step - 1, ckpt))
        previous = metrics
        last = step == run.total_steps
        if step % run.log_every == 0 or last:
            window.append(_check_finite(previous, step, ckpt))
            previous = None
            reporter.train(step, _mean(window))
            window = []
        if (step % run.eval_every == 0 or last) and not preempted:
            eval_metrics = task.evaluate(state, mesh)
            reporter.eval(step, eval_metrics)
            reporter.model_card(step, task.card_fields(), state_lib.count_params(state.params))
            reporter.start(step)
        if ckpt.should_save(step) or last or preempted:
            if previous is not None:
                window.append(_check_finite(previous, step, ckpt))
                previous = None
            if ckpt.save(step, state, train_iter, config, force=last or preempted):
                reporter.model_card(step, task.card_fields(), state_lib.count_params(state.params))
        if preempted and not last:
            ckpt.wait()
            stop = preemption.Preempted(step, ckpt.directory)
            reporter.print(f"Preemption notice: {stop}.")
            raise stop
    return eval_metrics


def _check_finite(metrics: dict[str, jax.Array], step: int, ckpt: checkpointing.Checkpointer) -> dict[str, float]:
    host = {k: float(v) for k, v in mesh_lib.to_host(metrics).items()}
    if not np.isfinite(host["loss"]):
        ckpt.wait()
        raise NonFiniteLossError(
            f"the training loss became {host['loss']} at step {step}; stopping without saving this state. "
            f"The last good checkpoint is step {ckpt.latest_step()} in {ckpt.directory}. "
            "Lower optimizer.base_lr, lengthen optimizer.warmup_epochs, or use model.dtype='float32'."
        )
    return host


def _mean(window: list[dict[str, float]]) -> dict[str, float]:
    keys = window[-1].keys()
    return {k: float(np.mean([m[k] for m in window])) for k in keys} | {"learning_rate": window[-1]["learning_rate"]}

