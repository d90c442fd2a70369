#!/usr/bin/env bash
# Tokenizer figures for bench/RESULTS.md: train the demo tokenizer at a few vocabulary
# sizes on the demo corpus, then report tokens/byte per domain and one-core encode MB/s on
# held-out real text from ../shared/data (text the tokenizer never saw).
#   bash bench/tokenizer_bench.sh [OUT_DIR]        (default runs/bench/tokenizer)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench/tokenizer}
SHARED=../shared/data
PY=${PYTHON:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2

if [[ ! -d $SHARED ]]; then echo "skip: $SHARED is absent (it holds the held-out text)"; exit 0; fi
if [[ -d runs/demo/prep ]]; then TRAIN=(--input runs/demo/prep); else
  [[ -d runs/demo/corpus ]] || $PY -m data_pipeline.demo_corpus --output runs/demo/corpus
  TRAIN=(--input runs/demo/corpus/web.jsonl --input runs/demo/corpus/math.jsonl --input runs/demo/corpus/code.jsonl)
fi
HELD_OUT=(
  --input "web=$SHARED/web/trafilatura/trafilatura_tests_extracted.jsonl"
  --input "web=$SHARED/web/dolma-cc/*.jsonl.gz"
  --input "math=$SHARED/math/hott-book/*.tex"
  --input "code=$SHARED/code/code_sample.jsonl"
)
for V in ${VOCAB_SIZES:-4096 8192 16384}; do
  echo "== vocab $V"
  /usr/bin/time -f "train wall %es, max RSS %MkB" $PY -m tokenizer.train --config=configs/tokenizer/demo.py \
    "${TRAIN[@]}" --config.sample.max_sentences=20000 --vocab_size "$V" --output "$OUT/v$V" --overwrite 2>&1 | grep -E "^(tokenizer|sample|train wall)"
  $PY -m tokenizer.report --tokenizer "$OUT/v$V/tokenizer.model" "${HELD_OUT[@]}" --json "$OUT/v$V/report.json" 2>&1 \
    | grep -vE "^(I0000|W0000|E0000|WARNING: All)"
done
