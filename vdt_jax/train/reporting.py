"""Progress lines, JSON-lines metrics, TensorBoard events, curves.png and model_card.json (process 0 only).

The workdir may be local or gs://: every file goes through `vdt_jax.storage`
or `vdt_jax.atomic` (curves.png and model_card.json are written locally, then
uploaded whole).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping

import jax

from vdt_jax import model_card, storage
from vdt_jax.train import curves


def print_once(line: str) -> None:
    """Print on process 0 only."""
    if jax.process_index() == 0:
        print(line, flush=True, file=sys.stdout)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Reporter:
    """Writes `metrics.jsonl`, TensorBoard events, `curves.png` and `model_card.json` in the workdir; prints progress.

    Train lines read: step, loss, learning rate, images/s and ETA. Only
    process 0 writes or prints, so multi-host runs log once.
    """

    def __init__(self, workdir: str, *, total_steps: int, global_batch: int, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.total_steps = total_steps
        self.global_batch = global_batch
        self.workdir = workdir
        self.metrics_path = os.path.join(workdir, "metrics.jsonl")
        self.last_evaluation: tuple[int, Mapping[str, float]] | None = None
        self._writer = None
        self._window_start: tuple[float, int] | None = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # writes gs:// through google-cloud-storage

            storage.makedirs(workdir)
            self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def start(self, step: int) -> None:
        """(Re)start the throughput clock, e.g. after compilation or evaluation."""
        self._window_start = (time.perf_counter(), step)

    def train(self, step: int, metrics: Mapping[str, float]) -> None:
        now = time.perf_counter()
        start_time, start_step = self._window_start or (now, step)
        rate = (step - start_step) * self.global_batch / max(now - start_time, 1e-9)
        eta = (self.total_steps - step) * self.global_batch / rate if rate > 0 else float("nan")
        self._window_start = (now, step)
        record = {**metrics, "images_per_sec": rate}
        self._write("train", step, record)
        self.print(
            f"step {step:>7d}/{self.total_steps} | loss {metrics['loss']:.4f} | "
            f"lr {metrics['learning_rate']:.3g} | {rate:8.1f} img/s | ETA {format_duration(eta) if rate > 0 else '?'}"
        )

    def eval(self, step: int, metrics: Mapping[str, float]) -> None:
        self._write("eval", step, metrics)
        self.last_evaluation = (step, metrics)
        if self.enabled:
            curves.write_curves(self.metrics_path, os.path.join(self.workdir, "curves.png"))
        shown = " | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        self.print(f"eval @ step {step}: {shown}")

    def model_card(self, step: int, fields: Mapping[str, Any] | None, num_parameters: int) -> None:
        """Rewrite model_card.json for `step` with the task's `fields` and this run's latest evaluation."""
        if self.enabled and fields is not None:
            model_card.write_run_card(
                self.workdir, fields, step=step, evaluation=self.last_evaluation, num_parameters=num_parameters
            )

    def print(self, line: str) -> None:
        if self.enabled:
            print(line, flush=True, file=sys.stdout)

    def _write(self, split: str, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"split": split, "step": step, **{k: float(v) for k, v in metrics.items()}}
        storage.append_text(self.metrics_path, json.dumps(record) + "\n")
        for k, v in metrics.items():
            self._writer.add_scalar(f"{split}/{k}", float(v), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
