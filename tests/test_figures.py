"""Tests of vdt_jax.finetune.figures: the segmentation overlay and the label-efficiency plot."""

import numpy as np
from PIL import Image

from vdt_jax.finetune import figures


def test_slices_are_picked_inside_the_foreground():
    truth = np.zeros((20, 4, 4), np.uint8)
    truth[8:13, 1, 1] = 1
    assert figures.pick_slices(truth, np.zeros_like(truth), 3) == [9, 10, 11]
    assert figures.pick_slices(np.zeros_like(truth), truth, 1) == [10]  # no truth: the prediction's extent
    assert figures.pick_slices(np.zeros_like(truth), np.zeros_like(truth), 2) == [4, 15]


def test_overlay_shows_image_truth_and_prediction_in_radiological_view(tmp_path):
    image = np.zeros((6, 10, 12), np.float32)
    truth = np.zeros((6, 10, 12), np.uint8)
    truth[3, 2, 3] = 1  # posterior, patient's left
    prediction = np.zeros_like(truth)
    prediction[3, 2, 3] = 2
    path = tmp_path / "case.png"
    figures.segmentation_overlay(str(path), image, truth, prediction, ("background", "organ", "lesion"), num_slices=1)
    with Image.open(path) as png:
        pixels = np.asarray(png.convert("RGB"))
    scale = 14  # ceil(160 / 12)
    panel_h, panel_w, gap, header = 10 * scale, 12 * scale, 6, 36
    assert pixels.shape == (header + panel_h + gap + 28, 3 * panel_w + 4 * gap, 3)
    # Radiological view flips both in-plane axes: voxel (h=2, w=3) is drawn at row 7, column 8.
    y, x = header + 7 * scale + scale // 2, 8 * scale + scale // 2
    organ = (0.45 * figures.PALETTE[1]).astype(np.uint8)
    lesion = (0.45 * figures.PALETTE[2]).astype(np.uint8)
    np.testing.assert_array_equal(pixels[y, gap + panel_w + gap + x], organ)
    np.testing.assert_array_equal(pixels[y, gap + 2 * (panel_w + gap) + x], lesion)
    assert (pixels[header + panel_h - 2, gap + panel_w - 2] == 0).all()  # the image panel stays grey (black here)


def test_label_efficiency_plot_puts_better_values_higher(tmp_path):
    path = tmp_path / "plot.png"
    series = {"pretrained": [(0.25, 0.9, 0.0), (1.0, 0.95, 0.0)], "scratch": [(0.25, 0.6, 0.0), (1.0, 0.8, 0.0)]}
    figures.label_efficiency_plot(str(path), series, metric="auc")
    with Image.open(path) as png:
        pixels = np.asarray(png.convert("RGB"))[:400]  # above the legend
    rows_of = {name: np.flatnonzero((pixels == colour).all(-1).any(-1)) for name, colour in figures.LINE_COLOURS.items()}
    assert rows_of["pretrained"].mean() < rows_of["scratch"].mean()  # image rows grow downwards
