"""What to benchmark: the network, batch, image size and dtype, from a config or from flags.

With ml_collections installed, `--config` (default: the ImageNet recipe,
configs/imagenet_r3d18.py) gives the model; on an accelerator its batch and
image size are kept, on CPU the batch is 8 at 112x112 (the recipe's 256 at
224x224 would take minutes per step). Without ml_collections (a bare JAX
machine) the same fields come from the flags, whose defaults are the recipe's
model. Explicit flags always win.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import jax

DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_CONFIG = "configs/imagenet_r3d18.py"


@dataclasses.dataclass(frozen=True)
class Spec:
    """One benchmark setting; the network is a 3D ResNet on (image_size, image_size) RGB images."""

    depth: int = 18
    widths: tuple[int, ...] = (64, 128, 256, 512)
    num_classes: int = 1000
    image_size: int = 224
    batch: int = 256  # global, over all local devices
    dtype: str = "float32"
    source: str = "flags"  # where the model came from: a config path or "flags"
    workers: int = 0  # host input pipeline workers from the config (0: one per core)

    def describe(self) -> str:
        widths = "-".join(str(w) for w in self.widths)
        return (
            f"3D ResNet-{self.depth} (widths {widths}, {self.num_classes} classes), batch {self.batch}, "
            f"3x{self.image_size}x{self.image_size} volumes, {self.dtype} (model from {self.source})"
        )


def load_config(path: str):
    """`get_config()` of a Python config file (needs ml_collections, as the configs do)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config={path}: no such file")
    module_spec = importlib.util.spec_from_file_location("benchmark_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.get_config()


def from_config(path: str, on_cpu: bool) -> Spec:
    """The Spec of a pre-training config: its model, batch and image size (CPU: batch 8 at 112)."""
    config = load_config(path)
    model, data = config.model, config.data
    return Spec(
        depth=int(model.depth),
        widths=tuple(int(w) for w in model.widths),
        image_size=112 if on_cpu else int(data.image_size),
        batch=8 if on_cpu else int(config.batch_size),
        dtype=str(model.dtype),
        source=path + (" (CPU: batch 8 at 112x112)" if on_cpu else ""),
        workers=int(data.num_workers),
    )


def ml_collections_available() -> bool:
    try:
        import ml_collections  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(config_path: str | None, overrides: dict, on_cpu: bool | None = None) -> Spec:
    """The Spec from `config_path` (or the default config when ml_collections is there), then `overrides`.

    Args:
      config_path: a config file, or None for the default.
      overrides: Spec field -> value for the flags given explicitly.
      on_cpu: whether the default backend is a CPU (default: ask JAX).

    Raises:
      ValueError: a config was asked for but ml_collections is not installed,
        or an override is invalid.
    """
    on_cpu = jax.default_backend() == "cpu" if on_cpu is None else on_cpu
    if config_path and not ml_collections_available():
        raise ValueError(f"--config={config_path} needs ml_collections; without it pass --depth/--widths/--image_size/--batch/--dtype")
    if config_path or (ml_collections_available() and os.path.isfile(_default_config())):
        spec = from_config(config_path or _default_config(), on_cpu)
    else:
        spec = Spec(image_size=112, batch=8) if on_cpu else Spec()
    spec = dataclasses.replace(spec, **overrides)
    if spec.dtype not in DTYPES:
        raise ValueError(f"--dtype={spec.dtype}: expected one of {DTYPES}")
    if spec.batch % jax.local_device_count():
        raise ValueError(f"--batch={spec.batch} is not divisible by the {jax.local_device_count()} local devices")
    return spec


def _default_config() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(here, DEFAULT_CONFIG)
