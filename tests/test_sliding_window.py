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
def test_an_identity_model_is_reproduced_across_the_seams(shape, weighting):
    """Every voxel, seams and edges included, gets back its input up to float32 rounding of the weighted sums."""
    volume = np.random.default_rng(0).normal(size=(*shape, 2)).astype(np.float32)
    calls = []

    def identity(windows):
        calls.append(windows.shape)
        return windows.copy()

    out = sw.sliding_window_inference(
        identity, volume, window=(6, 8, 8), stride=(4, 5, 3), batch_size=4, weighting=weighting, pad_value=-7.0
    )
    assert out.dtype == np.float32
    # At most 8 windows overlap here: each weighted float32 sum rounds ~8 times, then one division.
    np.testing.assert_allclose(out, volume, rtol=1e-6, atol=0)
    assert all(c == (4, 6, 8, 8, 2) for c in calls)  # fixed batch shape, the last batch padded


def test_without_overlap_an_identity_model_is_reproduced_bit_for_bit():
    """Constant weights, one window per voxel: x * 1 / 1 is exact (Gaussian weights round in x * w / w)."""
    volume = np.random.default_rng(1).normal(size=(12, 10, 15, 3)).astype(np.float32)
    out = sw.sliding_window_inference(
        lambda w: w.copy(), volume, window=(4, 5, 5), stride=(4, 5, 5), batch_size=3, weighting="constant"
    )
    np.testing.assert_array_equal(out, volume)


def test_finished_slabs_come_out_in_order_and_memory_stays_a_slab():
    """Windows in raster order: slices are handed out as soon as no pending window covers them."""
    shape, window, stride = (40, 9, 7), (6, 8, 8), (3, 5, 3)
    layout = sw.plan(shape, window, stride)
    volume = np.random.default_rng(2).normal(size=(*shape, 1)).astype(np.float32)
    stitcher = sw.Stitcher(layout, "gaussian")
    slabs, most_held = [], 0
    for start in layout.starts:
        stitcher.add(start, layout.window_of(volume, start, 0.0))
        most_held = max(most_held, stitcher.held_slices)
        finished = stitcher.take_finished()
        if finished is not None:
            slabs.append(finished)
    assert stitcher.complete and stitcher.held_slices == 0
    assert most_held <= window[0] + stride[0]  # never the whole 40-slice volume
    firsts = [first for first, _ in slabs]
    assert firsts[0] == 0 and firsts == sorted(firsts) and len(slabs) > 5
    np.testing.assert_allclose(np.concatenate([s for _, s in slabs]), volume, rtol=1e-6)


def test_windows_arriving_out_of_order_are_stitched_the_same():
    shape, window, stride = (14, 9, 10), (5, 6, 6), (3, 3, 4)
    layout = sw.plan(shape, window, stride)
    outputs = {start: np.random.default_rng(sum(start)).random((*window, 2), np.float32) for start in layout.starts}
    in_order = sw.Stitcher(layout, "gaussian")
    for start in layout.starts:
        in_order.add(start, outputs[start])
    shuffled = sw.Stitcher(layout, "gaussian")
    pieces = []
    for i in np.random.default_rng(3).permutation(len(layout.starts)):
        shuffled.add(layout.starts[i], outputs[layout.starts[i]])
        if (finished := shuffled.take_finished()) is not None:
            pieces.append(finished)
    merged = np.zeros((*shape, 2), np.float32)
    for first, slab in pieces:
        merged[first : first + len(slab)] = slab
    assert sum(len(slab) for _, slab in pieces) == shape[0]
    np.testing.assert_allclose(merged, in_order.result(), rtol=1e-6)
    with pytest.raises(ValueError, match="not a pending window"):
        shuffled.add(layout.starts[0], outputs[layout.starts[0]])


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
    np.testing.assert_allclose(out, volume * 2, rtol=1e-6)  # x * w / w rounds in float32
    # The volume sits centred in the window, surrounded by the pad value.
    np.testing.assert_array_equal(seen[0][1:4, 1:5, 0:5], volume)
    assert seen[0][0].max() == -1 and seen[0][:, :, 5].max() == -1


def test_stitching_needs_every_window():
    stitcher = sw.Stitcher(sw.plan((8, 8, 8), (4, 4, 4), (4, 4, 4)))
    stitcher.add((0, 0, 0), np.zeros((4, 4, 4, 1), np.float32))
    with pytest.raises(RuntimeError, match="needs 8 windows, got 1"):
        stitcher.result()


def test_gaussian_weights_favour_the_window_centre():
    weights = sw.window_weights((5, 8, 8), "gaussian")[..., 0]
    assert weights.shape == (5, 8, 8) and weights.min() > 0
    assert weights[2, 3, 3] > weights[0, 0, 0]
    with pytest.raises(ValueError, match="unknown sliding-window weighting"):
        sw.window_weights((4, 4, 4), "max")
