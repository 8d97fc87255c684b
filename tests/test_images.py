"""Tests of vdt_jax.data.images: preparing the datasets and the train/eval loaders, on the tiny vdt_shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from absl import flags

from tests.image_fakes import (
    NUM_EVAL,
    NUM_TRAIN,
    assert_batches_equal,
    label_from_file_name,
    make_config,
    take,
)
from vdt_jax.data import images


def test_dataset_info(data_dir):
    info = images.dataset_info(make_config(data_dir))
    expected = images.DatasetInfo(num_classes=10, num_train_examples=NUM_TRAIN, num_eval_examples=NUM_EVAL)
    assert info == dataclasses.replace(expected, class_names=info.class_names)
    assert len(info.class_names) == 10 and len(set(info.class_names)) == 10  # the label names, for model cards


def test_prepare_dataset_errors(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_img_train.tar") as error:
        images.prepare_dataset(make_config(tmp_path, name="imagenet2012"))
    assert "download_and_prepare" in str(error.value) and str(tmp_path) in str(error.value)
    with pytest.raises(ValueError, match="data.eval_split='test'"):
        images.prepare_dataset(make_config(data_dir, eval_split="test"))


# --- training loader ---------------------------------------------------------


def train_iterator(data_dir, *, seed=0, batch=30, process_index=0, process_count=1, **overrides):
    loader = images.train_loader(
        make_config(data_dir, **overrides),
        seed=seed,
        per_process_batch=batch,
        process_index=process_index,
        process_count=process_count,
        keep_file_name=True,
    )
    return iter(loader)


def test_train_batches(data_dir):
    loader = images.train_loader(
        make_config(data_dir), seed=0, per_process_batch=8, process_index=0, process_count=1
    )
    batch = next(iter(loader))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (8, 24, 24, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32


def test_train_epochs_cover_the_data_and_reshuffle(data_dir):
    batches = take(train_iterator(data_dir), 2 * NUM_TRAIN // 30)
    names = [n for b in batches for n in b["file_name"]]
    first, second = names[:NUM_TRAIN], names[NUM_TRAIN:]
    assert sorted(first) == sorted(second) and len(set(first)) == NUM_TRAIN
    assert first != second
    labels = np.concatenate([b["label"] for b in batches])
    assert labels.tolist() == [label_from_file_name(n) for n in names]


def test_train_determinism_and_resume(data_dir):
    batches = take(train_iterator(data_dir, seed=3), 4)
    assert_batches_equal(batches, take(train_iterator(data_dir, seed=3), 4))
    other = take(train_iterator(data_dir, seed=4), 1)[0]
    assert not np.array_equal(batches[0]["image"], other["image"])

    # Resume across an epoch boundary (10 batches of 30 per epoch).
    iterator = train_iterator(data_dir, seed=3)
    take(iterator, 8)
    state = iterator.get_state()
    expected = take(iterator, 5)
    resumed = train_iterator(data_dir, seed=3)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 5), expected)


@pytest.mark.parametrize("process_count", [2, 3])
def test_train_process_shards_are_disjoint_and_cover_the_data(data_dir, process_count):
    per_process = NUM_TRAIN // process_count
    shards = []
    for index in range(process_count):
        iterator = train_iterator(data_dir, batch=per_process // 5, process_index=index, process_count=process_count)
        shards.append({n for b in take(iterator, 5) for n in b["file_name"]})
        assert len(shards[-1]) == per_process
    assert len(set.union(*shards)) == NUM_TRAIN


def test_train_with_worker_processes(data_dir):
    flags.FLAGS.mark_as_parsed()
    in_process = take(train_iterator(data_dir, batch=10), 4)
    iterator = train_iterator(data_dir, batch=10, num_workers=2)
    with_workers = take(iterator, 4)

    # Same examples with the same augmentation; 2 workers regroup each pair of batches.
    def by_name(batches):
        return {n: img.tobytes() for b in batches for n, img in zip(b["file_name"], b["image"])}

    assert by_name(with_workers[:2]) == by_name(in_process[:2])
    assert by_name(with_workers) == by_name(in_process)

    state = iterator.get_state()
    expected = take(iterator, 3)
    resumed = train_iterator(data_dir, batch=10, num_workers=2)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 3), expected)


# --- evaluation batches ------------------------------------------------------


def collect_eval(data_dir, *, batch, process_count, **overrides) -> list[list[dict]]:
    return [
        list(
            images.eval_batches(
                make_config(data_dir, **overrides),
                per_process_batch=batch,
                process_index=index,
                process_count=process_count,
                keep_file_name=True,
            )
        )
        for index in range(process_count)
    ]


@pytest.mark.parametrize("process_count,batch", [(1, 16), (2, 16), (3, 16), (3, 64), (7, 8)])
def test_eval_sees_every_example_once(data_dir, process_count, batch):
    per_process = collect_eval(data_dir, batch=batch, process_count=process_count)
    expected_batches = -(-(-(-NUM_EVAL // process_count)) // batch)
    assert [len(batches) for batches in per_process] == [expected_batches] * process_count
    names = []
    for batches in per_process:
        for b in batches:
            mask = b["mask"]
            assert b["image"].shape == (batch, 24, 24, 3) and b["image"].dtype == np.uint8
            assert b["label"].dtype == np.int32 and mask.dtype == bool
            assert (mask == (np.arange(batch) < mask.sum())).all()  # padding only at the end
            assert (b["image"][~mask] == 0).all() and (b["label"][~mask] == 0).all()
            assert (b["file_name"][~mask] == "").all()
            real = b["file_name"][mask].tolist()
            assert b["label"][mask].tolist() == [label_from_file_name(n) for n in real]
            names += real
    assert len(names) == NUM_EVAL and len(set(names)) == NUM_EVAL


def test_eval_public_api_and_worker_processes(data_dir):
    batches = list(
        images.eval_batches(make_config(data_dir), per_process_batch=16, process_index=1, process_count=2)
    )
    assert len(batches) == 4 and set(batches[0]) == {"image", "label", "mask"}
    assert [int(b["mask"].sum()) for b in batches] == [16, 16, 16, 2]

    flags.FLAGS.mark_as_parsed()
    with_workers = collect_eval(data_dir, batch=16, process_count=2, num_workers=2)[1]
    assert [int(b["mask"].sum()) for b in with_workers] == [16, 16, 16, 2]
    names = sorted(n for b in with_workers for n in b["file_name"][b["mask"]])
    in_process = collect_eval(data_dir, batch=16, process_count=2)[1]
    assert names == sorted(n for b in in_process for n in b["file_name"][b["mask"]])
