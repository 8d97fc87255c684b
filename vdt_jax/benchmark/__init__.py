"""`python -m vdt_jax.benchmark`: how fast training runs here, and why.

  __main__.py      flags; prints text or JSON
  spec.py          the network, batch, image size and dtype (config or flags)
  run.py           runs the sections, collects one JSON-ready dict
  jax_step.py      the real jitted, sharded, donated train step on synthetic
                   uint8 batches: compile time, step time, XLA cost and memory,
                   gradient parity between conv implementations
  flops.py         model FLOPs (in-volume kernel taps, 3x forward) for MFU
  peaks.py         peak FLOP/s per chip (TPU v4/v5e/v5p/v6e, A100, H100, H200)
  torch_step.py, torch_model.py
                   the same network and step in PyTorch, timed in the same rounds
  host_input.py    the ImageNet host transform per core and with worker processes
  vdt_placement.py the VDT on the host vs on the device
  timing.py        interleaved rounds: median, min and max per candidate
  predict_memory.py  `python -m vdt_jax.benchmark.predict_memory`: peak host
                   memory and time of `python -m vdt_jax.predict` on a full-size CT

Figures: images/s at the median step time; "model" FLOP/s count only kernel
taps that read real input (the same for every conv implementation), XLA-counted
FLOP/s are what the compiled program does (padding taps included); MFU is model
FLOP/s over the chip's peak for the compute dtype ("n/a" on CPU). Ratios are
only meaningful within one run: all candidates run in the same interleaved
rounds.
"""
