"""Tests of vdt_jax.finetune.sweep: the run grid, skipping finished runs, and the tables and plot it writes."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import configs.finetune_default
from vdt_jax.finetune import sweep


def rows():
    values = {("pretrained", 0.5): [0.8, 0.9], ("scratch", 0.5): [0.6, 0.7], ("pretrained", 1.0): [0.95, 0.93],
              ("scratch", 1.0): [0.9, 0.88]}
    return [
        {"fraction": f, "init": init, "seed": seed, "value": v, "seconds": 10.0, "workdir": f"/runs/{init}{f}{seed}"}
        for (init, f), vs in values.items()
        for seed, v in enumerate(vs)
    ]


def test_summarise_gives_mean_and_std_over_seeds_per_fraction():
    series = sweep.summarise(rows())
    assert [f for f, _, _ in series["pretrained"]] == [0.5, 1.0]
    fraction, mean, std = series["scratch"][0]
    assert fraction == 0.5 and mean == pytest.approx(0.65) and std == pytest.approx(0.05)


def test_outputs_are_a_csv_a_markdown_table_and_a_plot(tmp_path):
    paths = sweep.write_outputs(rows(), str(tmp_path), "auc", "title")
    lines = open(paths["results.csv"]).read().splitlines()
    assert lines[0] == "fraction,init,seed,auc,seconds,workdir" and len(lines) == 9
    table = open(paths["results.md"]).read()
    assert "| 0.5 | 0.8500 +- 0.0500 | 0.6500 +- 0.0500 | +0.2000 |" in table
    with Image.open(paths["label_efficiency.png"]) as image:
        assert image.size == (640, 440)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    for colour in ((214, 39, 40), (49, 130, 189)):  # both lines are drawn
        assert (pixels == colour).all(axis=1).any()


def test_every_fraction_init_and_seed_is_one_run_in_its_own_workdir(tmp_path, monkeypatch):
    seen = []

    def fake_run(config, workdir):
        seen.append((config.data.train_fraction, config.init_from, config.seed, config.data.fraction_seed, workdir))
        return {"metrics": {"auc": 0.5}, "seconds": 1.0}

    monkeypatch.setattr(sweep, "run_one", fake_run)
    base = configs.finetune_default.get_config("classification")
    result = sweep.sweep(base, str(tmp_path), [0.25, 1.0], [0, 1], "/weights.pth", "auc")
    assert len(result) == len(seen) == 8
    assert seen[1][:4] == (0.25, "/weights.pth", 1, 1)
    assert {s[1] for s in seen} == {"/weights.pth", ""}
    assert seen[0][4] == os.path.join(str(tmp_path), "frac0.25_pretrained_seed0")
    assert base.data.train_fraction == 1.0 and base.init_from == "auto"  # the base config is left alone


def test_a_finished_run_is_read_back_not_run_again(tmp_path, monkeypatch):
    (tmp_path / "result.json").write_text(json.dumps({"metrics": {"auc": 0.7}, "seconds": 3.0}))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr("vdt_jax.train.loop.train_and_evaluate", no_training)
    assert sweep.run_one(configs.finetune_default.get_config("classification"), str(tmp_path))["metrics"]["auc"] == 0.7
