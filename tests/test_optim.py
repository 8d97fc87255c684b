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


def test_constant_warmup_multiplies_the_undelayed_step_schedule_as_mmcv_does():
    config = tiny_config().optimizer
    config.update({"schedule": "step", "decay_epochs": (3, 6), "warmup": "constant", "warmup_steps": 5, "warmup_ratio": 0.1})
    schedule = optim.make_schedule(config, peak_lr=5e-4, total_steps=100, steps_per_epoch=10)
    # The LIDC recipe: lr 5e-5 for iterations 0-4, then 5e-4; x0.1 at epoch 3 and 6 counted from step 0.
    expected = {0: 5e-5, 4: 5e-5, 5: 5e-4, 29: 5e-4, 30: 5e-5, 59: 5e-5, 60: 5e-6, 99: 5e-6}
    for step, lr in expected.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), step
    config.warmup = "exponential"
    with pytest.raises(ValueError, match="unknown optimizer.warmup"):
        optim.make_schedule(config, peak_lr=1.0, total_steps=10, steps_per_epoch=1)


def test_poly_decay_ends_at_min_lr():
    config = tiny_config().optimizer
    config.update({"schedule": "poly", "poly_power": 0.9, "min_lr": 1e-6, "warmup_epochs": 0.0})
    schedule = optim.make_schedule(config, peak_lr=0.02, total_steps=1000, steps_per_epoch=10)
    for step in (0, 1, 500, 999, 1000):
        # mmcv's poly: (base - min_lr) * (1 - iter / max_iters) ** power + min_lr
        assert float(schedule(step)) == pytest.approx((0.02 - 1e-6) * (1 - step / 1000) ** 0.9 + 1e-6, rel=1e-4)  # float32
    config.update({"schedule": "cosine", "min_lr": 0.01})
    cosine = optim.make_schedule(config, peak_lr=0.1, total_steps=100, steps_per_epoch=10)
    assert float(cosine(100)) == pytest.approx(0.01) and float(cosine(50)) == pytest.approx(0.055)
