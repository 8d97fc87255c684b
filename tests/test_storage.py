"""Workdirs on local disk and on Cloud Storage (gs://, through a local emulator).

The end-to-end test runs `python -m vdt_jax.pretrain --workdir=gs://...`
against `gcp-storage-emulator` on 127.0.0.1: Orbax writes its checkpoints
there through TensorStore, metrics.jsonl, config.json and TensorBoard events
go through etils.epath / google-cloud-storage; the run is killed with SIGKILL
after a checkpoint, and the same command resumes from it and finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import gcs_emulator
from vdt_jax import storage
from vdt_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_check_workdir_accepts_new_and_existing_folders_and_creates_nothing(tmp_path):
    assert storage.check_workdir(str(tmp_path)) == str(tmp_path)
    assert storage.check_workdir(str(tmp_path / "a" / "b")) == str(tmp_path / "a" / "b")
    assert os.listdir(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        storage.check_workdir(str(tmp_path / "file"))
    with pytest.raises(UserError, match=f"cannot be created: {tmp_path / 'file'} is a file"):
        storage.check_workdir(str(tmp_path / "file" / "run"))


def test_urls_stay_urls_and_unknown_schemes_are_refused():
    assert storage.absolute("gs://bucket/run") == "gs://bucket/run"
    assert storage.check_workdir("gs://bucket/run") == "gs://bucket/run"
    with pytest.raises(UserError, match="unsupported URL scheme http://"):
        storage.check_workdir("http://example.invalid/run")


def test_append_text_and_atomic_writes_on_local_paths(tmp_path):
    from vdt_jax.atomic import write_text_atomic

    path = str(tmp_path / "metrics.jsonl")
    storage.append_text(path, "a\n")
    storage.append_text(path, "b\n")
    assert storage.read_text(path) == "a\nb\n"
    write_text_atomic(str(tmp_path / "sub" / "x.txt"), "whole")
    assert storage.read_text(str(tmp_path / "sub" / "x.txt")) == "whole"


@pytest.fixture(scope="module")
def emulator():
    pytest.importorskip("gcp_storage_emulator")
    pytest.importorskip("gcsfs")
    port = gcs_emulator.free_port()
    process = gcs_emulator.start(port)
    yield port
    process.kill()
    process.wait()


def _pretrain(workdir: str, data_dir, env: dict, steps: int, log_path) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "vdt_jax.pretrain", f"--workdir={workdir}",
        "--config.data.name=vdt_shapes/tiny", f"--config.data.data_dir={data_dir}",
        "--config.data.image_size=16", "--config.data.eval_resize=18",
        "--config.model.widths=(8,8,8,8)", "--config.model.conv_impl=conv3d",
        "--config.batch_size=8", "--config.eval_batch_size=50",
        f"--config.num_train_steps={steps}", "--config.log_every_steps=2", "--config.checkpoint_every_steps=2",
    ]  # fmt: skip
    environment = {**os.environ, **env, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
                   "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}  # fmt: skip
    log = open(log_path, "w")  # a file, not a pipe: nobody reads a pipe while the run goes on, and a full one blocks it
    return subprocess.Popen(args, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)


def _committed_steps(port: int, prefix: str) -> list[int]:
    """Steps whose Orbax commit marker is in the bucket (on object stores Orbax commits with a marker file)."""
    try:
        names = gcs_emulator.list_objects(port, f"{prefix}/checkpoints/")
    except OSError:  # the emulator is busy serving the run: ask again later
        return []
    return sorted(int(n.split("/")[-2]) for n in names if n.endswith("commit_success.txt") and n.count("/") == 3)


def test_a_gs_workdir_run_is_killed_and_resumes_from_its_bucket(emulator, data_dir, tmp_path):
    port, prefix = emulator, "killed_run"
    workdir, env = f"gs://{gcs_emulator.BUCKET}/{prefix}", gcs_emulator.environment(emulator)
    run = _pretrain(workdir, data_dir, env, 8, tmp_path / "killed.log")
    deadline = time.monotonic() + 900
    try:
        while not any(step >= 2 for step in _committed_steps(port, prefix)):
            assert run.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint reached the bucket"
            time.sleep(1.0)
    finally:
        run.send_signal(signal.SIGKILL)  # as the OOM killer or a lost VM would
        run.wait()
    saved = _committed_steps(port, prefix)
    assert max(saved) < 8, saved

    rerun = _pretrain(workdir, data_dir, env, 8, tmp_path / "rerun.log")
    assert rerun.wait(timeout=900) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    out = (tmp_path / "rerun.log").read_text()
    resumed = [line for line in out.splitlines() if line.startswith("Resumed from")]
    assert resumed and resumed[0].startswith(f"Resumed from {workdir}/checkpoints/") and "(step " in resumed[0]
    step = int(resumed[0].rsplit("(step ", 1)[1].rstrip(").")) if resumed else -1
    assert step in saved
    assert max(_committed_steps(port, prefix)) == 8
    records = [json.loads(line) for line in gcs_emulator.read_object(port, f"{prefix}/metrics.jsonl").decode().splitlines()]
    assert records[-1]["split"] == "eval" and records[-1]["step"] == 8 and records[-1]["num_examples"] == 100
    config = json.loads(gcs_emulator.read_object(port, f"{prefix}/config.json"))
    assert config["model"]["widths"] == [8, 8, 8, 8]
    assert any("/tensorboard/events.out.tfevents" in n for n in gcs_emulator.list_objects(port, prefix))
    print(f"gs:// run: killed after steps {saved}, resumed from step {step}, finished at step 8")
