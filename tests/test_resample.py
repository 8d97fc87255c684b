"""Tests of vdt_jax.finetune.resample: taps agree with scipy's grid-mode zoom; chunked argmax equals the direct one."""

import numpy as np

from vdt_jax.finetune import nifti, resample


def test_linear_taps_match_scipy_grid_mode_zoom_on_one_axis():
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    for n_out in (3, 7, 10, 16):
        ours = resample.interpolate_axis(x, 0, resample.linear_taps(7, n_out))
        np.testing.assert_allclose(ours, nifti.resize(x[:, :, None], (n_out, 3, 1), order=1)[:, :, 0], atol=1e-5)
    left, right, weight = resample.linear_taps(5, 5)
    np.testing.assert_array_equal(left, np.arange(5)) and np.testing.assert_array_equal(weight, 0.0)  # identity
    np.testing.assert_array_equal(resample.nearest_taps(4, 10), [0, 0, 0, 1, 1, 2, 2, 2, 3, 3])


def test_resized_argmax_in_chunks_equals_resizing_the_whole_volume(monkeypatch):
    scores = np.random.default_rng(1).normal(size=(5, 6, 4, 3)).astype(np.float32)
    shape = (11, 13, 9)
    expected = nifti.resize(scores, shape, order=1).argmax(-1)
    monkeypatch.setattr(resample, "MAX_CHUNK_VALUES", 11 * 9 * 3 * 2)  # two output rows at a time
    np.testing.assert_array_equal(resample.resized_argmax(scores, shape), expected)
    # Scores resized before the argmax differ from labels resized after it (what eval.resize chooses between).
    labels_resized = nifti.resize(scores.argmax(-1).astype(np.uint8), shape, order=0)
    assert (labels_resized != expected).any()


def test_slab_resized_argmax_fed_slab_by_slab_equals_resized_argmax():
    """As the sliding-window stitcher hands out finished slabs: any split, up- or downsampling depth."""
    rng = np.random.default_rng(2)
    cases = [
        ((7, 5, 6), (13, 9, 4), [3, 1, 3]),
        ((10, 4, 4), (4, 6, 5), [1] * 10),  # downsampling: some slabs feed no output at all
        ((10, 4, 4), (4, 6, 5), [1, 1, 4, 4]),
        ((5, 3, 3), (5, 3, 3), [5]),  # same grid
        ((3, 8, 8), (40, 5, 9), [1, 1, 1]),
        ((31, 4, 4), (3, 4, 4), [1] * 31),
    ]
    for in_shape, out_shape, sizes in cases:
        scores = rng.normal(size=(*in_shape, 4)).astype(np.float32)
        resizer = resample.SlabResizedArgmax(in_shape, out_shape)
        first = 0
        for size in sizes:  # (a downsampled depth may be complete before its last slices come)
            resizer.add(first, scores[first : first + size])
            first += size
        assert resizer.complete and not resizer._held  # nothing kept once every output slice is done
        np.testing.assert_array_equal(resizer.labels, resample.resized_argmax(scores, out_shape))
    resizer = resample.SlabResizedArgmax((4, 2, 2), (4, 2, 2))
    with np.testing.assert_raises_regex(ValueError, "expected depth 0, got 1"):
        resizer.add(1, scores[:1])
