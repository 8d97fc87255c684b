"""The run's network on the accelerator: the very eval step training evaluates with, plus optional flip TTA.

`PredictionStep` plays the part of a `Task` for `vdt_jax.train.step.jit_eval_step`:
inputs are cast as the fine-tuning tasks cast them, and the outputs are those
of training's evaluation (`window_eval.window_scores` for segmentation,
softmax per example for classification). The weights are replicated over the
mesh and each batch is sharded over its devices, as in training. With
`--tta=flips` every batch also runs mirrored along the axes the run was
trained to flip (`data.flip_axes`, all three when it used none) and the
outputs are averaged after mirroring back (softmax probabilities, or logits
for a segmentation run with eval.average="logits").
"""

from __future__ import annotations

import itertools
import time
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vdt_jax.data import loading
from vdt_jax.finetune import window_eval
from vdt_jax.models.factory import compute_dtype
from vdt_jax.predict.loaded_run import LoadedRun
from vdt_jax.train import mesh as mesh_lib
from vdt_jax.train import state as state_lib
from vdt_jax.train.step import jit_eval_step

TTA_CHOICES = ("none", "flips")


def flip_sets(axes: Iterable[int]) -> list[tuple[int, ...]]:
    """Every subset of `axes` (volume axes 0-2), the empty one (no flip) first."""
    axes = tuple(sorted(set(int(a) for a in axes)))
    return [combo for n in range(len(axes) + 1) for combo in itertools.combinations(axes, n)]


class PredictionStep:
    """The jitted eval step of a loaded run, compiled once for a fixed batch.

    Args:
      run: the loaded run.
      batch_size: windows (segmentation) or crops (classification) per step, over all devices.
      tta: "none" or "flips".
    """

    def __init__(self, run: LoadedRun, batch_size: int, tta: str = "none"):
        self.run = run
        self.mesh = mesh_lib.make_mesh()
        self.per_process_batch = mesh_lib.per_process_batch_size(batch_size, self.mesh)
        self.dtype = compute_dtype(run.config.model.dtype)
        axes = tuple(run.config.data.flip_axes) or (0, 1, 2)
        self.flips = flip_sets(axes) if tta == "flips" else [()]
        model = run.build_model()
        example = jnp.zeros((1, *run.config.data.crop_size, run.config.data.in_channels), self.dtype)
        self.state = state_lib.create_train_state(
            model, optax.identity(), example, jax.random.key(0), self.mesh, initial_variables=run.variables
        )
        self._step = jit_eval_step(self, self.state, self.mesh)
        self.compile_seconds = 0.0

    # ---- the Task part `eval_step` calls, inside the jitted step ----
    def prepare_inputs(self, batch, rng, train):
        x = batch["image"].astype(self.dtype)
        if len(self.flips) == 1:
            return x
        return jnp.concatenate([jnp.flip(x, [a + 1 for a in axes]) if axes else x for axes in self.flips])

    def eval_metrics(self, outputs, batch):
        segmentation = self.run.task == "segmentation"
        average = self.run.config.eval.average if segmentation else "probabilities"
        if len(self.flips) == 1:
            if segmentation:
                return window_eval.window_scores(outputs, batch, average)  # training's evaluation, exactly
            return {"probs": jax.nn.softmax(outputs), "index": batch["index"], "mask": batch["mask"]}
        chunks = jnp.split(outputs, len(self.flips))
        # Mirrored back, then averaged as training averages windows: probabilities, or logits (eval.average).
        scores = [window_eval.class_scores(jnp.flip(c, [a + 1 for a in axes]) if axes and segmentation else c, average)
                  for c, axes in zip(chunks, self.flips)]
        mean = sum(scores[1:], scores[0]) / len(scores)
        out = {"scores": mean, "case": batch["case"], "start": batch["start"]} if segmentation else {"probs": mean, "index": batch["index"]}
        return {**out, "mask": batch["mask"]}

    # ---- on the host ----
    def compile(self, empty: dict[str, np.ndarray]) -> float:
        """Compile the step for batches shaped like `empty` (zero rows, every key); returns the seconds it took."""
        start = time.perf_counter()
        example = mesh_lib.global_batch(loading.pad_batch(empty, self.per_process_batch), self.mesh)
        self._step = self._step.lower(self.state, example).compile()
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def outputs(self, batches: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        """The step's outputs for each host batch (`per_process_batch` rows with a 'mask'), on the host."""
        for batch in batches:
            yield mesh_lib.to_host(self._step(self.state, mesh_lib.global_batch(batch, self.mesh)))
