"""Model cards: written with the run's step and latest evaluation, read back checked, compared field by field."""

from __future__ import annotations

import json

import pytest

from vdt_jax import model_card

FIELDS = {
    "task": "segmentation",
    "architecture": {"network": "UNet3D", "in_channels": 1, "num_classes": 3, "depth": 10, "widths": (8, 8, 16, 16)},
    "class_names": ["background", "organ", "lesion"],
    "preprocessing": {"target_spacing_xyz_mm": (1.8, 1.8, 2.5), "normalize": "window"},
    "pytorch": {"code": "model = ..."},
}


def test_the_run_card_keeps_the_latest_evaluation_across_a_resume(tmp_path):
    model_card.write_run_card(str(tmp_path), FIELDS, step=100, evaluation=(100, {"mean_dice": 0.5}), num_parameters=1234)
    model_card.write_run_card(str(tmp_path), FIELDS, step=150, evaluation=None, num_parameters=1234)  # resumed, not evaluated yet
    card = model_card.read_card(str(tmp_path / "model_card.json"))
    assert card["format"] == model_card.FORMAT and card["source"]["step"] == 150
    assert card["source"]["evaluation"] == {"step": 100, "metrics": {"mean_dice": 0.5}}
    assert card["architecture"]["widths"] == [8, 8, 16, 16] and card["architecture"]["parameters"] == 1234
    assert card["weights"]["location"] == str(tmp_path / "checkpoints" / "150")
    model_card.write_run_card(str(tmp_path), FIELDS, step=200, evaluation=(200, {"mean_dice": 0.7}), num_parameters=1234)
    assert model_card.read_card(str(tmp_path / "model_card.json"))["source"]["evaluation"]["metrics"] == {"mean_dice": 0.7}
    assert [p.name for p in tmp_path.iterdir()] == ["model_card.json"]  # written atomically, no temporaries left


def test_differences_name_every_field():
    expected = model_card.plain(FIELDS)
    actual = json.loads(json.dumps(expected))
    actual["architecture"]["widths"] = [16, 32, 64, 128]
    actual["preprocessing"]["hu_window"] = [40, 400]
    del actual["class_names"]
    assert model_card.differences(expected, actual) == [
        "architecture.widths: [8, 8, 16, 16] vs [16, 32, 64, 128]",
        'class_names: ["background", "organ", "lesion"] vs (absent)',
        "preprocessing.hu_window: (absent) vs [40, 400]",
    ]
    assert model_card.differences(expected, model_card.plain(FIELDS)) == []


def test_check_card_refuses_with_the_differences_and_ignores_adaptable_fields():
    card = model_card.plain(FIELDS)
    expected = json.loads(json.dumps(card))
    expected["architecture"]["conv_impl"] = "conv3d"
    model_card.check_card(card, expected, sections=("architecture",), card_path="c.json", expected_name="x", advice="",
                          ignore=("architecture.conv_impl",))
    expected["architecture"]["depth"] = 18
    with pytest.raises(model_card.ModelCardError, match=r"c.json does not match the config \(card vs the config\): architecture.depth: 10 vs 18\. Fix it\."):
        model_card.check_card(card, expected, sections=("architecture",), card_path="c.json", expected_name="the config",
                              advice="Fix it.", ignore=("architecture.conv_impl",))


def test_files_that_are_not_cards_are_refused(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(model_card.ModelCardError, match="a.json: not a readable model card"):
        model_card.read_card(str(tmp_path / "a.json"))
    (tmp_path / "b.json").write_text('{"weights": 1}')
    with pytest.raises(model_card.ModelCardError, match='b.json: not a vdt-jax model card'):
        model_card.read_card(str(tmp_path / "b.json"))
    assert model_card.find_card(str(tmp_path / "weights.pth")) is None
    (tmp_path / "weights.pth.json").write_text(json.dumps({"format": model_card.FORMAT, "version": 1}))
    assert model_card.find_card(str(tmp_path / "weights.pth"))[0] == str(tmp_path / "weights.pth.json")
