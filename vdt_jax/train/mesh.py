"""Device mesh and shardings: data parallel over every device of every process."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vdt_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1D mesh named "data" over all (global) devices, with automatic axis types.

    Auto axes let XLA insert the collectives, so BatchNorm statistics and the
    loss are computed over the global batch without any per-device code.
    """
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def per_process_batch_size(global_batch: int, mesh: Mesh) -> int:
    """The share of the global batch one process feeds; checks it divides evenly."""
    devices, processes = mesh.size, jax.process_count()
    if global_batch % devices:
        raise ConfigError(f"batch size {global_batch} is not divisible by the {devices} devices of the mesh")
    return global_batch // processes


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble each process's local rows into one batch-sharded global array per key."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def to_host(tree: Any) -> Any:
    """Fetch a (replicated) pytree of arrays to numpy on this host."""
    return jax.tree.map(np.asarray, jax.device_get(tree))
