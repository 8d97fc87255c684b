"""Multi-host pre-training, for real: two processes x 4 CPU devices against one process x 8 devices.

The two processes join through `jax.distributed` on 127.0.0.1 (gloo CPU
collectives), exactly as `python -m vdt_jax.pretrain` starts on a pod, and
train the pre-training task on the tiny `vdt_shapes` dataset. This process
(8 fake devices, see conftest.py) then trains the same model on the same
global batches alone and checks that both end with the same parameters, that
the processes read disjoint shards, that evaluation saw every example once,
that only process 0 logged, and that the two-process checkpoint restores here.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import optax
import pytest

from tests import multihost_worker as worker
from vdt_jax import checkpointing, distributed
from vdt_jax.data import images
from vdt_jax.train import mesh as mesh_lib
from vdt_jax.train import optim
from vdt_jax.train import state as state_lib

STEPS = 8  # test_preemption.py runs the same programs: the shared compilation cache then skips XLA
CONV = {"model.conv_impl": "conv3d"}  # compiles faster than depth_taps on CPU


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    images.prepare_dataset(worker.tiny_pretrain_config(directory, STEPS).data)
    return directory


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("two_processes") / "run"
    cache = tmp_path_factory.getbasetemp() / "jax_cache"
    processes = worker.launch(workdir, data_dir, STEPS, cache_dir=cache, overrides=CONV)
    logs = worker.finish(processes, workdir, timeout=420)
    records = [runs[-1] for runs in worker.read_records(workdir)]
    return workdir, logs, records


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, data_dir):
    """This process, 8 devices, fed the concatenation of what the two processes read."""
    assert jax.process_count() == 1 and jax.device_count() == 8, "needs conftest's 8 fake CPU devices"
    workdir = tmp_path_factory.mktemp("one_process") / "run"
    config = worker.tiny_pretrain_config(data_dir, STEPS, **CONV)
    task = _two_shards_task_class()(config)
    from vdt_jax.train import loop

    metrics = loop.train_and_evaluate(config, str(workdir), task)
    return workdir, metrics, task


def _two_shards_task_class():
    base = worker.recording_task_class()

    class TwoShardsTask(base):
        def train_iterator(self, *, seed: int, per_process_batch: int):
            loaders = [
                images.train_loader(
                    self.config.data, seed=seed, per_process_batch=per_process_batch // 2,
                    process_index=index, process_count=2, keep_file_name=True,
                )  # fmt: skip
                for index in range(2)
            ]
            return worker._RecordingIterator(_Concatenated([iter(l) for l in loaders]), self.train_names)

    return TwoShardsTask


class _Concatenated:
    """Row-wise concatenation of several batch iterators, checkpointable like one grain iterator."""

    def __init__(self, iterators):
        self._iterators = iterators

    def __next__(self):
        batches = [next(it) for it in self._iterators]
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

    def get_state(self) -> bytes:
        return json.dumps([it.get_state().decode() for it in self._iterators]).encode()

    def set_state(self, state: bytes) -> None:
        for it, s in zip(self._iterators, json.loads(state)):
            it.set_state(s.encode())

    def start_prefetch(self) -> None:
        pass


def test_two_processes_train_exactly_like_one(two_process_run, one_process_run):
    two_dir, _, records = two_process_run
    one_dir, one_metrics, one_task = one_process_run
    two, _ = checkpointing.load_variables(str(two_dir))  # written by 2 processes, restored here by 1
    one, _ = checkpointing.load_variables(str(one_dir))
    largest = {k: max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(two[k]), jax.tree.leaves(one[k])))
               for k in ("params", "batch_stats")}  # fmt: skip
    print(f"\nafter {STEPS} steps, max |2 processes - 1 process|: {largest}")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), two["params"], one["params"])
    # Running variances (values up to ~10) are E[x^2] - E[x]^2 over a sum reduced in another order
    # across processes: the cancellation leaves ~10 float32 ulps, so compare them relatively.
    stats = two["batch_stats"], one["batch_stats"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *stats)
    assert not np.allclose(two["batch_stats"]["bn1"]["mean"], 0)  # it trained
    # The same global batches, in the same order: process 0's rows, then process 1's.
    per_process = 8
    expected = []
    for step in range(STEPS):
        for record in records:
            expected += record["train"][step * per_process : (step + 1) * per_process]
    assert one_task.train_names == expected
    assert records[0]["metrics"]["top1"] == pytest.approx(one_metrics["top1"], abs=1e-9)
    assert records[0]["metrics"]["loss"] == pytest.approx(one_metrics["loss"], rel=1e-5)


def test_each_process_reads_its_own_shard(two_process_run, data_dir):
    _, _, records = two_process_run
    source = images.TfdsSource(worker.TINY, "train", str(data_dir))
    index_of = {source[i]["file_name"].decode(): i for i in range(len(source))}
    half = len(source) // 2
    reads = [set(r["train"]) for r in records]
    assert [len(r["train"]) for r in records] == [STEPS * 8] * 2
    assert not reads[0] & reads[1]
    assert all(index_of[name] < half for name in reads[0])  # grain's contiguous shard per process
    assert all(index_of[name] >= half for name in reads[1])


def test_evaluation_covers_every_example_once(two_process_run, data_dir):
    _, _, records = two_process_run
    names = records[0]["eval"] + records[1]["eval"]
    validation = images.TfdsSource(worker.TINY, "validation", str(data_dir))
    assert sorted(names) == sorted(validation[i]["file_name"].decode() for i in range(len(validation)))
    assert [len(r["eval"]) for r in records] == [50, 50]
    assert records[0]["metrics"] == records[1]["metrics"]  # every process gets the global result
    assert records[0]["metrics"]["num_examples"] == 100


def test_only_process_zero_reports_and_every_process_checkpoints(two_process_run):
    workdir, logs, _ = two_process_run
    assert f"step {STEPS:>7d}/{STEPS}" in logs[0] and f"eval @ step {STEPS}" in logs[0]
    assert "step " not in logs[1] and "eval @" not in logs[1]
    lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    expected = [("train", step) for step in range(2, STEPS + 1, 2)] + [("eval", STEPS)]
    assert [(l["split"], l["step"]) for l in lines] == expected
    data = sorted(os.listdir(workdir / "checkpoints" / str(STEPS) / "data"))
    assert "process_0-of-2.json" in data and "process_1-of-2.json" in data


def test_two_process_checkpoint_resumes_training_in_one_process(two_process_run, data_dir):
    workdir, _, _ = two_process_run
    config = worker.tiny_pretrain_config(data_dir, STEPS, **CONV)
    task = worker.recording_task_class()(config)
    tx = optim.make_optimizer(config.optimizer, optax.constant_schedule(0.1))
    template = state_lib.create_train_state(
        task.build_model(), tx, task.example_inputs(), jax.random.key(1), mesh_lib.make_mesh()
    )
    ckpt = checkpointing.Checkpointer(str(workdir), every_steps=2, keep=3)
    try:  # the data position was per process (2 of them): the iterator starts afresh, with a warning
        state = ckpt.restore(STEPS, template, task.train_iterator(seed=0, per_process_batch=16))
    finally:
        ckpt.close()
    saved, _ = checkpointing.load_variables(str(workdir))
    assert int(state.step) == STEPS
    jax.tree.map(np.testing.assert_array_equal, mesh_lib.to_host(state.variables), saved)
    assert len(state.params["conv1"]["kernel"].sharding.device_set) == 8


def test_half_configured_start_up_is_an_error_naming_the_missing_settings():
    with pytest.raises(distributed.DistributedConfigError, match=r"--num_processes.*--process_id.*missing"):
        distributed.plan(environ={"VDT_COORDINATOR_ADDRESS": "10.0.0.2:8476"}, on_cloud_tpu=False)
    with pytest.raises(distributed.DistributedConfigError, match="process_id must be in"):
        distributed.plan(coordinator_address="h:1", num_processes=2, process_id=2, environ={})
    with pytest.raises(distributed.DistributedConfigError, match="host:port"):
        distributed.plan(coordinator_address="h", num_processes=2, process_id=0, environ={})
    with pytest.raises(distributed.DistributedConfigError, match="contradicts"):
        distributed.plan(mode="off", num_processes=2, environ={})


def test_start_up_plans_for_each_environment():
    plan = distributed.plan
    assert not plan(environ={}, on_cloud_tpu=False).call_jax  # one host: nothing to do
    explicit = plan(environ={"VDT_COORDINATOR_ADDRESS": "10.0.0.2:8476", "VDT_NUM_PROCESSES": "4",
                             "VDT_PROCESS_ID": "3", "VDT_LOCAL_DEVICE_IDS": "0,1"}, on_cloud_tpu=False)  # fmt: skip
    assert (explicit.call_jax, explicit.coordinator_address, explicit.num_processes, explicit.process_id,
            explicit.local_device_ids) == (True, "10.0.0.2:8476", 4, 3, (0, 1))  # fmt: skip
    flags_win = plan(coordinator_address="a:1", num_processes=2, process_id=1,
                     environ={"VDT_PROCESS_ID": "0"}, on_cloud_tpu=False)  # fmt: skip
    assert flags_win.process_id == 1
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_NTASKS": "16",
             "SLURM_PROCID": "9", "SLURM_LOCALID": "1"}  # fmt: skip
    detected = plan(environ=slurm, on_cloud_tpu=False)
    assert detected.call_jax and detected.coordinator_address is None and "SLURM" in detected.reason
    assert not plan(environ={**slurm, "SLURM_NTASKS": "1"}, on_cloud_tpu=False).call_jax
    assert plan(environ={}, on_cloud_tpu=True).call_jax  # TPU pod: JAX asks the metadata server
    assert not plan(mode="off", environ=slurm, on_cloud_tpu=True).call_jax
    assert plan(environ={"VDT_DISTRIBUTED": "on"}, on_cloud_tpu=False).call_jax
