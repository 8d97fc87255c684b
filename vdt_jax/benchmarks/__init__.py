"""Benchmark commands that print figures (`python -m vdt_jax.benchmarks.<name> --help`)."""
