"""curves.png from metrics.jsonl: the right series, resumed runs' repeated steps, cut lines."""

from __future__ import annotations

import json

from PIL import Image

from vdt_jax.train import curves


def write_metrics(path, records, tail=""):
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.write(tail)


def test_series_keep_the_last_record_of_each_step_and_skip_cut_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [
        {"split": "train", "step": 20, "loss": 2.0, "learning_rate": 0.1},
        {"split": "train", "step": 40, "loss": 1.5, "learning_rate": 0.05},
        {"split": "eval", "step": 40, "mean_dice": 0.2, "dice/organ": 0.4, "dice/lesion": 0.0, "num_examples": 8.0},
        {"split": "train", "step": 40, "loss": 1.4, "learning_rate": 0.05},  # a resumed run logs step 40 again
        {"split": "train", "step": 60, "loss": 1.0, "learning_rate": 0.0},
    ]
    write_metrics(path, records, tail='{"split": "train", "st')  # killed while writing
    train, evaluation = curves.read_metrics(str(path))
    assert [r["step"] for r in train] == [20, 40, 60] and train[1]["loss"] == 1.4
    assert curves.score_keys(evaluation) == ["mean_dice", "dice/lesion", "dice/organ"]
    assert curves.write_curves(str(path), str(tmp_path / "curves.png"))
    with Image.open(tmp_path / "curves.png") as png:
        assert png.size == (720, 30 + 3 * 230)
        pixels = png.convert("RGB").getcolors(1 << 20)
    assert len(pixels) > 10  # lines in several colours, not a blank canvas


def test_classification_scores_and_an_empty_log(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_metrics(path, [{"split": "eval", "step": 5, "top1": 0.3, "top5": 0.8, "loss": 2.0, "num_examples": 100}])
    assert curves.score_keys(curves.read_metrics(str(path))[1]) == ["top1", "top5"]
    assert curves.write_curves(str(path), str(tmp_path / "c.png"))  # eval loss and scores, no training yet
    with Image.open(tmp_path / "c.png") as png:
        assert png.size == (720, 30 + 2 * 230)
    write_metrics(path, [])
    assert not curves.write_curves(str(path), str(tmp_path / "d.png")) and not (tmp_path / "d.png").exists()
    assert not curves.write_curves(str(tmp_path / "none.jsonl"), str(tmp_path / "d.png"))
