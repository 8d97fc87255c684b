"""The same train step in PyTorch, in the same process, for a side-by-side ratio.

On CUDA: channels_last_3d, autocast to bfloat16/float16 when the JAX step uses
it (AMP), cudnn.benchmark. On CPU: eager float32 with as many threads as the
process may use. SGD with momentum 0.9, weight decay 1e-4, label smoothing 0.1,
like the JAX step.
"""

from __future__ import annotations

import os
from typing import Callable

from vdt_jax.benchmark.spec import Spec

BLOCKS = {10: ((1, 1, 1, 1), False), 18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True)}


def available() -> str | None:
    """None when torch imports, else why not."""
    try:
        import torch  # noqa: F401
    except ImportError as error:
        return f"torch not importable ({error})"
    return None


def build_step(spec: Spec) -> tuple[Callable[[], None], dict[str, str]]:
    """A zero-argument train-step runner and a description of the torch setup."""
    import torch

    from vdt_jax.benchmark.torch_model import TorchResNet3D

    if spec.depth not in BLOCKS:
        raise ValueError(f"the PyTorch twin covers depths {sorted(BLOCKS)}, not {spec.depth}")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    stages, bottleneck = BLOCKS[spec.depth]
    model = TorchResNet3D(stages, bottleneck, spec.widths, spec.num_classes).to(device)
    images = torch.randint(0, 256, (spec.batch, 1, 3, spec.image_size, spec.image_size), device=device)
    inputs = (images.float() - 114.495) / 57.63
    labels = torch.randint(0, spec.num_classes, (spec.batch,), device=device)
    amp = cuda and spec.dtype in ("bfloat16", "float16")
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last_3d)
        inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
    else:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    autocast_dtype = getattr(torch, spec.dtype) if amp else None

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(inputs), labels, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        else:
            loss.item()

    return run, _describe(torch, cuda, amp, spec)


def _describe(torch, cuda: bool, amp: bool, spec: Spec) -> dict[str, str]:
    info = {"torch": torch.__version__, "device": "cuda" if cuda else "cpu"}
    if cuda:
        info.update(
            gpu=torch.cuda.get_device_name(0),
            cudnn=str(torch.backends.cudnn.version()),
            mode=f"AMP {spec.dtype}, channels_last_3d" if amp else "float32 (TF32 convs allowed), channels_last_3d",
        )
    else:
        info.update(mode=f"eager float32, {torch.get_num_threads()} threads")
    return info


def peak_memory() -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
