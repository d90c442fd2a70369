"""Items/s of the evals engine against lm-evaluation-harness's HF backend, same model, same requests.

  python bench/downstream_speed.py [--items 200] [--rounds 3] [--lm_eval_batch 64] [--batch_rows 2] [--row_len 0]
      [--eval_set arc_easy=../shared/data/eval/arc/ARC-e/ARC-Easy-Test.jsonl] [--workdir W]

The model is the CPU demo's (configs/train/demo_tiny_cpu.py: tiny Gemma, vocab 4096), either
a run's checkpoint (--workdir) or freshly initialised (speed does not depend on the
weights), with a tokenizer trained here with the demo's settings on wikitext-2 text
(../shared/data, or $SHARED_DATA). It is exported to Hugging Face format (float32) and both sides score the
first --items ARC-Easy items, zero-shot: lm-eval's own arc_easy prompt through
`HFLM.loglikelihood`, the engine through `evals.harness.score` (packed rows of --row_len tokens,
default the model's max_seq_len, --batch_rows per batch). Both timings include tokenization and exclude
loading (the engine's one compile is timed apart, in a warm-up round). The two sides
alternate for --rounds rounds so that other load on the machine falls on both; the
speed-up is the ratio of the medians, with each side's min-max spread. The requests are
checked to be the same strings, and the per-item loglikelihoods to agree (max |delta|).
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import sentencepiece as spm
from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs.tokenizer import demo as demo_tokenizer  # noqa: E402
from configs.train import demo_tiny_cpu  # noqa: E402
from data_pipeline.decontamination import eval_sets  # noqa: E402
from evals import harness, lm_eval_hf  # noqa: E402
from evals import tasks as tasks_lib  # noqa: E402
from evals.engine import Engine  # noqa: E402
from evals.requests import doc_requests  # noqa: E402
from pretrain import checkpoint  # noqa: E402
from pretrain.convert import export  # noqa: E402
from pretrain.model.transformer import Transformer, TransformerConfig  # noqa: E402
from tokenizer.special_ids import bos_prefix  # noqa: E402
from tokenizer.train import GEMMA_SPM_FLAGS  # noqa: E402
from tokenizer.vocab import load_vocabulary  # noqa: E402

SHARED = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
flags.DEFINE_integer("items", 200, "ARC-Easy items scored per round (4 requests each)")
flags.DEFINE_integer("rounds", 3, "alternating rounds per side")
flags.DEFINE_integer("lm_eval_batch", 64, "lm-eval's batch size (requests padded to the longest)")
flags.DEFINE_integer(
    "batch_rows", 2, "engine rows per batch (on CPU small batches are fastest: bench/RESULTS.md)"
)
flags.DEFINE_integer("row_len", 0, "engine row length; 0: the model's max_seq_len (lm-eval's max_length)")
flags.DEFINE_string("eval_set", f"arc_easy={SHARED / 'eval/arc/ARC-e/ARC-Easy-Test.jsonl'}", "NAME=PATH")
flags.DEFINE_string("workdir", "", "a pretrain.train run to load (default: the demo model, initialised)")
flags.DEFINE_string("out", "", "also write the figures to this JSON file")
FLAGS = flags.FLAGS


def demo_tokenizer_model(directory: Path) -> Path:
    """A BPE model with the demo tokenizer's vocabulary size and the project's settings."""
    text = (SHARED / "web/wikitext-2/valid.txt").read_text(encoding="utf-8")
    corpus = directory / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "tokenizer"),
        vocab_size=demo_tokenizer.get_config().spm.vocab_size,
        character_coverage=0.9995,
        minloglevel=2,
        **GEMMA_SPM_FLAGS,
    )
    return directory / "tokenizer.model"


def model_and_params(tmp: Path) -> tuple[TransformerConfig, dict, str, str]:
    """(model config, params, tokenizer path, bos policy)."""
    if FLAGS.workdir:
        params, config = checkpoint.restore_params(FLAGS.workdir)
        model_config = TransformerConfig.from_config_dict(config.model)
        return model_config, params, config.data.tokenizer, config.mixture.get("bos", "document")
    config = demo_tiny_cpu.get_config()
    model_config = TransformerConfig.from_config_dict(config.model)
    tokens = np.zeros((1, 8), np.int32)
    params = Transformer(model_config).init(jax.random.key(0), tokens, tokens, tokens + 1)["params"]
    return (
        model_config,
        jax.tree_util.tree_map(lambda x: getattr(x, "value", x), params),
        str(demo_tokenizer_model(tmp)),
        config.mixture.bos,
    )


def main(argv: list[str]) -> None:
    del argv
    os.environ.update(lm_eval_hf.OFFLINE)
    # Optional (the `test` extra): the reference side.
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    name, path = next(iter(eval_sets.parse_specs([FLAGS.eval_set]).items()))
    tmp = Path(tempfile.mkdtemp(prefix="downstream_speed-"))
    model_config, params, tokenizer, bos = model_and_params(tmp)
    vocab = load_vocabulary(tokenizer)
    hf_dir = tmp / "hf"
    export.export_hf(
        jax.tree_util.tree_map(np.asarray, params), model_config, tokenizer, hf_dir, dtype="float32", bos=bos
    )

    task = tasks_lib.resolve([name])[0]
    data = harness.load_tasks([task], eval_set_paths={name: path}, limit=FLAGS.items)
    docs = data[0].docs
    ours_requests = doc_requests(task, docs, [], 0, 0, vocab.encode, bos_prefix(bos))
    source = itertools.islice(eval_sets.named_rows(name, path), len(docs))
    rows = [
        lm_eval_hf.harness_row(name, item.question, item.choices, item.gold)
        for item in (task.reader(row, file) for file, row in source)
    ]
    items = lm_eval_hf.write_items(tmp / f"{name}.jsonl", rows)
    lm_task = get_task_dict(
        [lm_eval_hf.task_config(name, items, str(tmp / "datasets"))], TaskManager(include_defaults=False)
    )[f"local_{name}"]
    lm_task.build_all_requests(limit=FLAGS.items)
    instances = sorted(lm_task.instances, key=lambda i: (i.doc_id, i.idx))
    theirs_pairs = [tuple(i.args) for i in instances]
    ours_pairs = [(dr.context, c) for dr in ours_requests for c in dr.continuations]
    assert theirs_pairs == ours_pairs, "lm-eval and the engine would score different strings"

    model = Transformer(model_config)
    forward = lambda p, x, pos, seg: model.apply({"params": p}, x, pos, seg)
    row_len = FLAGS.row_len or model_config.max_seq_len
    engine = Engine(
        forward, params, row_len=row_len, batch_rows=FLAGS.batch_rows, vocab_size=vocab.vocab_size
    )
    start = time.perf_counter()
    harness.score(data, engine, vocab.encode, bos_prefix(bos))  # compiles once
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    lm = HFLM(pretrained=str(hf_dir), dtype="float32", device="cpu", batch_size=FLAGS.lm_eval_batch)
    load_s = time.perf_counter() - start

    ours_s, theirs_s = [], []
    for _ in range(FLAGS.rounds):
        start = time.perf_counter()
        records = harness.score(data, engine, vocab.encode, bos_prefix(bos))
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        scored = lm.loglikelihood(instances, disable_tqdm=True)
        theirs_s.append(time.perf_counter() - start)
    ours_ll = np.array([ll for r in records for ll in r["loglikelihoods"]])
    theirs_ll = np.array([ll for ll, _ in scored])
    n = len(docs)
    result = {
        "task": name,
        "items": n,
        "requests": len(instances),
        "rounds": FLAGS.rounds,
        "engine_items_per_s": _rates(n, ours_s),
        "lm_eval_items_per_s": _rates(n, theirs_s),
        "speedup_median": statistics.median(theirs_s) / statistics.median(ours_s),
        "speedup_range": [min(theirs_s) / max(ours_s), max(theirs_s) / min(ours_s)],
        "engine_compile_s": compile_s,
        "lm_eval_load_s": load_s,
        "max_abs_delta_loglikelihood": float(np.abs(ours_ll - theirs_ll).max()),
        "lm_eval_batch": FLAGS.lm_eval_batch,
        "batch_rows": FLAGS.batch_rows,
        "row_len": row_len,
        "truncated_requests": sum(r["truncated"] for r in records),
        "model": "checkpoint " + FLAGS.workdir if FLAGS.workdir else "demo_tiny_cpu, initialised",
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    if FLAGS.out:
        Path(FLAGS.out).write_text(json.dumps(result, indent=2) + "\n")


def _rates(items: int, seconds: list[float]) -> dict[str, float]:
    rates = sorted(items / s for s in seconds)
    return {"median": statistics.median(rates), "min": rates[0], "max": rates[-1]}


if __name__ == "__main__":
    app.run(main)
