"""launch/*.sh: syntax, shellcheck, usage text, missing variables, and the exact commands they run.

gcloud, git and srun are replaced by stubs on PATH that record their
arguments, so the tests show both what --dry-run prints and that a real run
executes exactly those commands (and a dry run none). Nothing reaches Google
Cloud or SLURM here.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "launch", "*.sh")))
ENTRY_POINTS = [s for s in SCRIPTS if not s.endswith("common.sh")]
TPU = {"TPU_NAME": "vdt-pod", "ZONE": "us-central2-b"}


@pytest.fixture
def stubs(tmp_path):
    """A PATH whose gcloud/git/srun append their argv (one JSON-free line, shell-quoted) to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("gcloud", "git", "srun"):
        stub = bin_dir / name
        stub.write_text(f'#!/usr/bin/env bash\nprintf "%q " {name} "$@" >> "{log}"\necho >> "{log}"\n')
        stub.chmod(0o755)
    return bin_dir, log


def launch(script: str, env: dict[str, str], *args: str, stubs=None, cwd=REPO) -> subprocess.CompletedProcess:
    path = os.environ["PATH"] if stubs is None else f"{stubs[0]}{os.pathsep}{os.environ['PATH']}"
    clean = {k: v for k, v in os.environ.items() if k not in ("DRY_RUN", "PROJECT", "TFDS_DATA_DIR", "WORKDIR")}
    return subprocess.run(
        ["bash", os.path.join(REPO, "launch", script), *args],
        env={**clean, "PATH": path, "TMPDIR": "/tmp", **env}, cwd=cwd, capture_output=True, text=True, timeout=60,
    )


def commands(result: subprocess.CompletedProcess) -> list[list[str]]:
    """The commands a script printed ("+ cmd args"), split as the shell would."""
    assert result.returncode == 0, result.stderr
    return [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]


def recorded(stubs) -> list[list[str]]:
    log = stubs[1]
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def remote(command: list[str]) -> str:
    (value,) = [arg.removeprefix("--command=") for arg in command if arg.startswith("--command=")]
    return value


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", script], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck missing (CI: apt-get install shellcheck)")
def test_shellcheck_is_clean():
    result = subprocess.run(["shellcheck", "-x", *SCRIPTS], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", ENTRY_POINTS, ids=os.path.basename)
def test_help_lists_the_variables_and_missing_ones_are_named(script):
    name = os.path.basename(script)
    usage = launch(name, {}, "--help")
    assert usage.returncode == 0 and "Variables" in usage.stdout and "--dry-run" in usage.stdout
    assert "SBATCH" not in usage.stdout
    if name == "gpu_benchmark.sh":
        return  # needs no variables
    missing = launch(name, {}, "--dry-run")
    assert missing.returncode == 2 and "error: set " in missing.stderr
    expected = ["WORKDIR"] if name == "slurm_gpu.sh" else ["TPU_NAME", "ZONE"]
    assert all(variable in missing.stderr for variable in expected), missing.stderr


def test_create_spot_slice(stubs):
    result = launch("tpu_create.sh", {**TPU, "PROVISIONING": "spot"}, "--dry-run", stubs=stubs)
    assert commands(result) == [[
        "gcloud", "compute", "tpus", "tpu-vm", "create", "vdt-pod", "--zone=us-central2-b",
        "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot",
    ]]  # fmt: skip
    assert recorded(stubs) == []  # a dry run runs nothing


def test_create_queued_spot_slice_with_a_data_disk(stubs):
    env = {**TPU, "PROVISIONING": "queued-spot", "ACCELERATOR_TYPE": "v5p-64", "RUNTIME_VERSION": "v2-alpha-tpuv5",
           "PROJECT": "my-project", "VALID_UNTIL": "6h",
           "DATA_DISK": "source=projects/my-project/zones/us-central2-b/disks/imagenet,mode=read-only"}  # fmt: skip
    result = launch("tpu_create.sh", env, stubs=stubs)  # for real, against the stub
    expected = [
        "gcloud", "compute", "tpus", "queued-resources", "create", "vdt-pod-qr", "--zone=us-central2-b",
        "--project=my-project", "--node-id=vdt-pod", "--accelerator-type=v5p-64", "--runtime-version=v2-alpha-tpuv5",
        "--spot", "--valid-until-duration=6h",
        "--data-disk=source=projects/my-project/zones/us-central2-b/disks/imagenet,mode=read-only",
    ]  # fmt: skip
    assert commands(result) == [expected] == recorded(stubs)
    assert "queued-resources describe vdt-pod-qr" in result.stdout
    bad = launch("tpu_create.sh", {**TPU, "PROVISIONING": "cheap"}, "--dry-run")
    assert bad.returncode == 2 and "PROVISIONING must be" in bad.stderr


def test_install_copies_this_checkout_and_mounts_the_bucket(stubs, tmp_path):
    result = launch("tpu_install.sh", {**TPU, "BUCKET": "my-runs", "DATA_DISK_DEVICE": "/dev/sdb"}, stubs=stubs)
    archive, scp, ssh = commands(result)
    assert archive == ["git", "-C", REPO, "archive", "--format=tar.gz", "--output=/tmp/vdt-jax-vdt-pod.tar.gz", "HEAD"]
    assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/vdt-jax-vdt-pod.tar.gz",
                   "vdt-pod:vdt-jax.tar.gz", "--zone=us-central2-b", "--worker=all"]  # fmt: skip
    assert ssh[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "vdt-pod", "--zone=us-central2-b", "--worker=all"]
    script = remote(ssh)
    for step in (
        "tar -xzf $HOME/vdt-jax.tar.gz -C $HOME/vdt-jax",
        "$HOME/vdt-venv/bin/pip install -q -e \"$HOME/vdt-jax[gcs]\" 'jax[tpu]>=0.10.2,<0.11'",
        "gcsfuse --implicit-dirs --rename-dir-limit=100000 my-runs /gcs/my-runs",
        "sudo mount -o ro,noload /dev/sdb /mnt/disks/data",
    ):
        assert step in script
    subprocess.run(["bash", "-n", "-c", script], check=True)
    assert recorded(stubs) == [archive, scp, ssh]
    cloned = commands(launch("tpu_install.sh", {**TPU, "BUCKET": "b", "REPO_URL": "https://example.com/vdt-jax.git"},
                             "-n"))  # fmt: skip
    assert len(cloned) == 1 and "git clone --depth 1 --branch main https://example.com/vdt-jax.git" in remote(cloned[0])


