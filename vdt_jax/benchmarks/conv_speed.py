"""Train-step throughput of a 3D ResNet with each Conv3D implementation, side by side.

    python -m vdt_jax.benchmarks.conv_speed                       # R3D-18, batch 8, 112x112, depth 3
    python -m vdt_jax.benchmarks.conv_speed --depth=10 --image_size=56 --batch=32

Prints images/s per implementation and their ratio, measured interleaved in one
process, plus the max relative difference of the losses and gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from vdt_jax import entrypoint
from vdt_jax.benchmarks.common import time_interleaved
from vdt_jax.models import resnet3d
from vdt_jax.models.conv import IMPLEMENTATIONS

flags.DEFINE_integer("depth", 18, "ResNet depth.")
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("image_size", 112, "Height and width of the 3-slice volume.")
flags.DEFINE_integer("repeats", 5, "Timed steps per implementation.")
FLAGS = flags.FLAGS


def loss_and_grads(impl: str, variables, volumes, labels):
    model = resnet3d(FLAGS.depth, num_classes=1000, conv_impl=impl)

    def loss_fn(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, volumes, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return jax.value_and_grad(loss_fn)(variables["params"])


def main(argv):
    del argv
    shape = (FLAGS.batch, 3, FLAGS.image_size, FLAGS.image_size, 1)
    volumes = jax.random.normal(jax.random.key(0), shape)
    labels = jax.random.randint(jax.random.key(1), (FLAGS.batch,), 0, 1000)
    variables = resnet3d(FLAGS.depth, num_classes=1000).init(jax.random.key(2), volumes[:1])
    steps = {impl: jax.jit(functools.partial(loss_and_grads, impl)) for impl in IMPLEMENTATIONS}
    results = {impl: fn(variables, volumes, labels) for impl, fn in steps.items()}
    seconds = time_interleaved({impl: functools.partial(fn, variables, volumes, labels) for impl, fn in steps.items()}, FLAGS.repeats)
    print(f"3D ResNet-{FLAGS.depth}, forward+backward, batch {FLAGS.batch}, input {shape[1:]}, {jax.devices()[0].platform}")
    for impl in IMPLEMENTATIONS:
        print(f"  {impl:>10}: {FLAGS.batch / seconds[impl]:8.2f} img/s  ({seconds[impl] * 1000:.0f} ms/step)")
    base, fast = IMPLEMENTATIONS
    print(f"  ratio {fast}/{base}: {seconds[base] / seconds[fast]:.2f}x")
    (loss_a, grads_a), (loss_b, grads_b) = results[base], results[fast]
    rel = max(
        float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-12))
        for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b))
    )
    print(f"  loss {float(loss_a):.6f} vs {float(loss_b):.6f}; max relative gradient difference {rel:.2e}")


if __name__ == "__main__":
    entrypoint.run(main)
