"""Pseudo-3D ResNets (P3D, MP3D): the detection backbones of the reference, channels-last.

Every 3x3x3 convolution of a 3D ResNet becomes a spatial (1, 3, 3) convolution
"S" and a depth (3, 1, 1) convolution "T", each followed by norm and ReLU, in
one of three patterns:

  A (serial)            T(S(x))
  B (parallel)          S(x) + T(x)
  C (serial with skip)  S(x) + T(S(x))

The pattern cycles A, B, C over the blocks counted across the whole network
(not restarting per stage): for "63" (bottleneck blocks 3, 4, 6, 3) layer1 is
A B C, layer2 A B C A, layer3 B C A B C A, layer4 B C A.

Two networks share these blocks and their weights:
  MP3D (`depth_pooling=False`): stem max-pool 3x3x3 with stride (1, 2, 2);
    depth is never pooled or strided, so a 9-slice CT keeps 9 slices in every
    stage and a 3-slice VDT volume keeps 3 (the network VDT pre-trains).
  P3D (`depth_pooling=True`): stem max-pool (1, 3, 3); depth max-pooled after
    layers 1-3 (9 -> 5 -> 3 -> 1 slices), so inputs need at least 9 slices.
Spatial downsampling is always (1, 2, 2): stem conv (unless `stem_stride=False`,
for a UNet encoder whose stem output is the full-resolution skip), stem pool,
and the first block of stages 2-4 (in its first conv and its shortcut).

Submodule names are the reference's state-dict names (`conv1_custom`, `norm1`,
`layer2_0` for `layer2.0`, `conv1..conv4`, `norm_1..norm_4`, `downsample_conv`
/ `downsample_bn` for `downsample.0` / `.1`), so `vdt_jax.weights.p3d_keys`
maps them one to one. Parameters are float32; `dtype` is the compute dtype.

Differences from the reference, all in initialisation only: convolutions use
the 3D ResNets' Kaiming fan-out normal init (the reference: Xavier uniform),
and the last norm of each bottleneck is zero-initialised as in the 3D ResNets
(the reference's `zero_init_residual` loop does nothing). Basic blocks keep
unit scales: their branch ends in a ReLU after the last norm, so a zero scale
would output 0 where ReLU's gradient is 0 and the branch could never train.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from vdt_jax.errors import UserError
from vdt_jax.models.conv import Conv3D
from vdt_jax.models.pooling import max_pool3d
from vdt_jax.models.resnet3d import stage_norms

ModuleDef = Any
Triple = tuple[int, int, int]
PATTERNS = ("A", "B", "C")
SPATIAL, DEPTH = (1, 3, 3), (3, 1, 1)
# Plain P3D's depth pooling after layers 1, 2, 3: (window, stride, padding).
DEPTH_POOLS = ((3, 2, 1), (3, 2, 1), (3, 1, 0))
MIN_P3D_SLICES = 9


def pattern_of(block_index: int, patterns: Sequence[str] = PATTERNS) -> str:
    """The pattern of the block with this index, counted across the whole network."""
    return patterns[block_index % len(patterns)]


def spatio_temporal(x: jax.Array, pattern: str, s: Callable, t: Callable) -> jax.Array:
    """One spatial/depth pair in `pattern`; `s` and `t` are conv -> norm -> ReLU callables."""
    if pattern == "A":
        return t(s(x))
    if pattern == "B":
        return s(x) + t(x)
    if pattern == "C":
        y = s(x)
        return y + t(y)
    raise ValueError(f"unknown P3D pattern {pattern!r}; expected one of {PATTERNS}")


def _unit(block: nn.Module, n: int, features: int, kernel: Triple, strides: Triple = (1, 1, 1)) -> Callable:
    """conv{n} -> norm_{n} -> ReLU as a callable, its variables in `block`'s scope."""

    def apply(x: jax.Array) -> jax.Array:
        y = block.conv(features, kernel, strides, name=f"conv{n}")(x)
        return nn.relu(block.norm(name=f"norm_{n}")(y))

    return apply


