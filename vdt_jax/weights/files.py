"""Weight files: read and write state dicts as `.safetensors` (no PyTorch needed) or `.pth`/`.pt`/`.bin`.

Only `.pth` files import torch, lazily. They are read with
`torch.load(weights_only=True)`, which refuses pickles that would run code, and
may nest the state dict under "state_dict" or "model" (mmcls, MedicalNet).
Writes are atomic (`vdt_jax.atomic`).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

from vdt_jax.atomic import atomic_write
from vdt_jax.errors import MissingDependencyError, MissingFileError
from vdt_jax.weights.keys import WeightConversionError, to_torch_state_dict

TORCH_EXTENSIONS = (".pth", ".pt", ".bin")
SAFETENSORS_EXTENSIONS = (".safetensors",)
# Containers that mmcls / MedicalNet / training scripts nest the state dict in.
NESTING_KEYS = ("state_dict", "model")
_MAX_LISTED = 12


def check_torch_available(purpose: str) -> None:
    """Raises MissingDependencyError (naming the pip extra) unless PyTorch can be imported; does not import it."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        _import_torch(purpose)


def _import_torch(purpose: str):
    try:
        import torch  # noqa: PLC0415 (kept lazy: torch is optional)
    except ImportError as error:
        raise MissingDependencyError(
            f"{purpose} needs PyTorch (pip install 'vdt-jax[torch]'); .safetensors files work without it"
        ) from error
    return torch


def file_extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def write_state_dict(
    state_dict: Mapping[str, np.ndarray], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Write a numpy state dict as `.safetensors` (no torch needed) or `.pth`/`.pt` (torch.save), atomically."""
    path = os.fspath(path)
    suffix = file_extension(path)
    arrays = {key: np.ascontiguousarray(value) for key, value in state_dict.items()}
    if suffix in SAFETENSORS_EXTENSIONS:
        from safetensors.numpy import save_file  # noqa: PLC0415

        atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata={"format": "pt", **(metadata or {})}))
    elif suffix in TORCH_EXTENSIONS:
        torch = _import_torch(f"writing {path}")
        # Restored checkpoint arrays are read-only; torch.from_numpy warns about those, so copy them.
        tensors = {key: torch.from_numpy(value if value.flags.writeable else value.copy()) for key, value in arrays.items()}
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))
    else:
        raise WeightConversionError(
            f"{path}: unknown weight file extension {suffix!r}; use .safetensors or one of {TORCH_EXTENSIONS}"
        )


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `.safetensors` or PyTorch (`.pth`/`.pt`/`.bin`) file's state dict, as numpy arrays.

    PyTorch files are unpickled with `weights_only=True` (no code runs) and may
    nest the state dict under "state_dict" or "model" (mmcls, MedicalNet).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"no weight file at {path}")
    suffix = file_extension(path)
    if suffix in SAFETENSORS_EXTENSIONS:
        return _read_safetensors(path)
    if suffix in TORCH_EXTENSIONS:
        return _read_torch(path)
    raise WeightConversionError(
        f"{path}: unknown weight file extension {suffix!r}; expected .safetensors or one of {TORCH_EXTENSIONS}"
    )


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file  # noqa: PLC0415

    try:
        return dict(load_file(path))
    except Exception as error:  # SafetensorError is not exported under a stable name
        raise WeightConversionError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {error}"
        ) from error


def _read_torch(path: str) -> dict[str, np.ndarray]:
    torch = _import_torch(f"reading {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightConversionError(
            f"{path}: refused to unpickle: the file is corrupt or holds objects other than tensors and plain "
            f"containers, which weights_only=True loading does not execute ({_unpickling_reason(error)})"
        ) from error
    except Exception as error:  # truncated zip archives, legacy-format EOFs
        raise WeightConversionError(f"{path}: not a readable PyTorch file (truncated or corrupt?): {error}") from error
    state = _unwrap_state_dict(obj, path)
    return {key: _tensor_to_numpy(torch, value) for key, value in state.items()}


def _unpickling_reason(error: Exception) -> str:
    """The specific line of torch's weights-only error, without its advice to disable the check."""
    lines = [line.strip() for line in str(error).splitlines()[1:]]
    lines = [line.split("use case:")[-1].strip() for line in lines if line and not line.startswith("Check the doc")]
    return " ".join(line for line in lines if line) or str(error).splitlines()[0]


def _unwrap_state_dict(obj: Any, path: str) -> Mapping:
    """The state dict in a loaded PyTorch file: the object itself or its "state_dict"/"model" entry."""
    if not isinstance(obj, Mapping):
        raise WeightConversionError(
            f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping from parameter names to tensors)"
        )
    for nesting_key in NESTING_KEYS:
        if isinstance(obj.get(nesting_key), Mapping):
            return _unwrap_state_dict(obj[nesting_key], f"{path}[{nesting_key!r}]")
    not_tensors = {key: type(value).__name__ for key, value in obj.items() if not hasattr(value, "detach")}
    if not_tensors or not obj:
        listed = ", ".join(f"{key!r}: {kind}" for key, kind in list(not_tensors.items())[:_MAX_LISTED])
        raise WeightConversionError(
            f"{path}: not a state dict: expected parameter names mapped to tensors (or one nested under "
            f"{' or '.join(NESTING_KEYS)}), found {len(obj)} entries"
            + (f", non-tensors {{{listed}}}" if listed else "")
        )
    return obj


def _tensor_to_numpy(torch, tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.numpy()


def export_torch_weights(
    variables: Mapping,
    path: str | os.PathLike,
    *,
    keys: str = "plain",
    backbone_only: bool = False,
    downsample_bias: bool = False,
) -> dict[str, np.ndarray]:
    """Convert with `to_torch_state_dict` and write `path` (.safetensors or .pth); returns the state dict."""
    state = to_torch_state_dict(variables, keys=keys, backbone_only=backbone_only, downsample_bias=downsample_bias)
    write_state_dict(state, path, metadata={"producer": "vdt-jax", "keys": keys})
    return state
