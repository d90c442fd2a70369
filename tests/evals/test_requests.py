"""Requests tokenized as lm-evaluation-harness does; the harness from tasks to records and summary."""

from __future__ import annotations

import types

import pytest

from evals import harness, tasks
from evals.engine import Engine, Request
from evals.requests import encode_pair, move_whitespace
from tests.support.eval_files import write_eval_dir
from tests.support.mixtures import train_tokenizer
from tokenizer.special_ids import BOS_ID, bos_prefix
from tokenizer.vocab import load_vocabulary

PAIRS = [
    ("Question: which one?\nAnswer:", " the news page"),
    ("Question: which one?\nAnswer: ", "the news page"),  # trailing space moves to the continuation
    ("def return\n\n", "  import class"),
    ("prime sum", "equal"),  # no space: the word boundary is inside a token
    ("the", " news\n"),
]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return load_vocabulary(train_tokenizer(tmp_path_factory.mktemp("tok")))


def test_move_whitespace():
    assert move_whitespace("Answer: \n", "x") == ("Answer:", " \nx")
    assert move_whitespace("Answer:", " x") == ("Answer:", " x")


@pytest.mark.parametrize("policy", ["document", "none"])
def test_encode_pair_matches_lm_eval(vocab, policy):
    lm_eval_model = pytest.importorskip("lm_eval.api.model")
    bos = bos_prefix(policy)
    # lm-eval's own _encode_pair on an object with its tok_encode: BOS added iff add_bos_token
    fake = types.SimpleNamespace(backend="causal", tok_encode=lambda s: bos + list(vocab.encode(s)))
    for context, continuation in PAIRS:
        ours = encode_pair(vocab.encode, context, continuation, bos)
        theirs = lm_eval_model.TemplateLM._encode_pair(fake, context, continuation)
        assert (list(ours.context), list(ours.continuation)) == (list(theirs[0]), list(theirs[1]))
        assert list(ours.context[: len(bos)]) == bos
        assert list(ours.context + ours.continuation) == bos + list(
            vocab.encode(context.rstrip() + context[len(context.rstrip()) :] + continuation)
        )
    assert encode_pair(vocab.encode, "", "the news", bos) == Request(
        (BOS_ID,), tuple(vocab.encode("the news"))
    )


@pytest.fixture(scope="module")
def engine(tiny_model):
    model, params = tiny_model
    return Engine(lambda p, *a: model.apply({"params": p}, *a), params, row_len=256, batch_rows=2)


def test_harness_records_and_summary(vocab, engine, tmp_path):
    eval_dir = write_eval_dir(tmp_path)
    data = harness.load_tasks(tasks.resolve(["arc_easy", "gsm8k_bpb"]), eval_dir=str(eval_dir), num_fewshot=1)
    bos = bos_prefix("document")
    records = harness.score(data, engine, vocab.encode, bos, num_fewshot=1, contaminated={"arc_easy": {2}})
    assert [(r["task"], r["doc_id"]) for r in records] == [("arc_easy", i) for i in range(4)] + [
        ("gsm8k_bpb", i) for i in range(3)
    ]
    arc = records[0]
    assert len(arc["loglikelihoods"]) == 4 and len(arc["is_greedy"]) == 4 and arc["gold"] == 1
    assert arc["characters"] == [3, 4, 5, 5] and arc["bytes"] == [4, 5, 6, 6]
    assert all(ll < 0 for ll in arc["loglikelihoods"]) and arc["truncated"] is False
    # the same request scored alone gives the same number
    context = data[0].task.context(
        data[0].docs[0], tasks.fewshot_examples(data[0].task, data[0].docs[0], data[0].pool, 1, 0)
    )
    (alone,) = engine.score([encode_pair(vocab.encode, context, " blue", bos)])
    assert arc["loglikelihoods"][1] == pytest.approx(alone.loglikelihood, abs=1e-5)
    assert [r["contaminated"] for r in records] == [False, False, True, False, False, False, False]
    summary = harness.summarize(records)
    assert set(summary["arc_easy"]["metrics"]) == {"acc", "acc_norm", "prob_correct", "logprob_per_char"}
    assert summary["arc_easy"]["contamination"]["items_found"] == 1 and summary["arc_easy"]["truncated"] == 0
    assert summary["arc_easy"]["contamination"]["clean"]["acc"]["value"] in (0, 1 / 3, 2 / 3, 1)
    assert (
        set(summary["gsm8k_bpb"]["metrics"]) == {"bpb"}
        and summary["gsm8k_bpb"]["metrics"]["bpb"]["value"] > 0
    )
    assert summary["gsm8k_bpb"]["contamination"] == {"checked": True, "items_found": 0}
    unchecked = harness.score(data[1:], engine, vocab.encode, bos, num_fewshot=1)
    assert [r["contaminated"] for r in unchecked] == [None] * 3
    assert harness.summarize(unchecked)["gsm8k_bpb"]["contamination"] == {
        "checked": False,
        "items_found": None,
    }
