#!/usr/bin/env bash
# Follow the training output of one worker of a TPU pod slice (Ctrl-C stops following, not training).
#
#   TPU_NAME=vdt-pod ZONE=us-central2-b RUN_NAME=r3d18 launch/tpu_logs.sh
#   launch/tpu_logs.sh --dry-run      # print the command, run nothing
#
# Process 0 (worker 0) prints the progress and evaluation lines; the other
# workers' logs only hold warnings and errors, worth reading when a run fails.
# Metrics are also in WORKDIR/metrics.jsonl and WORKDIR/tensorboard.
#
# Variables:
#   TPU_NAME, ZONE    the slice (required)
#   RUN_NAME          as given to launch/tpu_train.sh (required)
#   WORKER            which worker's log (default 0)
#   LINES             lines of history to show first (default 100)
#   PROJECT           Google Cloud project (default: gcloud's configured one)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
parse_common_args "$@"
require TPU_NAME ZONE RUN_NAME
tpu_ssh "${WORKER:-0}" "tail -n ${LINES:-100} -F \$HOME/vdt-logs/$RUN_NAME.log"
