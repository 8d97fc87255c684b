#!/usr/bin/env bash
# Start pre-training on every worker of a TPU pod slice at once (gcloud ... ssh --worker=all).
#
#   TPU_NAME=vdt-pod ZONE=us-central2-b WORKDIR=gs://my-vdt-runs/r3d18 \
#     TFDS_DATA_DIR=/mnt/disks/data/tensorflow_datasets launch/tpu_train.sh
#   launch/tpu_train.sh --dry-run      # print the command, run nothing
#
# Every worker runs the same `python -m vdt_jax.pretrain` command in the
# background (output in ~/vdt-logs/RUN_NAME.log on each worker; follow it with
# launch/tpu_logs.sh). The processes find each other through JAX's TPU cluster
# detection (--distributed=on); each reads its own shard of the data; process 0
# logs and writes metrics. Running this again with the same WORKDIR resumes
# from the newest checkpoint, also after a preemption (SIGTERM: every process
# saves the same agreed step and exits with status 0).
#
# Variables:
#   TPU_NAME, ZONE    the slice (required)
#   WORKDIR           run folder every worker sees (required): a gs://BUCKET/...
#                     URL (Orbax writes checkpoints there directly), or a path
#                     such as the gcsfuse mount /gcs/BUCKET/... of tpu_install.sh
#   CONFIG            default configs/imagenet_r3d18_bf16.py (bfloat16, global
#                     batch 1024; relative to the repo)
#   TFDS_DATA_DIR     where the TFDS dataset is on each worker (default:
#                     ~/tensorflow_datasets); set in the training's environment
#   RUN_NAME          log file name (default: the last part of WORKDIR)
#   PROJECT           Google Cloud project (default: gcloud's configured one)
# Arguments after -- go to vdt_jax.pretrain (e.g. --config.num_epochs=90).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
parse_common_args "$@"
require TPU_NAME ZONE WORKDIR
[[ "$WORKDIR" != *://* || "$WORKDIR" == gs://* ]] || die "WORKDIR must be a gs:// URL or a path on every worker, not $WORKDIR"
CONFIG="${CONFIG:-configs/imagenet_r3d18_bf16.py}"
RUN_NAME="${RUN_NAME:-$(basename "$WORKDIR")}"

args=(--distributed=on "--config=$CONFIG" "--workdir=$WORKDIR" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
# TFDS reads its data_dir from the environment when the config leaves data.data_dir unset.
data_env=""
if [[ -n "${TFDS_DATA_DIR:-}" ]]; then
  data_env="TFDS_DATA_DIR=$(quote "$TFDS_DATA_DIR") "
fi

log="\$HOME/vdt-logs/$RUN_NAME.log"
remote="set -e; cd \$HOME/vdt-jax; mkdir -p \$HOME/vdt-logs"
# The TPU chips take one process per host: refuse to start a second one. (The
# pattern wants python as the program, so it does not match this very shell.)
remote+="; if pgrep -f '^[^ ]*python[0-9.]* -m vdt_jax[.]pretrain' >/dev/null; then echo \"\$(hostname): vdt_jax.pretrain is already running\" >&2; exit 1; fi"
remote+="; ${data_env}nohup \$HOME/vdt-venv/bin/python -m vdt_jax.pretrain $(quote "${args[@]}") > $log 2>&1 < /dev/null &"
remote+=" echo \"\$(hostname): started, log in $log\""
tpu_ssh all "$remote"
if [[ "$DRY_RUN" == 1 ]]; then
  echo "Dry run: nothing was started. Without --dry-run, follow process 0's output with: TPU_NAME=$TPU_NAME ZONE=$ZONE RUN_NAME=$RUN_NAME launch/tpu_logs.sh"
else
  echo "Started. Follow process 0's output with: TPU_NAME=$TPU_NAME ZONE=$ZONE RUN_NAME=$RUN_NAME launch/tpu_logs.sh"
fi
