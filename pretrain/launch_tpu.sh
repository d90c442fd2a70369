#!/usr/bin/env bash
# Launch pretraining on a Cloud TPU VM pod slice with the gcloud CLI.
#
#   TPU_NAME=gemma-2b ZONE=us-west4-a PROJECT=my-project BUCKET=gs://my-bucket \
#     pretrain/launch_tpu.sh configs/train/tpu_v5e_2b.py [--config.field=value ...]
#
# Creates the slice if it does not exist (ACCELERATOR, default v5litepod-256), copies this
# checkout to every worker, installs the pinned environment, and starts the same
# `python -m pretrain.train` on all hosts; jax.distributed.initialize (enabled by the TPU
# configs) finds the other hosts by itself. The workdir lives in the bucket, so
# re-running this script after a preemption resumes from the latest checkpoint.
set -euo pipefail

CONFIG=${1:?usage: launch_tpu.sh CONFIG.py [--config.field=value ...]}
shift
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${PROJECT:?set PROJECT}" "${BUCKET:?set BUCKET}"
ACCELERATOR=${ACCELERATOR:-v5litepod-256}
RUNTIME=${RUNTIME:-v2-alpha-tpuv5-lite}
RUN_NAME=${RUN_NAME:-$(basename "$CONFIG" .py)}
WORKDIR=${WORKDIR:-$BUCKET/runs/$RUN_NAME}
REMOTE_DIR=gemma-pretrain
GCLOUD=(gcloud compute tpus tpu-vm --project="$PROJECT" --zone="$ZONE")

if ! "${GCLOUD[@]}" describe "$TPU_NAME" >/dev/null 2>&1; then
  echo "creating $TPU_NAME ($ACCELERATOR, $RUNTIME) in $ZONE"
  "${GCLOUD[@]}" create "$TPU_NAME" --accelerator-type="$ACCELERATOR" --version="$RUNTIME"
fi

echo "copying $(pwd) to all workers"
tar --exclude=.venv --exclude=runs --exclude=.git -czf /tmp/gemma-pretrain.tgz .
"${GCLOUD[@]}" scp /tmp/gemma-pretrain.tgz "$TPU_NAME":/tmp/ --worker=all
"${GCLOUD[@]}" ssh "$TPU_NAME" --worker=all --command="
  set -e
  rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf /tmp/gemma-pretrain.tgz -C $REMOTE_DIR
  cd $REMOTE_DIR
  python3.11 -m venv .venv
  .venv/bin/pip install -q -c constraints.txt -e . 'jax[tpu]' \
    -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
"

# Replace the config's placeholder bucket with ours and start every host at once; the
# log of host 0 streams here, the others write to ~/train.log on their VM.
echo "training $CONFIG into $WORKDIR"
ARGS="--config=$CONFIG --config.workdir=$WORKDIR \
  --config.data.prep_dir=$BUCKET/prep --config.data.tokenizer=$BUCKET/tokenizer/tokenizer.model \
  --config.train.compilation_cache_dir=$BUCKET/xla_cache $*"
"${GCLOUD[@]}" ssh "$TPU_NAME" --worker=all --command="
  cd $REMOTE_DIR && TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python -m pretrain.train $ARGS 2>&1 | tee ~/train.log
"
