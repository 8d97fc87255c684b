"""BatchNorm with statistics over groups of consecutive examples (`GroupedBatchNorm`).

Why: the reference pre-training ran PyTorch DistributedDataParallel on 8 GPUs
without SyncBatchNorm, so each BatchNorm saw the 32 images of its own GPU, not
the global batch of 256. Under `jit` a plain `nn.BatchNorm` computes statistics
over the whole (global, sharded) batch. `GroupedBatchNorm(group_size=32)` on a
global batch of 256 normalises each run of 32 consecutive examples with that
run's own mean and variance, which is what those 8 GPUs computed. With the
batch sharded over a mesh whose devices each hold one group, the statistics
used for normalisation need no cross-device communication.

Running statistics. In DDP without SyncBN each GPU keeps its own running
averages (mmcv's DDP wrapper is built with `broadcast_buffers=False`) and the
checkpoint keeps rank 0's: an exponential average of group 0's statistics only.
Here one replicated copy is kept and updated with the *mean over groups* of the
per-group mean and (biased) variance. Both estimate the same quantities (the
expected per-group mean and the expected within-group variance); the mean over
groups is the less noisy estimate. PyTorch also stores the unbiased variance
(n / (n - 1), negligible at the sizes used); like `nn.BatchNorm`, this module
stores the biased one.

Variables have the names, shapes and dtypes of `flax.linen.BatchNorm`
(params `scale`, `bias`; batch_stats `mean`, `var`), so checkpoints, weight
loading and export treat both alike.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen.dtypes import canonicalize_dtype

from vdt_jax.errors import ConfigError


class GroupedBatchNorm(nn.Module):
    """BatchNorm over the last axis with training statistics per group of `group_size` examples.

    Attributes:
      group_size: examples per statistics group, consecutive along axis 0;
        must divide the batch when training. 0 or None: the whole batch (as
        `nn.BatchNorm`).
      use_running_average: normalise with the stored running statistics
        (evaluation); no grouping then, so any batch size works.
      momentum: decay of the running averages (0.9 = PyTorch momentum 0.1).
      epsilon: added to the variance.
      dtype: output dtype (statistics are computed in at least float32).
      param_dtype: dtype of `scale` and `bias`.
    """

    group_size: int | None = None
    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Any = nn.initializers.zeros
    scale_init: Any = nn.initializers.ones

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        """Normalise `x` (N, ..., C).

        Args:
          x: input; axis 0 is the batch, the last axis the features.
          use_running_average: overrides the attribute of the same name.

        Returns:
          The normalised `x`, same shape, in `dtype` (or the promoted input dtype).
        """
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        if use_running_average:
            return self._normalize(x, ra_mean.value, ra_var.value)
        # Nothing is stored while initialising, so the init batch need not split into groups.
        groups = 1 if self.is_initializing() else self._num_groups(x.shape[0])
        grouped = x.reshape(groups, x.shape[0] // groups, *x.shape[1:])
        mean, var = _group_stats(grouped, self.dtype)  # (groups, features) each
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean.mean(0)
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var.mean(0)
        broadcast = (groups,) + (1,) * (x.ndim - 1) + (features,)
        y = self._normalize(grouped, mean.reshape(broadcast), var.reshape(broadcast))
        return y.reshape(x.shape)

    def _num_groups(self, batch: int) -> int:
        size = int(self.group_size or 0)
        if size < 0:
            raise ConfigError(f"BatchNorm group size must be >= 0 (0: the whole batch), got {size}")
        if size == 0:
            return 1
        if batch % size:
            raise ConfigError(
                f"BatchNorm group size {size} does not divide the batch of {batch} examples; set "
                "model.bn_group_size to a divisor of the global batch size (e.g. the per-device batch), "
                "or 0 for statistics over the whole batch"
            )
        return batch // size

    def _normalize(self, x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
        """(x - mean) * rsqrt(var + eps) * scale + bias, computed as `nn.BatchNorm` does."""
        features = x.shape[-1]
        y = x - mean
        mul = jax.lax.rsqrt(var + self.epsilon)
        args = [x]
        if self.use_scale:
            scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
            mul = mul * scale
            args.append(scale)
        y = y * mul
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
            y = y + bias
            args.append(bias)
        return jnp.asarray(y, canonicalize_dtype(*args, dtype=self.dtype))


def _group_stats(grouped: jax.Array, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """Per-group mean and biased variance of (groups, n, ..., C) over all but the first and last axes.

    Like `nn.BatchNorm`: at least float32, Var = E[x^2] - E[x]^2 clipped at 0.
    """
    compute = jnp.promote_types(dtype or grouped.dtype, jnp.float32)
    x = grouped.astype(compute)
    axes = tuple(range(1, x.ndim - 1))
    mean = x.mean(axes)
    mean_sq = jnp.square(x).mean(axes)
    return mean, jnp.maximum(0.0, mean_sq - jnp.square(mean))
