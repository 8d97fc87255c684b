"""Tests of vdt_jax.train.optim: learning-rate scaling and schedules."""

import pytest

from tests.fakes import tiny_config
from vdt_jax.train import optim


def test_warmup_cosine_schedule_and_lr_scaling():
    config = tiny_config()
    config.optimizer.warmup_epochs = 1.0
    assert optim.learning_rate(config.optimizer, 1024) == pytest.approx(config.optimizer.base_lr * 4)
    schedule = optim.make_schedule(config.optimizer, peak_lr=0.4, total_steps=110, steps_per_epoch=10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.2)
    assert float(schedule(10)) == pytest.approx(0.4)
    assert float(schedule(60)) == pytest.approx(0.2, rel=1e-5)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)
