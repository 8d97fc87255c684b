"""Tests of vdt_jax.checkpointing: a damaged newest step is set aside and the run resumes from the one before.

A crash of the storage layer can leave the newest step with a truncated or a
missing file. The resume must say which step is unusable and why, move it
aside (never delete it), resume from the previous complete step, and then
reproduce the uninterrupted run bit for bit.
"""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest

from tests.fakes import ArrayTask, tiny_config
from vdt_jax import checkpointing
from vdt_jax.train import loop


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """6 steps with checkpoints at 3 and 6; returns (workdir, the step-6 variables)."""
    workdir = tmp_path_factory.mktemp("straight")
    config = tiny_config(num_train_steps=6, checkpoint_every_steps=3)
    loop.train_and_evaluate(config, str(workdir), ArrayTask(config))
    variables, _ = checkpointing.load_variables(str(workdir), step=6)
    return workdir, variables


def _truncate_state_data(step_dir) -> str:
    """Halve every array data file of the state (how many there are, and which holds what, varies from run to run)."""
    state = os.path.join(step_dir, "state")
    data = [os.path.join(root, name) for root, _, names in os.walk(state) for name in names if os.path.basename(root) == "d"]
    assert data, f"no array data files under {state}"
    for path in data:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    return os.path.relpath(max(data, key=os.path.getsize), step_dir)


def _delete_data_position(step_dir) -> str:
    path = os.path.join(step_dir, "data", "process_0-of-1.json")
    os.remove(path)
    return os.path.relpath(path, step_dir)


@pytest.mark.parametrize("damage", [_truncate_state_data, _delete_data_position], ids=["truncated", "deleted"])
def test_a_damaged_newest_step_is_set_aside_and_the_run_resumes_from_the_previous_one(
    damage, straight_run, tmp_path, capsys
):
    original, expected = straight_run
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    damaged_file = damage(workdir / "checkpoints" / "6")
    capsys.readouterr()

    config = tiny_config(num_train_steps=6, checkpoint_every_steps=3)
    loop.train_and_evaluate(config, str(workdir), ArrayTask(config))
    out = capsys.readouterr().out

    assert "checkpoint step 6 is unusable (" in out
    assert f"Resumed from {workdir / 'checkpoints'}/3 (step 3)." in out
    aside = [name for name in os.listdir(workdir / "checkpoints") if name.startswith("6.corrupt-")]
    assert len(aside) == 1 and f"moved it to {workdir / 'checkpoints' / aside[0]}" in out
    kept = workdir / "checkpoints" / aside[0] / damaged_file  # the damaged step is kept as it was
    assert kept.exists() == (damage is _truncate_state_data)
    resumed, _ = checkpointing.load_variables(str(workdir), step=6)  # step 6 written again, from step 3
    jax.tree.map(np.testing.assert_array_equal, expected, resumed)


def test_every_step_damaged_starts_afresh_and_says_so(straight_run, tmp_path, capsys):
    original, _ = straight_run
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    for step in checkpointing.Checkpointer(str(workdir), every_steps=3, keep=3).manager.all_steps():
        _delete_data_position(workdir / "checkpoints" / str(step))
    config = tiny_config(num_train_steps=3, checkpoint_every_steps=3)
    loop.train_and_evaluate(config, str(workdir), ArrayTask(config))
    out = capsys.readouterr().out
    assert out.count("is unusable (") == len([n for n in os.listdir(workdir / "checkpoints") if ".corrupt-" in n]) >= 2
    assert "Resumed from" not in out


def test_a_readable_step_from_another_config_is_a_user_error_and_is_left_alone(straight_run, tmp_path):
    original, _ = straight_run
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    config = tiny_config(num_train_steps=9, checkpoint_every_steps=3)
    config.model.widths = (8, 8, 16, 32)  # another network than the one saved
    with pytest.raises(checkpointing.CheckpointMismatchError, match="step 6 .* does not fit this run"):
        loop.train_and_evaluate(config, str(workdir), ArrayTask(config))
    assert sorted(os.listdir(workdir / "checkpoints")) == sorted(os.listdir(original / "checkpoints"))
