#!/usr/bin/env bash
# Copy a prepared TFDS dataset (ArrayRecord files) from Cloud Storage to local disk on every worker.
#
#   TPU_NAME=vdt-pod ZONE=us-central2-b GCS_DATA_DIR=gs://my-data/tensorflow_datasets \
#     DATASET=imagenet2012 LOCAL_DATA_DIR=/mnt/disks/data/tensorflow_datasets launch/tpu_copy_data.sh
#   launch/tpu_copy_data.sh --dry-run      # print the commands, run nothing
#
# grain reads records at random positions, so the files must be on local disk
# (or a disk attached to every host) for full speed; see the README section
# "Running on a TPU pod" for the size of ImageNet (about 150 GB) against the
# 100 GB boot disk, the read-only data disk and the gcsfuse alternatives.
#
# Variables:
#   TPU_NAME, ZONE    the slice (required)
#   GCS_DATA_DIR      TFDS data_dir on Cloud Storage, holding DATASET/ (required)
#   DATASET           folder to copy, e.g. imagenet2012 or vdt_shapes (required)
#   LOCAL_DATA_DIR    destination data_dir on each worker (default $HOME/tensorflow_datasets);
#                     pass it to training as TFDS_DATA_DIR
#   PROJECT           Google Cloud project (default: gcloud's configured one)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
parse_common_args "$@"
require TPU_NAME ZONE GCS_DATA_DIR DATASET
destination="${LOCAL_DATA_DIR:-\$HOME/tensorflow_datasets}/$DATASET"
source_url="${GCS_DATA_DIR%/}/$DATASET"
# rsync: a rerun after an interruption copies only what is missing.
tpu_ssh all "mkdir -p $destination && gcloud storage rsync --recursive $(quote "$source_url") $destination && du -sh $destination"