def test_copy_data_to_every_worker():
    env = {**TPU, "GCS_DATA_DIR": "gs://my-data/tensorflow_datasets/", "DATASET": "imagenet2012",
           "LOCAL_DATA_DIR": "/mnt/disks/data/tfds"}  # fmt: skip
    result = launch("tpu_copy_data.sh", env, "-n")
    (ssh,) = commands(result)
    assert "--worker=all" in ssh
    assert remote(ssh) == (
        "mkdir -p /mnt/disks/data/tfds/imagenet2012 && gcloud storage rsync --recursive "
        "gs://my-data/tensorflow_datasets/imagenet2012 /mnt/disks/data/tfds/imagenet2012 && "
        "du -sh /mnt/disks/data/tfds/imagenet2012"
    )


def test_train_starts_the_same_command_on_all_workers(stubs):
    env = {**TPU, "WORKDIR": "/gcs/my-runs/r3d18", "TFDS_DATA_DIR": "/mnt/disks/data/tensorflow_datasets"}
    result = launch("tpu_train.sh", env, "--", "--config.batch_size=1024", "--config.model.widths=(64, 128)",
                    stubs=stubs)  # fmt: skip
    (ssh,) = commands(result)
    assert recorded(stubs) == [ssh]
    assert ssh[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "vdt-pod", "--zone=us-central2-b", "--worker=all"]
    script = remote(ssh)
    subprocess.run(["bash", "-n", "-c", script], check=True)
    assert (
        "TFDS_DATA_DIR=/mnt/disks/data/tensorflow_datasets nohup $HOME/vdt-venv/bin/python -m vdt_jax.pretrain "
        "--distributed=on --config=configs/imagenet_r3d18_bf16.py --workdir=/gcs/my-runs/r3d18 "
        "--config.batch_size=1024 '--config.model.widths=(64, 128)' > $HOME/vdt-logs/r3d18.log 2>&1 < /dev/null &"
    ) in script
    assert "launch/tpu_logs.sh" in result.stdout and "Started." in result.stdout
    dry = launch("tpu_train.sh", {**TPU, "WORKDIR": "gs://my-runs/r3d18"}, "-n")  # a bucket URL, written directly
    assert dry.returncode == 0 and "--workdir=gs://my-runs/r3d18" in remote(commands(dry)[0])
    assert "Started" not in dry.stdout and "nothing was started" in dry.stdout
    other = launch("tpu_train.sh", {**TPU, "WORKDIR": "s3://my-runs/r3d18"}, "-n")
    assert other.returncode == 2 and "gs:// URL" in other.stderr


