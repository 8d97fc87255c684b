"""Stitching window scores slab by slab gives what the whole-volume computation gives, for every eval option."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vdt_jax.data import loading
from vdt_jax.finetune import metrics, nifti, resample, sliding_window, window_eval


@dataclasses.dataclass
class FakeVolume:
    """A volume whose model space (D, H, W) = (z, y, x) of an identity-affine file, resampled to `model_shape`."""

    geometry: nifti.Geometry
    pad_value: float = 0.0

    def image(self) -> np.ndarray:
        return np.zeros((*self.geometry.model_shape, 1), np.float32)


def volume(file_xyz, model_shape) -> FakeVolume:
    return FakeVolume(nifti.Geometry("fake.nii.gz", np.eye(4), tuple(file_xyz), (1.0, 1.0, 1.0), tuple(model_shape)))


def fake_scores(windows: window_eval.VolumeWindows, num_classes: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Eval-step outputs for every window of `windows`, in stream order, 3 rows per batch (the last padded)."""
    rng = np.random.default_rng(seed)
    outputs = []
    for batch in windows.batches(per_process_batch=3):
        rows = len(batch["case"])
        scores = rng.normal(size=(rows, *windows.plans[0].window, num_classes)).astype(np.float32)
        outputs.append({"scores": scores, "case": batch["case"], "start": batch["start"], "mask": batch["mask"]})
    return outputs


def whole_volume_scores(windows, outputs, case: int, weighting: str) -> np.ndarray:
    stitcher = sliding_window.Stitcher(windows.plans[case], weighting)
    for out in outputs:
        rows = loading.unpadded(out)
        for scores, row_case, start in zip(rows["scores"], rows["case"], rows["start"]):
            if row_case == case:
                stitcher.add(start, scores)
    return stitcher.result()


@pytest.mark.parametrize("resize, largest_component", [("labels", False), ("scores", False), ("scores", True), ("labels", True)])
def test_slab_stitching_matches_the_whole_volume_computation(resize, largest_component):
    volumes = [volume((9, 7, 13), (10, 6, 8)), volume((5, 6, 4), (4, 6, 5))]  # resampled up and down
    windows = window_eval.VolumeWindows(volumes, (4, 4, 4), (2, 3, 2), "gaussian", 1, average="logits", resize=resize,
                                        largest_component=largest_component)
    outputs = fake_scores(windows, num_classes=3, seed=len(resize) + largest_component)
    finished = {}
    windows.stitch(outputs, lambda case, stitched: finished.setdefault(case, stitched), keep_probabilities=True)
    assert sorted(finished) == [0, 1]
    for case, vol in enumerate(volumes):
        scores = whole_volume_scores(windows, outputs, case, "gaussian")
        labels = scores.argmax(-1).astype(np.uint8)
        if resize == "scores":
            at_source = resample.resized_argmax(scores, vol.geometry.canonical_shape)
        else:
            at_source = nifti.resize(labels, vol.geometry.canonical_shape, order=0)
        if largest_component:
            labels, at_source = metrics.keep_largest_component(labels), metrics.keep_largest_component(at_source)
        stitched = finished[case]
        assert stitched.at_source.shape == vol.geometry.canonical_shape
        np.testing.assert_array_equal(stitched.labels, labels)
        np.testing.assert_array_equal(stitched.at_source, at_source)
        # Averaged logits: the stored probabilities are their softmax, x 255.
        softmax = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
        np.testing.assert_allclose(stitched.probabilities, np.rint(softmax * 255), atol=1)


def test_eval_options_come_from_the_config():
    import configs.finetune_default

    evaluation = configs.finetune_default.get_config("segmentation").eval
    evaluation.update(average="logits", resize="scores", largest_component=True)
    windows = window_eval.VolumeWindows.from_config([volume((9, 7, 13), (10, 6, 8))], evaluation, 1)
    assert (windows.average, windows.resize, windows.largest_component) == ("logits", "scores", True)
    assert windows.plans[0].window == tuple(evaluation.window)
