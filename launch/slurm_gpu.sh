#!/usr/bin/env bash
# Multi-node GPU pre-training under SLURM: one process per GPU, all started by srun.
#
#   WORKDIR=/shared/runs/r3d18 TFDS_DATA_DIR=/shared/tensorflow_datasets sbatch launch/slurm_gpu.sh
#   sbatch --nodes=4 launch/slurm_gpu.sh -- --config.batch_size=2048    # override resources and config
#   bash launch/slurm_gpu.sh --dry-run      # print the srun command, run nothing
#
# Each task runs `python -m vdt_jax.pretrain`; JAX reads the coordinator
# (first node), process count and id from SLURM's variables, and each process
# drives the one GPU numbered by its SLURM_LOCALID (all GPUs of a node are
# visible to every task). Install first, on a filesystem the nodes share:
# `pip install -e . "jax[cuda12]>=0.10.2,<0.11"`.
#
# At the time limit (and on preemption) SLURM sends SIGTERM: --signal below
# gives two minutes, every process saves the same agreed step and exits with
# status 0. Submit the same command again (or chain it with
# `sbatch --dependency=afterany:<job id>`) to resume from that checkpoint;
# with --requeue, a preempted job restarts by itself.
#
# Variables (export them, or put them in front of sbatch):
#   WORKDIR        run directory on a filesystem every node sees, or a gs:// URL (required)
#   TFDS_DATA_DIR  TFDS data_dir with the prepared dataset; best a node-local
#                  copy (random reads), else the shared filesystem
#   CONFIG         default configs/imagenet_r3d18_bf16.py
#   DATA_WORKERS   grain worker processes per GPU process (default 4)
#   VENV           virtualenv to activate (optional)
#   VDT_REPO       the vdt-jax checkout (default: the directory sbatch was run from)
# Arguments after -- go to vdt_jax.pretrain.
#
#SBATCH --job-name=vdt-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=vdt-pretrain-%j.log
set -euo pipefail
# sbatch runs a spooled copy of this script: find the repository through
# VDT_REPO, else the directory sbatch was called from, else this file's place.
repo="${VDT_REPO:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}"
[[ -f "$repo/launch/common.sh" ]] || { echo "error: no vdt-jax checkout at $repo: set VDT_REPO" >&2; exit 2; }
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$repo/launch/common.sh"
cd "$REPO_ROOT"
parse_common_args "$@"
require WORKDIR
[[ "$WORKDIR" != *://* || "$WORKDIR" == gs://* ]] || die "WORKDIR must be a shared filesystem path or a gs:// URL, not $WORKDIR"
if [[ -n "${VENV:-}" ]]; then
  # shellcheck disable=SC1091  # the user's virtualenv
  source "$VENV/bin/activate"
fi

args=("--config=${CONFIG:-configs/imagenet_r3d18_bf16.py}" "--workdir=$WORKDIR"
      "--config.data.num_workers=${DATA_WORKERS:-4}" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
# TFDS reads its data_dir from the environment when the config leaves data.data_dir unset.
data_env=()
if [[ -n "${TFDS_DATA_DIR:-}" ]]; then
  data_env=(env "TFDS_DATA_DIR=$TFDS_DATA_DIR")
fi
# --kill-on-bad-exit: if one process fails, stop the others instead of leaving them waiting.
run ${data_env[@]+"${data_env[@]}"} srun --kill-on-bad-exit=1 python -m vdt_jax.pretrain "${args[@]}"
