"""`python -m vdt_jax.benchmark`: the train step, its rivals and its input pipeline, side by side.

    python -m vdt_jax.benchmark                                   # the ImageNet recipe's model
    python -m vdt_jax.benchmark --config=configs/imagenet_r3d18_bf16.py --batch=256
    python -m vdt_jax.benchmark --depth=18 --image_size=224 --dtype=bfloat16 --batch=256 --json_file=out.json

Needs only jax, flax, optax, absl and numpy; uses ml_collections (configs),
PIL/OpenCV (the host pipeline) and torch (the PyTorch ratio) when they import.
See vdt_jax/benchmark/__init__.py for what each figure means.
"""

from __future__ import annotations

import os

# With the PyTorch rival in the same process, JAX must not grab most of the GPU up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import json  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from vdt_jax import compile_cache  # noqa: E402  (defines --compile_cache; off by default here)
from vdt_jax.benchmark import report, run, spec  # noqa: E402
from vdt_jax.models.conv import IMPLEMENTATIONS  # noqa: E402

_CONFIG = flags.DEFINE_string("config", None, f"Pre-training config for the model (default: {spec.DEFAULT_CONFIG}).")
_DEPTH = flags.DEFINE_integer("depth", None, "ResNet depth (overrides the config).")
_WIDTHS = flags.DEFINE_list("widths", None, "Stage widths, e.g. 64,128,256,512 (overrides the config).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Image height/width (overrides the config).")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch over the local devices (overrides the config).")
_DTYPE = flags.DEFINE_enum("dtype", None, list(spec.DTYPES), "Compute dtype (overrides the config).")
_IMPLS = flags.DEFINE_list("conv_impls", ["conv3d", "depth_taps"], "Conv implementations to time side by side.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Timed steps per implementation (interleaved).")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the same network in PyTorch when torch imports.")
_PIPELINE = flags.DEFINE_bool("pipeline", True, "Also time the host input pipeline (needs PIL).")
_PIPELINE_IMAGES = flags.DEFINE_integer("pipeline_images", 200, "Images per core for the pipeline timing.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Pipeline worker processes (0: the config's data.num_workers, else one per core).")
_VDT = flags.DEFINE_bool("vdt", True, "Also time the VDT on the host vs on the device.")
_JSON = flags.DEFINE_bool("json", False, "Print the results as JSON instead of text.")
_JSON_FILE = flags.DEFINE_string("json_file", None, "Also write the results as JSON to this file.")


def _overrides() -> dict:
    values = {
        "depth": _DEPTH.value,
        "widths": tuple(int(w) for w in _WIDTHS.value) if _WIDTHS.value else None,
        "image_size": _IMAGE_SIZE.value,
        "batch": _BATCH.value,
        "dtype": _DTYPE.value,
    }
    return {key: value for key, value in values.items() if value is not None}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # no INFO lines about backends that are not there
    # Off unless asked for: a cache hit would turn "compile time" into load time.
    compile_cache.enable_from_flags(default_on=False)
    unknown = sorted(set(_IMPLS.value) - set(IMPLEMENTATIONS))
    if unknown:
        raise app.UsageError(f"--conv_impls: unknown {unknown}; expected some of {list(IMPLEMENTATIONS)}")
    try:
        bench_spec = spec.resolve(_CONFIG.value, _overrides())
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    options = run.Options(
        impls=tuple(_IMPLS.value),
        rounds=_ROUNDS.value,
        torch=_TORCH.value,
        pipeline=_PIPELINE.value,
        pipeline_images=_PIPELINE_IMAGES.value,
        workers=_WORKERS.value,
        vdt=_VDT.value,
    )
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if _JSON.value else (lambda line: print(line, flush=True))
    results = run.run(bench_spec, options, log)
    if _JSON_FILE.value:
        with open(_JSON_FILE.value, "w") as f:
            json.dump(results, f, indent=1)
    if _JSON.value:
        print(json.dumps(results, indent=1))
    else:
        print("\n".join(report.lines(results)))


if __name__ == "__main__":
    try:  # one `error: ...` line for a mistake, as every entry point (needs ml_collections)
        from vdt_jax.entrypoint import run as run_main
    except ImportError:  # an accelerator machine with only jax, flax and optax
        run_main = app.run
    run_main(main)
