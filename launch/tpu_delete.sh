#!/usr/bin/env bash
# Delete a TPU pod slice (and its queued resource), which stops billing for it.
#
#   TPU_NAME=vdt-pod ZONE=us-central2-b launch/tpu_delete.sh
#   launch/tpu_delete.sh --dry-run      # print the command, run nothing
#
# The workdir on Cloud Storage (checkpoints, metrics) is kept. A preempted
# spot slice must be deleted too before a new one of the same name is created.
#
# Variables:
#   TPU_NAME, ZONE    the slice (required)
#   PROVISIONING      as given to launch/tpu_create.sh; queued or queued-spot
#                     delete the queued resource QUEUED_RESOURCE (default
#                     $TPU_NAME-qr) together with its slice
#   YES               1: do not ask for confirmation
#   PROJECT           Google Cloud project (default: gcloud's configured one)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
parse_common_args "$@"
require TPU_NAME ZONE
location_flags
confirm=()
if [[ "${YES:-0}" == 1 ]]; then
  confirm=(--quiet)
fi
case "${PROVISIONING:-on-demand}" in
  queued | queued-spot)
    run gcloud compute tpus queued-resources delete "${QUEUED_RESOURCE:-$TPU_NAME-qr}" "${LOCATION[@]}" --force ${confirm[@]+"${confirm[@]}"} ;;
  *)
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${LOCATION[@]}" ${confirm[@]+"${confirm[@]}"} ;;
esac
