"""Listing a workdir's checkpoints: complete steps only, their time and the metrics logged at them."""

from __future__ import annotations

import json
import os

import pytest

from vdt_jax import checkpoint_table


def fake_workdir(tmp_path):
    for step, committed in ((100, True), (200, True), (300, False)):
        folder = tmp_path / "checkpoints" / str(step)
        folder.mkdir(parents=True)
        if committed:
            (folder / "_CHECKPOINT_METADATA").write_text(json.dumps({"commit_timestamp_nsecs": 1795831488798514520 + step}))
    (tmp_path / "checkpoints" / "400.orbax-checkpoint-tmp").mkdir()
    lines = [
        {"split": "train", "step": 100, "loss": 0.9},
        {"split": "eval", "step": 100, "mean_dice": 0.41, "dice/organ": 0.8},
        {"split": "train", "step": 200, "loss": 0.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(tmp_path)


def test_the_table_lists_complete_checkpoints_with_their_metrics(tmp_path):
    workdir = fake_workdir(tmp_path)
    assert checkpoint_table.checkpoint_steps(workdir) == [100, 200]
    assert checkpoint_table.resolve_step(workdir, None) == 200
    lines = checkpoint_table.format_table(workdir).splitlines()
    assert lines[1].split() == ["step", "saved", "train", "loss", "evaluation"]
    assert lines[2].split()[0] == "100" and lines[2].endswith("0.9000  mean_dice 0.4100, dice/organ 0.8000")
    assert lines[3].split()[0] == "200" and lines[3].endswith("0.5000  -") and len(lines) == 4
    assert checkpoint_table.evaluation_at(workdir, 100) == {"step": 100, "metrics": {"mean_dice": 0.41, "dice/organ": 0.8}}
    assert checkpoint_table.evaluation_at(workdir, 200) is None


def test_missing_workdirs_and_steps_are_user_errors(tmp_path):
    with pytest.raises(checkpoint_table.CheckpointNotFound, match="no such directory"):
        checkpoint_table.checkpoint_steps(str(tmp_path / "nope"))
    with pytest.raises(checkpoint_table.CheckpointNotFound, match="holds no checkpoints/ folder"):
        checkpoint_table.checkpoint_steps(str(tmp_path))
    workdir = fake_workdir(tmp_path)
    with pytest.raises(checkpoint_table.CheckpointNotFound, match=r"--step=300: no such checkpoint .* available steps: \[100, 200\]"):
        checkpoint_table.resolve_step(workdir, 300)
    os.remove(os.path.join(workdir, "checkpoints", "100", "_CHECKPOINT_METADATA"))
    os.remove(os.path.join(workdir, "checkpoints", "200", "_CHECKPOINT_METADATA"))
    with pytest.raises(checkpoint_table.CheckpointNotFound, match="holds no complete checkpoint yet"):
        checkpoint_table.resolve_step(workdir, None)


def test_the_checkpoint_folder_name_is_the_one_checkpointing_writes():
    from vdt_jax import checkpointing

    assert checkpoint_table.CHECKPOINT_DIR == checkpointing.CHECKPOINT_DIR
