"""The real jitted train step on synthetic uint8 batches: compile time, cost, memory, gradients.

The step is `vdt_jax.train.step.jit_train_step` on a state from
`vdt_jax.train.state.create_train_state`, sharded over every local device with
the state donated, exactly as training runs it; only the task is a stand-in
with the pre-training task's in-step work (the VDT on uint8 images, then
label-smoothed cross-entropy) and no dataset. Imports only jax, flax, optax and
numpy, so it runs on a bare accelerator machine.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vdt_jax import vdt
from vdt_jax.benchmark import flops as flops_lib
from vdt_jax.benchmark.spec import Spec
from vdt_jax.models import resnet3d
from vdt_jax.train import mesh as mesh_lib
from vdt_jax.train.state import create_train_state, init_variables
from vdt_jax.train.step import jit_train_step

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class SyntheticTask:
    """The in-step half of the pre-training task: VDT, then label-smoothed cross-entropy."""

    def __init__(self, num_classes: int, dtype: Any):
        self.num_classes, self.dtype = num_classes, dtype

    def prepare_inputs(self, batch: dict[str, jax.Array], rng: jax.Array | None, train: bool) -> jax.Array:
        return vdt.images_to_volumes(batch["image"], rng if train else None, dtype=self.dtype)

    def loss(self, logits: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], self.num_classes), 0.1)
        return optax.softmax_cross_entropy(logits, targets).mean(), {}


@dataclasses.dataclass
class CompiledStep:
    """One conv implementation's compiled step, its state, and what XLA says about it."""

    impl: str
    compile_seconds: float
    run: Callable[[], None]
    xla_flops: float | None  # per step, all devices, as XLA's cost analysis counts them
    memory: dict[str, int]  # XLA's per-device memory analysis of the program


def build_model(spec: Spec, impl: str):
    return resnet3d(
        spec.depth, num_classes=spec.num_classes, widths=spec.widths, conv_impl=impl, dtype=DTYPES[spec.dtype]
    )


def synthetic_batch(spec: Spec, mesh, seed: int = 0) -> dict[str, jax.Array]:
    """Random uint8 images and labels, sharded over the mesh's batch axis."""
    rng = np.random.default_rng(seed)
    host = {
        "image": rng.integers(0, 256, (spec.batch, spec.image_size, spec.image_size, 3), dtype=np.uint8),
        "label": rng.integers(0, spec.num_classes, (spec.batch,), dtype=np.int32),
    }
    return mesh_lib.global_batch(host, mesh)


def compile_step(spec: Spec, impl: str, mesh, batch: dict[str, jax.Array]) -> CompiledStep:
    """Creates the sharded state, compiles the donated train step, and returns a runner for it."""
    model = build_model(spec, impl)
    schedule = optax.constant_schedule(0.1 * spec.batch / 256)
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(schedule, momentum=0.9))
    example = jnp.zeros((1, 3, spec.image_size, spec.image_size, 1), DTYPES[spec.dtype])
    state = create_train_state(model, tx, example, jax.random.key(0), mesh)
    step = jit_train_step(SyntheticTask(spec.num_classes, DTYPES[spec.dtype]), schedule, state, mesh)
    rng = jax.device_put(jax.random.key(1), mesh_lib.replicated(mesh))
    start = time.perf_counter()
    compiled = step.lower(state, batch, rng).compile()
    compile_seconds = time.perf_counter() - start
    holder = [state]

    def run() -> None:
        holder[0], metrics = compiled(holder[0], batch, rng)
        jax.block_until_ready(metrics["loss"])

    return CompiledStep(impl, compile_seconds, run, _xla_flops(compiled, mesh.size), _memory(compiled))


def _xla_flops(compiled, num_devices: int) -> float | None:
    """FLOPs per step from XLA's cost analysis of the (per-device, partitioned) program, times devices."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    value = (analysis or {}).get("flops")
    return None if value is None or value < 0 else float(value) * num_devices


def _memory(compiled) -> dict[str, int]:
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    names = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes")
    return {name.removesuffix("_size_in_bytes"): int(getattr(stats, name, 0)) for name in names}


def model_flops(spec: Spec) -> float:
    """Useful FLOPs of one train step on the whole batch (see `flops`)."""
    model = build_model(spec, "conv3d")
    inputs = jax.ShapeDtypeStruct((spec.batch, 3, spec.image_size, spec.image_size, 1), DTYPES[spec.dtype])
    variables = jax.eval_shape(lambda: init_variables(model, jnp.zeros((1, *inputs.shape[1:])), jax.random.key(0)))
    return flops_lib.train_step_flops(model, variables, inputs)


def gradient_differences(spec: Spec, impls: list[str], batch_size: int = 2) -> dict[str, float]:
    """Max relative gradient difference of each impl against the first, on one small batch.

    Same parameters, same deterministic VDT batch, train-mode BatchNorm; see
    `max_relative_difference`.
    """
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (batch_size, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    labels = jnp.asarray(rng.integers(0, spec.num_classes, (batch_size,)), jnp.int32)
    task = SyntheticTask(spec.num_classes, DTYPES[spec.dtype])
    volumes = task.prepare_inputs({"image": jnp.asarray(images)}, None, train=False)
    variables = init_variables(build_model(spec, impls[0]), volumes[:1], jax.random.key(0))
    grads = {impl: _gradients(build_model(spec, impl), task, variables, volumes, labels) for impl in impls}
    reference = grads[impls[0]]
    return {impl: max_relative_difference(reference, grads[impl]) for impl in impls[1:]}


def _gradients(model, task: SyntheticTask, variables, volumes, labels):
    def loss_fn(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, volumes, train=True, mutable=["batch_stats"]
        )
        return task.loss(logits, {"label": labels})[0]

    return jax.jit(jax.grad(loss_fn))(variables["params"])


def max_relative_difference(reference: Any, other: Any) -> float:
    """Worst leaf of max|a - b| / max|a|, the denominator floored at 1e-3 of the largest gradient.

    The floor keeps leaves whose gradient is zero up to rounding (a BatchNorm
    bias whose shift the next train-mode BatchNorm removes: about 1e-7 here)
    from reporting their rounding noise as a large relative error.
    """
    pairs = [(np.asarray(a, np.float64), np.asarray(b, np.float64)) for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(other))]
    floor = 1e-3 * max(float(np.max(np.abs(a))) for a, _ in pairs)
    return max(float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), floor, 1e-30) for a, b in pairs)


def peak_device_memory() -> int | None:
    """Peak bytes in use on the first local device since start-up, where the backend reports it."""
    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None
