#!/usr/bin/env bash
# Install vdt-jax on every worker of a TPU pod slice and mount the run bucket.
#
#   TPU_NAME=vdt-pod ZONE=us-central2-b BUCKET=my-vdt-runs launch/tpu_install.sh
#   launch/tpu_install.sh --dry-run      # print the commands, run nothing
#
# On each worker: a virtualenv ~/vdt-venv with vdt-jax and its gcs extra
# (editable, from ~/vdt-jax; gcsfs and google-cloud-storage, so a
# --workdir=gs://BUCKET/... is written directly: Orbax checkpoints through
# TensorStore, metrics, config and TensorBoard events through gcsfs) and
# jax[tpu]; the bucket BUCKET also mounted read-write with gcsfuse at
# /gcs/$BUCKET, for looking at a run's files (or as a path workdir, see README).
#
# Variables:
#   TPU_NAME, ZONE    the slice (required)
#   BUCKET            Cloud Storage bucket for workdirs, without gs:// (required)
#   REPO_URL          git URL to clone on the workers; default: this checkout's
#                     last commit (`git archive HEAD`: commit your changes first),
#                     copied to every worker
#   REPO_REF          branch or tag of REPO_URL (default main)
#   DATA_DISK_DEVICE  set (e.g. /dev/sdb) to mount the read-only dataset disk
#                     attached with DATA_DISK at creation on /mnt/disks/data
#   PROJECT           Google Cloud project (default: gcloud's configured one)
#
# Next: launch/tpu_copy_data.sh (if the dataset is not on a disk yet), then
# launch/tpu_train.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
parse_common_args "$@"
require TPU_NAME ZONE BUCKET
location_flags

code="\$HOME/vdt-jax"  # expanded on the workers
if [[ -n "${REPO_URL:-}" ]]; then
  fetch="rm -rf $code && git clone --depth 1 --branch $(quote "${REPO_REF:-main}") $(quote "$REPO_URL") $code"
else
  archive="${TMPDIR:-/tmp}/vdt-jax-$TPU_NAME.tar.gz"
  run git -C "$REPO_ROOT" archive --format=tar.gz --output="$archive" HEAD
  run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:vdt-jax.tar.gz" "${LOCATION[@]}" --worker=all
  fetch="rm -rf $code && mkdir -p $code && tar -xzf \$HOME/vdt-jax.tar.gz -C $code"
fi

mount_point="/gcs/$BUCKET"
steps=(
  "set -euo pipefail"
  "$fetch"
  "sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv"
  "python3 -m venv \$HOME/vdt-venv && \$HOME/vdt-venv/bin/pip install -q -U pip"
  "\$HOME/vdt-venv/bin/pip install -q -e \"${code}[gcs]\" 'jax[tpu]>=0.10.2,<0.11'"
  # gcsfuse from Google's apt repository (https://cloud.google.com/storage/docs/cloud-storage-fuse/install)
  "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null"
  "echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null"
  "sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcsfuse"
  "sudo mkdir -p $mount_point && sudo chown \$USER $mount_point"
  # --rename-dir-limit: Orbax renames a finished checkpoint's temporary folder.
  "mountpoint -q $mount_point || gcsfuse --implicit-dirs --rename-dir-limit=100000 $(quote "$BUCKET") $mount_point"
)
if [[ -n "${DATA_DISK_DEVICE:-}" ]]; then
  steps+=("sudo mkdir -p /mnt/disks/data && (mountpoint -q /mnt/disks/data || sudo mount -o ro,noload $(quote "$DATA_DISK_DEVICE") /mnt/disks/data)")
fi
steps+=("\$HOME/vdt-venv/bin/python -c 'import jax, vdt_jax; print(\"vdt-jax ready, jax\", jax.__version__)'")

remote=""
for step in "${steps[@]}"; do
  remote+="$step; "
done
tpu_ssh all "$remote"