def _shortcut(block: nn.Module, x: jax.Array, out_features: int) -> jax.Array:
    """Identity, or a strided 1x1x1 conv + norm when the shape changes."""
    if x.shape[-1] == out_features and all(s == 1 for s in block.strides):
        return x
    x = block.conv(out_features, 1, block.strides, name="downsample_conv")(x)
    return block.norm(name="downsample_bn")(x)


class P3DBottleneck(nn.Module):
    """1x1x1 (strided) -> S/T pair (conv2 spatial, conv3 depth) -> 1x1x1 expand x4, plus shortcut, ReLU."""

    features: int
    strides: Triple
    pattern: str
    conv: ModuleDef
    norm: ModuleDef
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = _unit(self, 1, self.features, (1, 1, 1), self.strides)(x)
        s, t = _unit(self, 2, self.features, SPATIAL), _unit(self, 3, self.features, DEPTH)
        y = spatio_temporal(y, self.pattern, s, t)
        y = self.conv(self.features * 4, 1, name="conv4")(y)
        y = self.norm(name="norm_4", scale_init=nn.initializers.zeros)(y)
        return nn.relu(y + _shortcut(self, x, self.features * 4))


class P3DBasicBlock(nn.Module):
    """Two S/T pairs (conv1/conv3 spatial, conv2/conv4 depth), ReLU after every norm, plus shortcut, ReLU.

    The first pair carries the stride; in pattern B its depth conv reads the
    block input, so it is strided too.
    """

    features: int
    strides: Triple
    pattern: str
    conv: ModuleDef
    norm: ModuleDef
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s1 = _unit(self, 1, self.features, SPATIAL, self.strides)
        t1 = _unit(self, 2, self.features, DEPTH, self.strides if self.pattern == "B" else (1, 1, 1))
        y = spatio_temporal(x, self.pattern, s1, t1)
        s2, t2 = _unit(self, 3, self.features, SPATIAL), _unit(self, 4, self.features, DEPTH)
        y = spatio_temporal(y, self.pattern, s2, t2)
        return nn.relu(y + _shortcut(self, x, self.features))


