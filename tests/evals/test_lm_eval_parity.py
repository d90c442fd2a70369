"""Parity with lm-evaluation-harness, and the same scores from inside the training loop.

A tiny model trains a few steps with in-loop downstream evaluation of ARC-Easy items (in
ARC's original file layout); its checkpoint is exported to Hugging Face format and
lm-evaluation-harness's HF backend scores the same items through lm-eval's own arc_easy
prompt. Per item and choice the loglikelihoods agree to 1e-4 in float32, and acc and
acc_norm are identical: for the run's bos policy (none; exported by the command, which
reads it from the run) and for "document".
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from evals import harness, lm_eval_hf, metrics
from evals import tasks as tasks_lib
from evals.engine import Engine
from pretrain import checkpoint
from pretrain import train as train_lib
from pretrain.convert import export
from pretrain.metrics import read_metrics
from pretrain.model.transformer import Transformer, TransformerConfig
from tests.support import export as fx
from tests.support.evals import arc_rows, write_jsonl
from tests.support.train import tiny_config
from tokenizer.special_ids import bos_prefix
from tokenizer.vocab import load_vocabulary

pytest.importorskip("lm_eval")
pytest.importorskip("torch")

ITEMS = 16
STEPS = 6
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(workdir, items file, rows): a trained tiny run that scored the items in the loop."""
    root = tmp_path_factory.mktemp("parity")
    tokenizer = fx.train_varied_tokenizer(root)
    rows = arc_rows(ITEMS)
    items = write_jsonl(root / "ARC-Easy-Test.jsonl", rows)
    config = tiny_config(str(root / "run"), total_steps=STEPS, log_every=2)
    config.metrics.tensorboard = True
    config.model.update(vocab_size=1024, max_seq_len=128)
    config.data.tokenizer = str(tokenizer)
    config.mixture.bos = "none"
    config.downstream.update(tasks="arc_easy", eval_sets=f"arc_easy={items}", limit=0, every_steps=4)
    train_lib.train(config)
    return root / "run", items, rows


def engine_records(workdir, items, bos: str) -> list[dict]:
    params, train_config = checkpoint.restore_params(str(workdir))
    model = Transformer(TransformerConfig.from_config_dict(train_config.model))
    vocab = load_vocabulary(train_config.data.tokenizer)
    forward = lambda p, x, pos, seg: model.apply({"params": p}, x, pos, seg)
    data = harness.load_tasks(tasks_lib.resolve(["arc_easy"]), eval_set_paths={"arc_easy": str(items)})
    encode = vocab.encode
    # The model has more embedding rows than the tokenizer has pieces; the export drops them.
    engine = Engine(forward, params, row_len=128, batch_rows=4, vocab_size=vocab.vocab_size)
    return harness.score(data, engine, encode, bos_prefix(bos))


def lm_eval_records(hf_dir, rows, tmp_path) -> list[dict]:
    harness_rows = []
    for row in rows:
        labels = [c["label"] for c in row["question"]["choices"]]
        texts = [c["text"] for c in row["question"]["choices"]]
        harness_rows.append(
            lm_eval_hf.harness_row("arc_easy", row["question"]["stem"], texts, labels.index(row["answerKey"]))
        )
    items = lm_eval_hf.write_items(tmp_path / "arc_easy.jsonl", harness_rows)
    config = lm_eval_hf.task_config("arc_easy", items, str(tmp_path / "datasets"))
    return lm_eval_hf.evaluate(str(hf_dir), [config], batch_size=4)["arc_easy"]


@pytest.mark.parametrize("bos", ["none", "document"])
def test_engine_and_lm_eval_agree_per_item(run, bos, tmp_path):
    workdir, items, rows = run
    hf_dir = tmp_path / "hf"
    if bos == "none":  # the command: the policy comes from the run's config.json
        config = export.default_config()
        config.update(workdir=str(workdir), output=str(hf_dir), dtype="float32")
        export.main(config, [])
    else:
        params, train_config = checkpoint.restore_params(str(workdir))
        model_config = TransformerConfig.from_config_dict(train_config.model)
        export.export_hf(params, model_config, train_config.data.tokenizer, hf_dir, dtype="float32", bos=bos)
    assert json.loads((hf_dir / "tokenizer_config.json").read_text())["add_bos_token"] is (bos == "document")

    ours = sorted(engine_records(workdir, items, bos), key=lambda r: r["doc_id"])
    theirs = sorted(lm_eval_records(hf_dir, rows, tmp_path), key=lambda r: r["doc_id"])
    assert [r["doc_id"] for r in ours] == [r["doc_id"] for r in theirs] == list(range(ITEMS))
    deltas = np.array([np.subtract(a["loglikelihoods"], b["loglikelihoods"]) for a, b in zip(ours, theirs)])
    assert np.abs(deltas).max() <= TOLERANCE, np.abs(deltas).max()
    for a, b in zip(ours, theirs):
        assert a["gold"] == b["gold"]
        assert a["is_greedy"] == b["is_greedy"]
        assert metrics.acc(a)[0] == b["acc"] and metrics.acc_norm(a)[0] == b["acc_norm"], a["doc_id"]
    # Not a vacuous agreement: the choices differ, and acc_norm picks another choice than acc somewhere.
    assert np.ptp([r["loglikelihoods"] for r in ours], axis=1).min() > 0
    assert any(
        np.argmax(r["loglikelihoods"]) != np.argmax(np.array(r["loglikelihoods"]) / r["characters"])
        for r in ours
    )
    if bos == "none":  # the in-loop scores of the last step are these items' scores
        final = read_metrics(workdir)[-1]["downstream"]["arc_easy"]
        assert final["acc"] == pytest.approx(np.mean([b["acc"] for b in theirs]))
        assert final["acc_norm"] == pytest.approx(np.mean([b["acc_norm"] for b in theirs]))


def test_in_loop_scores_every_n_steps_and_at_the_end_into_metrics_and_tensorboard(run):
    workdir = run[0]
    logged = {r["step"]: r["downstream"] for r in read_metrics(workdir) if "downstream" in r}
    assert sorted(logged) == [4, STEPS]  # every 4 steps, and the last step (the anneal's end)
    for scores in logged.values():
        assert scores["seconds"] > 0
        assert set(scores["arc_easy"]) >= {"acc", "acc_norm", "prob_correct"}
        assert all(0 <= scores["arc_easy"][m] <= 1 for m in ("acc", "acc_norm", "prob_correct"))
    assert logged[4]["arc_easy"] != logged[STEPS]["arc_easy"]  # scored with each step's params
    events = b"".join(p.read_bytes() for p in (workdir / "tensorboard").iterdir())
    assert b"downstream/arc_easy/acc_norm" in events
