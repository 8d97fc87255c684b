"""Peak dense FLOP/s per chip, for model FLOPs utilisation (MFU).

Vendor figures for dense math (no structured sparsity), per chip as JAX sees
one device. "float32" is the rate XLA's default precision reaches with float32
inputs: TPUs run float32 matmuls and convolutions as bfloat16 passes on the MXU
at default precision, and on A100/H100/H200 XLA uses TF32 tensor cores for
them, so the TF32 figure applies there. CPUs have no entry: MFU is "n/a".
"""

from __future__ import annotations

# (substring of jax.Device.device_kind, lower-cased) -> {dtype: TFLOP/s}. First match wins.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("v6 lite", {"bfloat16": 918.0, "float32": 918.0}),  # TPU v6e (Trillium)
    ("v6e", {"bfloat16": 918.0, "float32": 918.0}),
    ("v5 lite", {"bfloat16": 197.0, "float32": 197.0}),  # TPU v5e
    ("v5e", {"bfloat16": 197.0, "float32": 197.0}),
    ("v5p", {"bfloat16": 459.0, "float32": 459.0}),
    ("tpu v5", {"bfloat16": 459.0, "float32": 459.0}),  # v5p reports itself as "TPU v5"
    ("tpu v4", {"bfloat16": 275.0, "float32": 275.0}),
    ("h200", {"bfloat16": 989.0, "float32": 494.0}),  # SXM; TF32 for float32
    ("h100 pcie", {"bfloat16": 756.0, "float32": 378.0}),
    ("h100", {"bfloat16": 989.0, "float32": 494.0}),  # SXM / HBM3 (also "H100 80GB HBM3")
    ("a100", {"bfloat16": 312.0, "float32": 156.0}),  # SXM and PCIe share the dense peak
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Peak FLOP/s of one chip for the compute dtype, or None when unknown (CPUs)."""
    kind = device_kind.lower()
    for key, peaks in PEAK_TFLOPS:
        if key in kind:
            return peaks["bfloat16" if dtype in ("bfloat16", "float16") else "float32"] * 1e12
    return None


def mfu(flops_per_step: float, seconds_per_step: float, device_kind: str, dtype: str, num_devices: int) -> float | None:
    """Achieved FLOP/s over the peak of all devices, or None when the peak is unknown."""
    peak = peak_flops(device_kind, dtype)
    if peak is None or seconds_per_step <= 0:
        return None
    return flops_per_step / seconds_per_step / (peak * num_devices)
