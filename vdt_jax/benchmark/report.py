"""The benchmark's figures as text lines."""

from __future__ import annotations


def _gib(value: float | None) -> str:
    return "n/a" if not value else f"{value / 2**30:.2f} GiB"


def _flops(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e12:.3f} TFLOP/s"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def lines(results: dict) -> list[str]:
    """Human-readable summary of `run.run`'s results."""
    env, steps = results["environment"], results["steps"]
    out = [
        f"{env['date']}  jax {env['jax']}  {env['local_devices']} x {env['device_kind']} ({env['backend']}), "
        f"{env['host_cores']} host cores, load average {env['load_average'][0]:.1f} -> {env['load_average_end'][0]:.1f}",
        f"model FLOPs per step (in-volume taps, 3x forward): {steps['model_flops_per_step'] / 1e9:.1f} GFLOP",
    ]
    for impl, f in steps["jax"].items():
        ms = f["step_ms"]
        out.append(
            f"  jax {impl:>10}: {f['images_per_s']:9.1f} img/s  step {ms['median']:.1f} ms "
            f"(min {ms['min']:.1f}, max {ms['max']:.1f}, {f['rounds']} rounds)  compile {f['compile_s']:.1f} s"
        )
        temp = f["xla_memory_bytes"].get("temp")
        out.append(
            f"  {'':>14}  model {_flops(f['model_flop_per_s'])}, XLA-counted {_flops(f['xla_flop_per_s'])}, "
            f"MFU {_percent(f['mfu'])} of {_flops(f['peak_flop_per_s'])}/device, XLA temp memory {_gib(temp)}"
        )
    torch = steps["torch"]
    if "images_per_s" in torch:
        ms = torch["step_ms"]
        out.append(
            f"  torch {torch['mode']}: {torch['images_per_s']:9.1f} img/s  step {ms['median']:.1f} ms "
            f"(min {ms['min']:.1f}, max {ms['max']:.1f})  torch {torch['torch']}"
            + (f", cuDNN {torch['cudnn']}, {torch['gpu']}" if "cudnn" in torch else "")
        )
    else:
        out.append(f"  torch: skipped ({torch.get('skipped')})")
    for impl, diff in steps.get("gradient_max_relative_difference", {}).items():
        out.append(f"  gradient max relative difference {impl} vs {next(iter(steps['jax']))}: {diff:.2e}")
    out.append(f"  peak device memory: {_gib(steps['peak_device_memory'])}")
    out += _pipeline_lines(results) + _verdict_lines(results)
    return out


def _pipeline_lines(results: dict) -> list[str]:
    out = [f"host pipeline: skipped ({results['pipeline_skipped']})"] if "pipeline_skipped" in results else []
    if "pipeline" in results:
        p = results["pipeline"]
        rates = ", ".join(f"{name} {rate:.0f}" for name, rate in p["per_core"].items())
        out.append(f"host pipeline (decode, RandomResizedCrop {p['image_size']}, flip; ~{p['jpeg_bytes_mean'] // 1000} KB JPEGs):")
        out.append(f"  per core img/s: {rates}")
        out.append(f"  {p['best']} with {p['workers']} worker processes: {p['pool']:.0f} img/s")
    if "vdt_placement" in results:
        v = results["vdt_placement"]
        out.append(
            f"VDT of {v['batch']} images: host numpy + float32 copy {v['host_ms']:.1f} ms "
            f"({v['host_bytes'] / 2**20:.1f} MiB) vs uint8 copy + on-device {v['device_ms']:.1f} ms ({v['device_bytes'] / 2**20:.1f} MiB)"
        )
    return out


def _verdict_lines(results: dict) -> list[str]:
    v = results["verdict"]
    out = [f"fastest JAX implementation: {v['fastest_impl']}"]
    for impl, ratio in v.get("jax_over_torch", {}).items():
        out.append(f"  jax {impl} / torch images/s: {ratio:.2f}x")
    if "input_bound" in v:
        state = "INPUT-BOUND" if v["input_bound"] else "not input-bound"
        out.append(f"  host pipeline / fastest step: {v['pipeline_over_step']:.2f}x -> {state}")
    return out
