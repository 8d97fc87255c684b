"""vdt-jax: Variable Dimension Transform based supervised 3D pre-training in JAX/Flax."""

__version__ = "0.1.0"
