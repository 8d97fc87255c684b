"""Sliding-window inference: window placement, batching and exact stitching at the seams."""

from __future__ import annotations

import numpy as np
import pytest

from vdt_jax.finetune import sliding_window as sw


def test_window_starts_cover_the_axis_and_end_flush():
    assert sw.window_starts(10, 4, 3) == [0, 3, 6]
    assert sw.window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert sw.window_starts(4, 4, 2) == [0]
    assert sw.window_starts(3, 4, 2) == [0]  # smaller than the window: one padded window
    with pytest.raises(ValueError, match="stride must be positive"):
        sw.window_starts(10, 4, 0)


@pytest.mark.parametrize("weighting", ["constant", "gaussian"])
@pytest.mark.parametrize("shape", [(13, 17, 11), (5, 9, 20)])
def test_an_identity_model_is_reproduced_exactly(shape, weighting):
    """Every voxel, seams and edges included, gets back exactly its input (float64 accumulation)."""
    volume = np.random.default_rng(0).normal(size=(*shape, 2)).astype(np.float32)
    calls = []

    def identity(windows):
        calls.append(windows.shape)
        return windows.copy()

    out = sw.sliding_window_inference(
        identity, volume, window=(6, 8, 8), stride=(4, 5, 3), batch_size=4, weighting=weighting, pad_value=-7.0
    )
    np.testing.assert_array_equal(out, volume)
    assert all(c == (4, 6, 8, 8, 2) for c in calls)  # fixed batch shape, the last batch padded


def test_windows_land_where_they_belong():
    """A model that outputs each window's own start recovers, everywhere, a start that covers the voxel."""
    shape, window, stride = (10, 12, 9), (4, 6, 5), (3, 4, 2)
    layout = sw.plan(shape, window, stride)
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float32)
    stitcher = sw.Stitcher(layout, "constant")
    for start in layout.starts:
        stitcher.add(start, layout.window_of(coords, start, -1) - np.asarray(start, np.float32))
    offsets = stitcher.result()  # mean position of each voxel inside the windows covering it
    assert np.all(offsets >= 0) and np.all(offsets <= np.asarray(window) - 1)


def test_a_volume_smaller_than_the_window_is_padded_and_cropped_back():
    volume = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5, 1)
    seen = []

    def record(windows):
        seen.append(windows[0].copy())
        return windows * 2

    out = sw.sliding_window_inference(record, volume, window=(6, 6, 6), stride=(3, 3, 3), batch_size=2, weighting="gaussian", pad_value=-1)
    np.testing.assert_array_equal(out, volume * 2)
    # The volume sits centred in the window, surrounded by the pad value.
    np.testing.assert_array_equal(seen[0][1:4, 1:5, 0:5], volume)
    assert seen[0][0].max() == -1 and seen[0][:, :, 5].max() == -1


def test_stitching_needs_every_window():
    stitcher = sw.Stitcher(sw.plan((8, 8, 8), (4, 4, 4), (4, 4, 4)))
    stitcher.add((0, 0, 0), np.zeros((4, 4, 4, 1)))
    with pytest.raises(RuntimeError, match="needs 8 windows, got 1"):
        stitcher.result()


def test_gaussian_weights_favour_the_window_centre():
    weights = sw.window_weights((5, 8, 8), "gaussian")[..., 0]
    assert weights.shape == (5, 8, 8) and weights.min() > 0
    assert weights[2, 3, 3] > weights[0, 0, 0]
    with pytest.raises(ValueError, match="unknown sliding-window weighting"):
        sw.window_weights((4, 4, 4), "max")
