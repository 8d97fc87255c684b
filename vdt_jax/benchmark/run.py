"""Runs the benchmark sections and collects their figures in one JSON-ready dict."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from typing import Callable

import jax

from vdt_jax.benchmark import jax_step, peaks, torch_step, vdt_placement
from vdt_jax.benchmark.spec import Spec
from vdt_jax.benchmark.timing import time_interleaved
from vdt_jax.train import mesh as mesh_lib


@dataclasses.dataclass(frozen=True)
class Options:
    impls: tuple[str, ...]
    rounds: int
    torch: bool
    pipeline: bool
    pipeline_images: int
    workers: int
    vdt: bool


def environment() -> dict:
    devices = jax.local_devices()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "local_devices": len(devices),
        "host_cores": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
    }


def run(spec: Spec, options: Options, log: Callable[[str], None]) -> dict:
    """All sections; `log` gets a line whenever a slow part starts."""
    results: dict = {"spec": dataclasses.asdict(spec), "environment": environment()}
    log(f"benchmark: {spec.describe()} on {results['environment']['local_devices']} x {results['environment']['device_kind']}")
    results["steps"] = _steps(spec, options, log)
    if options.pipeline:
        log("host input pipeline ...")
        try:
            from vdt_jax.benchmark import host_input  # needs PIL (and OpenCV for the fast path)
        except ImportError as error:
            results["pipeline_skipped"] = str(error)
        else:
            results["pipeline"] = host_input.measure(spec.image_size, options.pipeline_images, options.workers or spec.workers)
    if options.vdt:
        results["vdt_placement"] = vdt_placement.measure(spec.batch, spec.image_size, options.rounds)
    results["verdict"] = _verdict(results)
    results["environment"]["load_average_end"] = os.getloadavg()
    return results


def _steps(spec: Spec, options: Options, log: Callable[[str], None]) -> dict:
    mesh = mesh_lib.make_mesh(jax.local_devices())
    batch = jax_step.synthetic_batch(spec, mesh)
    runners, compiled = {}, {}
    for impl in options.impls:
        log(f"compiling the {impl} train step ...")
        compiled[impl] = jax_step.compile_step(spec, impl, mesh, batch)
        runners[impl] = compiled[impl].run
    torch_info = _add_torch(spec, options, runners, log)
    log(f"timing {options.rounds} interleaved rounds of {', '.join(runners)} ...")
    stats = time_interleaved(runners, options.rounds)
    model_flops = jax_step.model_flops(spec)
    out = {"model_flops_per_step": model_flops, "jax": {}, "torch": torch_info}
    for impl, step in compiled.items():
        out["jax"][impl] = _step_figures(spec, step, stats[impl], model_flops, mesh.size)
    if "torch" in stats:
        torch_info.update(_timing(stats["torch"], spec.batch), peak_memory=torch_step.peak_memory())
    if len(options.impls) > 1:
        log("gradient parity between implementations ...")
        out["gradient_max_relative_difference"] = jax_step.gradient_differences(spec, list(options.impls))
    out["peak_device_memory"] = jax_step.peak_device_memory()
    return out


def _add_torch(spec: Spec, options: Options, runners: dict, log: Callable[[str], None]) -> dict:
    if not options.torch:
        return {"skipped": "--notorch"}
    reason = torch_step.available()
    if reason:
        return {"skipped": reason}
    log("building the PyTorch step ...")
    try:
        runners["torch"], info = torch_step.build_step(spec)
    except (ValueError, RuntimeError) as error:  # an unsupported depth, or CUDA out of memory
        return {"skipped": str(error).splitlines()[0]}
    return info


def _timing(stats, batch: int) -> dict:
    return {
        "step_ms": {"median": stats.median * 1e3, "min": stats.min * 1e3, "max": stats.max * 1e3},
        "rounds": stats.rounds,
        "images_per_s": stats.per_second(batch),
    }


def _step_figures(spec: Spec, step: jax_step.CompiledStep, stats, model_flops: float, devices: int) -> dict:
    kind = jax.local_devices()[0].device_kind
    figures = {"compile_s": step.compile_seconds, **_timing(stats, spec.batch)}
    figures["xla_flops_per_step"] = step.xla_flops
    figures["xla_flop_per_s"] = step.xla_flops / stats.median if step.xla_flops else None
    figures["model_flop_per_s"] = model_flops / stats.median
    figures["mfu"] = peaks.mfu(model_flops, stats.median, kind, spec.dtype, devices)
    figures["peak_flop_per_s"] = peaks.peak_flops(kind, spec.dtype)
    figures["xla_memory_bytes"] = step.memory
    return figures


def _verdict(results: dict) -> dict:
    """Ratios: each JAX impl vs PyTorch, and whether the host pipeline keeps up with the best step."""
    steps = results["steps"]
    best_impl = max(steps["jax"], key=lambda i: steps["jax"][i]["images_per_s"])
    verdict: dict = {"fastest_impl": best_impl}
    torch_rate = steps["torch"].get("images_per_s")
    if torch_rate:
        verdict["jax_over_torch"] = {i: f["images_per_s"] / torch_rate for i, f in steps["jax"].items()}
    if "pipeline" in results:
        step_rate, feed = steps["jax"][best_impl]["images_per_s"], results["pipeline"]["pool"]
        verdict["pipeline_over_step"] = feed / step_rate
        verdict["input_bound"] = feed < step_rate
    return verdict
