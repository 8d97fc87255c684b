#!/usr/bin/env bash
# Create a Cloud TPU VM pod slice (several hosts, each feeding its own chips).
#
#   TPU_NAME=vdt-pod ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 launch/tpu_create.sh
#   launch/tpu_create.sh --dry-run      # print the gcloud command, run nothing
#
# Variables:
#   TPU_NAME          name of the slice (required)
#   ZONE              zone with the TPU type, e.g. us-central2-b for v4 (required)
#   ACCELERATOR_TYPE  default v4-32 (16 chips on 4 hosts); e.g. v5p-64, v6e-32
#   RUNTIME_VERSION   TPU VM image; default tpu-ubuntu2204-base (v4). Others:
#                     v2-alpha-tpuv5 (v5p), v2-alpha-tpuv5-lite (v5e),
#                     v2-alpha-tpuv6e (v6e)
#   PROVISIONING      on-demand (default) | spot | preemptible | queued | queued-spot
#                     spot/preemptible cost less and can be taken away at any
#                     time: vdt-jax then saves a checkpoint and stops; create a
#                     new slice and rerun the same training command to resume.
#                     queued*: a queued resource that waits for capacity.
#   QUEUED_RESOURCE   name of the queued resource (default: $TPU_NAME-qr)
#   VALID_UNTIL       queued only: stop waiting after this long, e.g. 6h
#   DATA_DISK         optional persistent disk for the dataset, attached to
#                     every host, e.g. source=projects/P/zones/Z/disks/imagenet,mode=read-only
#   PROJECT           Google Cloud project (default: gcloud's configured one)
#
# Next: launch/tpu_install.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
parse_common_args "$@"

require TPU_NAME ZONE
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROVISIONING="${PROVISIONING:-on-demand}"
location_flags

disk=()
if [[ -n "${DATA_DISK:-}" ]]; then
  disk=("--data-disk=$DATA_DISK")
fi

case "$PROVISIONING" in
  on-demand | spot | preemptible)
    model=()
    [[ "$PROVISIONING" == on-demand ]] || model=("--$PROVISIONING")
    run gcloud compute tpus tpu-vm create "$TPU_NAME" "${LOCATION[@]}" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" ${model[@]+"${model[@]}"} ${disk[@]+"${disk[@]}"}
    ;;
  queued | queued-spot)
    model=()
    [[ "$PROVISIONING" == queued ]] || model=(--spot)
    [[ -z "${VALID_UNTIL:-}" ]] || model+=("--valid-until-duration=$VALID_UNTIL")
    run gcloud compute tpus queued-resources create "${QUEUED_RESOURCE:-$TPU_NAME-qr}" "${LOCATION[@]}" \
      --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" \
      ${model[@]+"${model[@]}"} ${disk[@]+"${disk[@]}"}
    echo "Queued. Wait for state ACTIVE:"
    echo "  $(quote gcloud compute tpus queued-resources describe "${QUEUED_RESOURCE:-$TPU_NAME-qr}" "${LOCATION[@]}")"
    ;;
  *) die "PROVISIONING must be on-demand, spot, preemptible, queued or queued-spot, not '$PROVISIONING'" ;;
esac
