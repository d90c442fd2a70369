#!/usr/bin/env bash
# `make demo`: the whole path once, on CPU, on the embedded corpus. Each stage is the same
# command a user runs on their own data; its summary goes to the terminal, its full log to
# $DEMO/logs/.
#
# Environment knobs (CI runs the same script, smaller): DEMO_STEPS (training steps, default
# the config's 450), DEMO_DOCS (corpus documents per domain, default 600), DEMO_ANNEAL_FROM
# (the training checkpoint the anneal arms branch from, default 300), DEMO_ANNEAL_STEPS
# (steps per arm, and its evaluation interval; default the config's), DEMO_FAMILY (the tiny
# model's family: gemma, gemma2 or gemma3; default gemma), PY (interpreter).
set -euo pipefail
DEMO=${1:-runs/demo}
PY=${PY:-.venv/bin/python}
STEPS=${DEMO_STEPS:+--config.train.total_steps=$DEMO_STEPS}
DOCS=${DEMO_DOCS:+--docs_per_domain=$DEMO_DOCS}
FAMILY=${DEMO_FAMILY:+:$DEMO_FAMILY}
ANNEAL_STEPS=${DEMO_ANNEAL_STEPS:+--config.anneal_steps=$DEMO_ANNEAL_STEPS --config.eval_every=$DEMO_ANNEAL_STEPS}
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

stage corpus    "$PY" -m data_pipeline.demo_corpus --output "$DEMO/corpus" $DOCS
stage prepare   "$PY" -m data_pipeline.prepare --config=configs/data/demo.py \
                  --input "web=$DEMO/corpus/web.jsonl" --input "math=$DEMO/corpus/math.jsonl" \
                  --input "code=$DEMO/corpus/code.jsonl" --output_dir "$DEMO/prep" --overwrite
stage tokenizer "$PY" -m tokenizer.train --config=configs/tokenizer/demo.py \
                  --input "$DEMO/prep" --output "$DEMO/tokenizer" --overwrite
stage pack      "$PY" -m mixtures.pack --config=configs/mixtures/demo_two_stage.py \
                  --prep_dir="$DEMO/prep" --vocab_path="$DEMO/tokenizer/tokenizer.model" --output="$DEMO/packed" --overwrite
stage mixture   "$PY" -m mixtures.report --config=configs/mixtures/demo_two_stage.py --packed_dir="$DEMO/packed" \
                  --steps "${DEMO_STEPS:-450}" --batch_size 8 --plot "$DEMO/mixture.png" --json "$DEMO/mixture.json"
stage train     "$PY" -m pretrain.train --config=configs/train/demo_tiny_cpu.py$FAMILY \
                  --config.workdir="$DEMO/train" --config.data.packed_dir="$DEMO/packed" \
                  --config.data.tokenizer="$DEMO/tokenizer/tokenizer.model" $STEPS
stage anneal    "$PY" -m studies.anneal --config=configs/anneal/demo.py$FAMILY --output_dir="$DEMO/anneal" \
                  --from_workdir="$DEMO/train" --config.from_step="${DEMO_ANNEAL_FROM:-300}" $ANNEAL_STEPS \
                  --config.prep_dir="$DEMO/prep" --config.train.data.packed_dir="$DEMO/packed" \
                  --config.train.data.tokenizer="$DEMO/tokenizer/tokenizer.model"
# Perplexity of the final checkpoint on one domain's documents (seen in training: the demo
# has no separate held-out file; the held-out loss per domain is in metrics.jsonl).
stage evaluate  "$PY" -m pretrain.tools.evaluate --workdir "$DEMO/train" --input "$DEMO/corpus/math.jsonl"
stage export    "$PY" -m pretrain.convert.export --workdir "$DEMO/train" --format hf --output "$DEMO/hf" --overwrite

echo
echo "=== demo finished in $((SECONDS - start))s. Outputs:"
echo "  corpus      $DEMO/corpus/{web,math,code}.jsonl"
echo "  prepared    $DEMO/prep/{web,math,code} (TFDS), $DEMO/prep/stats.json"
echo "  tokenizer   $DEMO/tokenizer/tokenizer.model"
echo "  packed      $DEMO/packed (ArrayRecord rows, manifest.json)"
echo "  mixture     $DEMO/mixture.png, $DEMO/mixture.json"
echo "  training    $DEMO/train (checkpoints/, metrics.jsonl, tensorboard/)"
echo "  anneal arms $DEMO/anneal/report.{md,json,png}"
echo "  export      $DEMO/hf (transformers.AutoModelForCausalLM.from_pretrained(\"$DEMO/hf\"), with torch installed)"
echo "  logs        $DEMO/logs/"