class P3D(nn.Module):
    """P3D / MP3D backbone with an optional classifier.

    Attributes:
      stage_sizes: blocks per stage, (3, 4, 6, 3) for "63", (2, 2, 2, 2) for "18ba".
      block_cls: `P3DBottleneck` or `P3DBasicBlock`.
      num_classes: classifier outputs (global average pool + `fc`); None returns
        the multi-scale features {"stem", "layer1", ..., "layer4"} (for plain
        P3D, layers 1-3 after their depth pooling, as the reference outputs them).
      depth_pooling: False for MP3D, True for plain P3D (see the module docstring).
      stem_stride: the stem conv's (1, 2, 2) stride; False keeps the stem output
        at full resolution (the UNet encoder). The weights are the same either way.
      widths: channels of the four stages before the bottleneck expansion; the
        stem has widths[0].
      patterns: the cycle of block patterns.
      norm: "batch" or "group" (32 groups; the reference's DeepLesion setting).
      bn_group_size: with norm="batch", BatchNorm statistics over groups of this
        many consecutive examples (`vdt_jax.models.norms`); 0 = the whole batch.
      frozen_stages: stages ("stem", "layer1".."layer4") whose BatchNorms stay in
        evaluation mode when training (running statistics fixed).
      head_init_std: > 0 initialises the classifier normal(0, std), bias 0.
      conv_impl: see `vdt_jax.models.conv`.
      dtype: compute dtype; parameters stay `param_dtype`.
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef = P3DBottleneck
    num_classes: int | None = 1000
    depth_pooling: bool = False
    stem_stride: bool = True
    widths: Sequence[int] = (64, 128, 256, 512)
    patterns: Sequence[str] = PATTERNS
    norm: str = "batch"
    bn_momentum: float = 0.9
    bn_group_size: int = 0
    frozen_stages: Sequence[str] = ()
    head_init_std: float = 0.0
    conv_impl: str = "conv3d"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array | dict[str, jax.Array]:
        self._check_depth(x.shape[1])
        conv = functools.partial(Conv3D, impl=self.conv_impl, dtype=self.dtype, param_dtype=self.param_dtype)
        norm = stage_norms(self, train)
        x = conv(self.widths[0], (1, 7, 7), (1, 2, 2) if self.stem_stride else 1, name="conv1_custom")(x)
        x = nn.relu(norm["stem"](name="norm1")(x))
        features = {"stem": x}
        pool_depth = 1 if self.depth_pooling else 3
        x = max_pool3d(x, (pool_depth, 3, 3), (1, 2, 2), ((pool_depth // 2,) * 2, (1, 1), (1, 1)))
        index = 0
        for stage, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for i in range(num_blocks):
                strides = (1, 2, 2) if stage > 0 and i == 0 else (1, 1, 1)
                pattern = pattern_of(index, self.patterns)
                block = self.block_cls(width, strides, pattern, conv, norm[f"layer{stage + 1}"], name=f"layer{stage + 1}_{i}")
                x = block(x)
                index += 1
            if self.depth_pooling and stage < len(DEPTH_POOLS):
                window, stride, pad = DEPTH_POOLS[stage]
                x = max_pool3d(x, (window, 1, 1), (stride, 1, 1), ((pad, pad), (0, 0), (0, 0)))
            features[f"layer{stage + 1}"] = x
        if self.num_classes is None:
            return features
        x = jnp.mean(x, axis=(1, 2, 3))
        init = {"kernel_init": nn.initializers.normal(self.head_init_std)} if self.head_init_std > 0 else {}
        logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc", **init)(x)
        return logits.astype(jnp.float32)

    def _check_depth(self, depth: int) -> None:
        if self.depth_pooling and depth < MIN_P3D_SLICES:
            raise UserError(
                f"plain P3D max-pools depth after layers 1-3 and needs at least {MIN_P3D_SLICES} slices; the input "
                f"has {depth}. Use MP3D (model.arch='mp3d', depth never pooled) for shallower volumes such as the "
                "3-slice VDT pre-training input; both share the same weights."
            )


P3D63 = functools.partial(P3D, stage_sizes=(3, 4, 6, 3), block_cls=P3DBottleneck)
P3D18ba = functools.partial(P3D, stage_sizes=(2, 2, 2, 2), block_cls=P3DBasicBlock)
# The reference's other settings: "18" is bottleneck (2, 2, 2, 2), "34ba" basic (3, 4, 6, 3).
VARIANTS = {
    "18": functools.partial(P3D, stage_sizes=(2, 2, 2, 2), block_cls=P3DBottleneck),
    "18ba": P3D18ba,
    "34ba": functools.partial(P3D, stage_sizes=(3, 4, 6, 3), block_cls=P3DBasicBlock),
    "63": P3D63,
    "131": functools.partial(P3D, stage_sizes=(3, 4, 23, 3), block_cls=P3DBottleneck),
    "199": functools.partial(P3D, stage_sizes=(3, 8, 36, 3), block_cls=P3DBottleneck),
}
ARCHS = ("p3d", "mp3d")


def p3d(arch: str, variant: str, **kwargs: Any) -> P3D:
    """The pseudo-3D ResNet `arch` ("p3d" or "mp3d") of `variant` ("63" or "18ba").

    Args:
      arch: "mp3d" (depth never pooled) or "p3d" (depth max-pooled after layers 1-3).
      variant: "63" (bottleneck blocks 3, 4, 6, 3), "18ba" (basic blocks 2, 2, 2, 2), or
        the reference's other settings "18", "34ba", "131", "199" (see VARIANTS).
      **kwargs: further `P3D` attributes (num_classes, widths, norm, ...).

    Returns:
      The (unbound) `P3D` module.
    """
    if arch not in ARCHS:
        raise UserError(f"unknown pseudo-3D arch {arch!r}; expected one of {ARCHS}")
    if str(variant) not in VARIANTS:
        raise UserError(f"unknown P3D variant {variant!r} (model.p3d_variant); expected one of {sorted(VARIANTS)}")
    return VARIANTS[str(variant)](depth_pooling=arch == "p3d", **kwargs)
