"""Tests of vdt_jax.data.loading: the shared train loader, the per-process eval shards and pad-and-mask."""

import grain
import numpy as np
import pytest

from vdt_jax.data import loading


class Numbers(grain.sources.RandomAccessDataSource):
    def __init__(self, count: int):
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return {"x": np.int32(index)}

    def __repr__(self):
        return f"Numbers({self.count})"


@pytest.mark.parametrize("count, processes", [(10, 1), (10, 3), (2, 3), (7, 7)])
def test_eval_shards_are_contiguous_balanced_and_cover_everything(count, processes):
    shards = [loading.eval_shard(count, p, processes) for p in range(processes)]
    assert shards[0][0] == 0 and shards[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))
    sizes = [end - start for start, end in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("count, processes, batch", [(10, 3, 2), (5, 2, 4), (2, 3, 2), (9, 1, 3)])
def test_every_process_yields_as_many_batches_and_every_example_appears_once(count, processes, batch):
    def batches_of(start, end):
        for i in range(start, end, batch):
            yield {"x": np.arange(i, min(i + batch, end), dtype=np.int32)}

    empty = {"x": np.zeros((0,), np.int32)}
    per_process = [
        list(loading.sharded_eval_batches(count, batches_of, empty=empty, per_process_batch=batch, process_index=p, process_count=processes))
        for p in range(processes)
    ]
    assert len({len(b) for b in per_process}) == 1
    seen = []
    for batches in per_process:
        for b in batches:
            assert b["x"].shape == (batch,) and b["mask"].dtype == bool
            assert (b["x"][~b["mask"]] == 0).all()
            seen += loading.unpadded(b)["x"].tolist()
    assert sorted(seen) == list(range(count))


def test_pad_batch_and_unpadded_are_inverse():
    batch = {"image": np.ones((2, 3, 3), np.uint8), "name": np.array(["a", "b"])}
    padded = loading.pad_batch(batch, 5)
    assert padded["image"].shape == (5, 3, 3) and padded["mask"].tolist() == [True, True, False, False, False]
    assert padded["name"].tolist() == ["a", "b", "", "", ""]
    back = loading.unpadded(padded)
    assert set(back) == {"image", "name"}
    np.testing.assert_array_equal(back["image"], batch["image"])


def test_train_loader_shards_by_process_and_resumes():
    source = Numbers(12)

    def loader(process_index):
        return loading.train_loader(
            source, [], seed=3, per_process_batch=2, num_workers=0, prefetch_buffer=1,
            process_index=process_index, process_count=2,
        )

    first = [next(iter_) for iter_ in [iter(loader(0))] for _ in range(3)]
    seen = {p: {int(x) for _ in range(3) for x in next(it)["x"]} for p, it in ((p, iter(loader(p))) for p in (0, 1))}
    assert seen[0].isdisjoint(seen[1]) and len(seen[0] | seen[1]) == 12  # one epoch: each process its own half
    iterator = iter(loader(0))
    next(iterator)
    state = iterator.get_state()
    rest = [next(iterator)["x"].tolist() for _ in range(2)]
    resumed = iter(loader(0))
    resumed.set_state(state)
    assert [next(resumed)["x"].tolist() for _ in range(2)] == rest
    assert [b["x"].tolist() for b in first[1:]] == rest
    with pytest.raises(ValueError, match="fewer than the 3 processes"):
        loading.train_loader(Numbers(2), [], seed=0, per_process_batch=1, num_workers=0, prefetch_buffer=1,
                             process_index=0, process_count=3)
    with pytest.raises(ValueError, match=r"process_index must be in \[0, process_count=2\)"):
        loading.eval_shard(4, 2, 2)
