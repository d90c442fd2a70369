#!/usr/bin/env bash
# `make demo`: the whole path once, on CPU, on the embedded corpus. Each stage is the same
# command a user runs on their own data; its summary goes to the terminal, its full log to
# $DEMO/logs/.
set -euo pipefail
DEMO=${1:-runs/demo}
PY=${PY:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
mkdir -p "$DEMO/logs"
start=$SECONDS

stage() {  # stage NAME COMMAND...: run a stage, its stdout shown, its stderr logged
  local name=$1; shift
  echo
  echo "=== $name"
  echo "\$ $*"
  local t0=$SECONDS
  if ! "$@" 2>"$DEMO/logs/$name.log"; then
    echo "stage $name failed; last lines of $DEMO/logs/$name.log:" >&2
    tail -n 30 "$DEMO/logs/$name.log" >&2
    exit 1
  fi
  echo "--- $name took $((SECONDS - t0))s"
}

stage corpus    "$PY" -m data_pipeline.demo_corpus --output "$DEMO/corpus"
stage prepare   "$PY" -m data_pipeline.prepare --config=configs/data/demo.py \
                  --input "web=$DEMO/corpus/web.jsonl" --input "math=$DEMO/corpus/math.jsonl" \
                  --input "code=$DEMO/corpus/code.jsonl" --output_dir "$DEMO/prep" --overwrite
stage tokenizer "$PY" -m tokenizer.train --config=configs/tokenizer/demo.py \
                  --input "$DEMO/prep" --output "$DEMO/tokenizer"
stage pack      "$PY" -m mixtures.pack --config=configs/mixtures/demo_two_stage.py \
                  --prep_dir="$DEMO/prep" --vocab_path="$DEMO/tokenizer/tokenizer.model" --output="$DEMO/packed"
stage mixture   "$PY" -m mixtures.report --config=configs/mixtures/demo_two_stage.py --packed_dir="$DEMO/packed" \
                  --steps 450 --batch_size 8 --plot "$DEMO/mixture.png" --json "$DEMO/mixture.json"
stage train     "$PY" -m pretrain.train --config=configs/train/demo_tiny_cpu.py \
                  --config.workdir="$DEMO/train" --config.data.packed_dir="$DEMO/packed" \
                  --config.data.tokenizer="$DEMO/tokenizer/tokenizer.model"
stage anneal    "$PY" -m pretrain.anneal --config=configs/anneal/demo.py --output_dir="$DEMO/anneal" \
                  --from_workdir="$DEMO/train" --config.from_step=300 --config.prep_dir="$DEMO/prep" \
                  --config.train.data.packed_dir="$DEMO/packed" --config.train.data.tokenizer="$DEMO/tokenizer/tokenizer.model"

echo
echo "=== demo finished in $((SECONDS - start))s. Outputs:"
echo "  corpus      $DEMO/corpus/{web,math,code}.jsonl"
echo "  prepared    $DEMO/prep/{web,math,code} (TFDS), $DEMO/prep/stats.json"
echo "  tokenizer   $DEMO/tokenizer/tokenizer.model"
echo "  packed      $DEMO/packed (ArrayRecord rows, manifest.json)"
echo "  mixture     $DEMO/mixture.png, $DEMO/mixture.json"
echo "  training    $DEMO/train (checkpoints/, metrics.jsonl, tensorboard/)"
echo "  anneal arms $DEMO/anneal/report.{md,json,png}"
echo "  logs        $DEMO/logs/"
