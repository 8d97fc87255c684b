"""The persistent compilation cache: where it goes, how it is turned off, and that JAX uses it."""

import os
import subprocess
import sys

import pytest

from vdt_jax import compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in (compile_cache.ENV, "JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_default_is_the_user_cache_dir(clean_env):
    assert compile_cache.resolve(None) == str(clean_env / "xdg" / "vdt_jax" / "jax_compile")
    assert compile_cache.resolve(None, default_on=False) is None  # the benchmark's default


def test_flag_beats_environment_beats_jax_variable(clean_env, monkeypatch):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/jax/own")
    assert compile_cache.resolve(None) == "/jax/own"
    monkeypatch.setenv(compile_cache.ENV, "/from/env")
    assert compile_cache.resolve(None) == "/from/env"
    assert compile_cache.resolve("/from/flag") == "/from/flag"
    assert compile_cache.resolve("off") is None and compile_cache.resolve("NONE") is None
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.resolve(None) is None


def test_enable_makes_jax_write_and_reuse_entries(clean_env):
    # A fresh process: JAX sets its cache up once per process.
    script = (
        "import logging, sys, jax, jax.numpy as jnp\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "from vdt_jax import compile_cache\n"
        "compile_cache.enable(sys.argv[1])\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)\n"
        "jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0).lower(jnp.ones((5, 7))).compile()\n"
    )
    directory = str(clean_env / "cache")
    env = {**os.environ, "PYTHONPATH": REPO}
    runs = [
        subprocess.run([sys.executable, "-c", script, directory], env=env, check=True, timeout=300, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert os.listdir(directory)  # the compiled executable was written
    hit = "Cache hit for key: 'jit__lambda"  # JAX's debug log line for our function
    assert hit not in runs[0].stderr and hit in runs[1].stderr