def test_train_remote_command_refuses_a_second_run_on_a_worker(tmp_path):
    """Run the remote part locally against a fake home: it starts once, then refuses."""
    home = tmp_path / "home"
    (home / "vdt-jax" / "vdt_jax").mkdir(parents=True)
    (home / "vdt-venv" / "bin").mkdir(parents=True)
    os.symlink(shutil.which("python3") or shutil.which("python"), home / "vdt-venv" / "bin" / "python")
    # A stand-in for vdt_jax.pretrain under another name, so real runs on this machine do not interfere.
    (home / "vdt-jax" / "vdt_jax" / "__init__.py").write_text("")
    standin = "import sys, time\nprint(sys.argv[1:], flush=True)\ntime.sleep(20)\n"
    (home / "vdt-jax" / "vdt_jax" / "standin.py").write_text(standin)
    (ssh,) = commands(launch("tpu_train.sh", {**TPU, "WORKDIR": "/gcs/b/run1"}, "-n"))
    script = remote(ssh).replace("vdt_jax.pretrain", "vdt_jax.standin")
    script = script.replace("vdt_jax[.]pretrain", "vdt_jax[.]standin")
    env = {**os.environ, "HOME": str(home)}
    first = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    try:
        assert first.returncode == 0 and "started, log in" in first.stdout
        second = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1 and "already running" in second.stderr
        log = home / "vdt-logs" / "run1.log"
        for _ in range(100):
            if log.exists() and log.read_text():
                break
            subprocess.run(["sleep", "0.1"])
        assert "'--workdir=/gcs/b/run1'" in log.read_text()
    finally:
        found = subprocess.run(["pgrep", "-f", f"{home}/vdt-venv/bin/python -m vdt_jax.standin"],
                               capture_output=True, text=True)  # fmt: skip
        for pid in found.stdout.split():
            os.kill(int(pid), 9)


def test_logs_and_delete():
    (tail,) = commands(launch("tpu_logs.sh", {**TPU, "RUN_NAME": "r3d18", "WORKER": "2"}, "-n"))
    assert tail == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "vdt-pod", "--zone=us-central2-b", "--worker=2",
                    "--command=tail -n 100 -F $HOME/vdt-logs/r3d18.log"]  # fmt: skip
    (delete,) = commands(launch("tpu_delete.sh", TPU, "-n"))
    assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "vdt-pod", "--zone=us-central2-b"]
    (queued,) = commands(launch("tpu_delete.sh", {**TPU, "PROVISIONING": "queued-spot", "YES": "1"}, "-n"))
    assert queued == ["gcloud", "compute", "tpus", "queued-resources", "delete", "vdt-pod-qr",
                      "--zone=us-central2-b", "--force", "--quiet"]  # fmt: skip


def test_slurm_runs_one_process_per_gpu_through_srun(stubs, tmp_path):
    env = {"WORKDIR": "/shared/runs/r3d18", "TFDS_DATA_DIR": "/scratch/tfds", "SLURM_SUBMIT_DIR": REPO}
    result = launch("slurm_gpu.sh", env, "--", "--config.batch_size=2048", stubs=stubs, cwd=tmp_path)
    expected = [
        "srun", "--kill-on-bad-exit=1", "python", "-m", "vdt_jax.pretrain", "--config=configs/imagenet_r3d18_bf16.py",
        "--workdir=/shared/runs/r3d18", "--config.data.num_workers=4", "--config.batch_size=2048",
    ]  # fmt: skip
    assert commands(result) == [["env", "TFDS_DATA_DIR=/scratch/tfds", *expected]]
    assert recorded(stubs) == [expected]  # env ran the (stub) srun with TFDS_DATA_DIR set
    header = open(os.path.join(REPO, "launch", "slurm_gpu.sh")).read()
    for directive in ("--ntasks-per-node=8", "--gpus-per-node=8", "--signal=TERM@120", "--requeue"):
        assert f"#SBATCH {directive}" in header
    lost = launch("slurm_gpu.sh", {"WORKDIR": "/x", "SLURM_SUBMIT_DIR": str(tmp_path)}, "-n", cwd=tmp_path)
    assert lost.returncode == 2 and "VDT_REPO" in lost.stderr


def test_gpu_benchmark_runs_the_checkout_without_installing(tmp_path):
    result = launch("gpu_benchmark.sh", {"OUT": str(tmp_path), "BATCH": "64"}, "--dry-run", "--", "--rounds=3")
    mkdir, bf16, fp32 = commands(result)
    assert mkdir == ["mkdir", "-p", str(tmp_path)]
    assert bf16[0] == "timeout" and bf16[2:5] == ["python", "-m", "vdt_jax.benchmark"]
    assert {"--dtype=bfloat16", "--batch=64", "--image_size=224", f"--json_file={tmp_path}/r3d18_224_bf16.json"} <= set(bf16)
    assert bf16[-1] == "--rounds=3" and fp32[-1] == "--rounds=3"  # extra arguments reach every run
    assert {"--dtype=float32", "--batch=32", "--nopipeline"} <= set(fp32)
    assert int(bf16[1]) <= 540 and not list(tmp_path.iterdir())  # within the time limit; a dry run writes nothing
