"""pretrain.tools.evaluate against a direct computation with the model, window by window."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from pretrain import train as train_lib
from pretrain.checkpoint import restore_params
from pretrain.model.transformer import Transformer, TransformerConfig
from pretrain.tools import evaluate as evaluate_lib
from tests.support.mixtures import train_tokenizer
from tests.support.train import tiny_config

REPO = Path(__file__).resolve().parents[3]
SEQ_LEN = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    config = tiny_config(root / "run")  # the default 8 steps: shares compiled programs
    config.data.tokenizer = str(train_tokenizer(root / "tok"))
    train_lib.train(config)
    docs = [
        {"text": "let prove theorem lemma integer prime", "source": "math", "id": "a"},
        {"text": " ".join(["def return import class self value"] * 12), "source": "code", "id": "b"},
        {"text": "the news page site people", "source": "web", "id": "c"},
        {"text": "sum equal proof group ring field", "source": "math", "id": "d"},
    ]
    input_path = root / "docs.jsonl"
    input_path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return config.workdir, input_path


def direct_losses(workdir, tokens: list[int]) -> np.ndarray:
    """Every window of <= SEQ_LEN + 1 tokens run alone, unpadded; log-softmax in numpy."""
    params, config = restore_params(workdir)
    model = Transformer(TransformerConfig.from_config_dict(config.model))
    apply = jax.jit(model.apply)
    losses = []
    for start in range(0, len(tokens) - 1, SEQ_LEN):
        window = np.array(tokens[start : start + SEQ_LEN + 1])
        n = len(window) - 1
        logits = np.asarray(
            apply({"params": params}, window[None, :-1], np.arange(n)[None], np.ones((1, n), np.int32)),
            np.float64,
        )[0]
        log_probs = (
            logits
            - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
            - logits.max(-1, keepdims=True)
        )
        losses.append(-log_probs[np.arange(n), window[1:]])
    return np.concatenate(losses)


def test_evaluate_matches_direct_computation(trained, tmp_path):
    workdir, input_path = trained
    dump = tmp_path / "dump.jsonl"
    result = evaluate_lib.evaluate(workdir, input_path, dump=dump, batch_size=3)
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
    assert max(len(r["tokens"]) for r in rows) > 2 * SEQ_LEN  # several windows

    from tokenizer.vocab import load_vocabulary

    vocab = load_vocabulary(json.loads((Path(workdir) / "config.json").read_text())["data"]["tokenizer"])
    all_losses = []
    for row, text in zip(rows, ["let prove theorem lemma integer prime"]):
        assert row["tokens"] == [2] + list(vocab.encode(text)) + [1]  # <bos> text <eos>
    for row in rows:
        expected = direct_losses(workdir, row["tokens"])  # restores afresh: tests restore_params
        assert len(row["losses"]) == len(row["tokens"]) - 1
        np.testing.assert_allclose(row["losses"], expected, rtol=1e-5, atol=1e-5)
        all_losses.extend(expected)
    assert result["tokens"] == len(all_losses)
    assert result["loss"] == pytest.approx(np.mean(all_losses), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-9)
    math_losses = [x for r in rows if r["source"] == "math" for x in r["losses"]]
    assert result["per_source"]["math"]["loss"] == pytest.approx(np.mean(math_losses), rel=1e-5)
    assert set(result["per_source"]) == {"math", "code", "web"}


def test_evaluate_cli_plain_text(trained, tmp_path):
    workdir, _ = trained
    text = tmp_path / "docs.txt"
    text.write_text("the news page site people\n\nlet prove theorem lemma\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pretrain.tools.evaluate",
            f"--workdir={workdir}",
            f"--input={text}",
            "--dtype=float32",
            f"--dump={tmp_path / 'd.jsonl'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = evaluate_lib.evaluate(workdir, text)
    assert f"loss {expected['loss']:.4f} nats/token" in result.stdout
    assert expected["documents"] == 2 and "per_source" not in expected
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 2
