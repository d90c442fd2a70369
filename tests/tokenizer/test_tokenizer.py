"""Tokenizer: Gemma properties of a tiny trained vocabulary, determinism, config checks, CLI, report."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from common.checks import ConfigError
from configs.tokenizer import demo, gemma
from tokenizer import report
from tokenizer.train import train_tokenizer
from tokenizer.vocab import GemmaVocabulary, load_vocabulary

REPO = Path(__file__).resolve().parents[2]
VOCAB_SIZE = 600
WORDS = "the of model data token piece vocabulary train loss gradient layer attention über naïve café".split()


def write_corpus(root: Path) -> list[str]:
    """Small JSONL corpora per domain: standard-library code, generated prose and formulas."""
    rng = random.Random(0)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = [p.read_text(encoding="utf-8") for p in sorted((stdlib / "json").glob("*.py"))]
    web = [
        " ".join(rng.choice(WORDS) for _ in range(200)) + f" in {rng.randint(1900, 2030)}.\n"
        for _ in range(60)
    ]
    math = [
        f"$x_{i} = \\frac{{{rng.randint(1, 999)}}}{{{i + 1}}}$ and $\\sum_k k^2 = {i * i}$\n"
        for i in range(300)
    ]
    paths = []
    for domain, docs in (("code", code), ("web", web), ("math", math)):
        path = root / f"{domain}.jsonl"
        path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(docs)))
        paths.append(str(path))
    return paths


def tiny_config(inputs: list[str], output: Path, **overrides):
    config = demo.get_config()
    config.inputs = inputs
    config.output = str(output)
    config.spm.vocab_size = VOCAB_SIZE
    config.sample.max_sentences = 2000
    config.sample.max_sentence_bytes = 1024
    for field, value in overrides.items():
        section, name = field.split(".")
        config[section][name] = value
    return config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(tiny_config(corpus, out), out, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def vocab(trained) -> GemmaVocabulary:
    return load_vocabulary(trained / "tokenizer.model")


def test_writes_model_vocab_and_settings(trained, vocab):
    assert isinstance(vocab, GemmaVocabulary)
    assert vocab.vocab_size == VOCAB_SIZE
    settings = json.loads((trained / "settings.json").read_text())
    assert set(settings["sample"]["domains"]) == {"code", "web", "math"}
    assert settings["trainer"]["split_digits"] and settings["trainer"]["byte_fallback"]
    assert settings["model"]["normalizer_spec"]["name"] == "identity"
    lines = (trained / "tokenizer.vocab").read_text(encoding="utf-8").splitlines()
    assert len(lines) == VOCAB_SIZE and lines[0].split("\t")[0] == "<pad>"


def test_vocabulary_pickles_for_seqio(vocab):
    copy = pickle.loads(pickle.dumps(vocab))
    assert copy == vocab and copy.encode("x = 42\n") == vocab.encode("x = 42\n")


def test_special_ids_and_control_tokens(vocab):
    sp = vocab.tokenizer
    assert (vocab.pad_id, vocab.eos_id, vocab.bos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<eos>", "<bos>", "<unk>"]
    for symbol in ("<start_of_turn>", "<end_of_turn>"):
        assert len(vocab.encode(symbol)) == 1
    assert (
        vocab.decode(vocab.encode("<start_of_turn>user\nhi<end_of_turn>"))
        == "<start_of_turn>user\nhi<end_of_turn>"
    )


@pytest.mark.parametrize(
    "text",
    [
        "def f(x):\n\tif x:\n\t\treturn  x  \n\n    else:\n        pass\t\n",
        "   leading, trailing   \n\n\n  \t\r\n",
        "3141592653589793238462643383279502884197169399375105820974944592",
        "",
    ],
)
def test_lossless_round_trip_on_code_and_whitespace(vocab, text):
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.decode_tf(vocab.encode_tf(text)).numpy().decode("utf-8") == text  # the SeqIO/TF path


def test_every_digit_is_its_own_piece(vocab):
    pieces = [vocab.tokenizer.id_to_piece(i) for i in vocab.encode("x = 1234567890 + 0042")]
    digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
    assert "".join(digit_pieces) == "12345678900042"
    assert all(len(p) == 1 for p in digit_pieces)


def test_unseen_character_falls_back_to_bytes(vocab):
    text = "\U00013000"  # an Egyptian hieroglyph: never in the training text
    pieces = [vocab.tokenizer.id_to_piece(i) for i in vocab.encode(text)]
    assert pieces == [f"<0x{b:02X}>" for b in text.encode("utf-8")]
    assert vocab.unk_id not in vocab.encode(text)
    assert vocab.decode(vocab.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_lossless_round_trip_on_arbitrary_unicode(vocab, text):
    ids = vocab.encode(text)
    assert vocab.unk_id not in ids
    assert vocab.decode(ids) == text


def test_same_config_and_seed_give_byte_identical_model(corpus, trained, tmp_path):
    train_tokenizer(tiny_config(corpus, tmp_path / "a"), tmp_path / "a", log=lambda *_: None)
    assert (tmp_path / "a" / "tokenizer.model").read_bytes() == (trained / "tokenizer.model").read_bytes()
    train_tokenizer(
        tiny_config(corpus, tmp_path / "b", **{"sample.seed": 7, "sample.max_sentences": 300}),
        tmp_path / "b",
        log=lambda *_: None,
    )
    assert (tmp_path / "b" / "tokenizer.model").read_bytes() != (trained / "tokenizer.model").read_bytes()


def test_existing_model_is_used_without_training(trained, tmp_path):
    config = demo.get_config()
    config.model_path = str(trained / "tokenizer.model")
    config.inputs = []
    settings = train_tokenizer(config, tmp_path, log=lambda *_: None)
    assert (tmp_path / "tokenizer.model").read_bytes() == (trained / "tokenizer.model").read_bytes()
    assert "sample" not in settings and settings["model"]["pieces"] == VOCAB_SIZE


def test_model_with_other_id_layout_is_rejected(corpus, tmp_path):
    sentences = [json.loads(line)["text"] for line in Path(corpus[1]).read_text().splitlines()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=str(tmp_path / "t5"), vocab_size=40, minloglevel=2
    )
    with pytest.raises(ValueError, match="special ids"):
        load_vocabulary(tmp_path / "t5.model")
    config = demo.get_config()
    config.model_path = str(tmp_path / "t5.model")
    with pytest.raises(ValueError, match="special ids"):
        train_tokenizer(config, tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out" / "tokenizer.model").exists()


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("spm.vocab_size", 100, "config.spm.vocab_size"),
        ("spm.character_coverage", 1.5, "config.spm.character_coverage"),
        ("spm.num_threads", 0, "config.spm.num_threads"),
        ("spm.user_defined_symbols", ["<eos>"], "config.spm.user_defined_symbols"),
        ("sample.max_sentences", 0, "config.sample.max_sentences"),
        ("sample.max_sentence_bytes", 10, "config.sample.max_sentence_bytes"),
        ("sample.seed", -1, "config.sample.seed"),
    ],
)
def test_bad_config_fails_naming_the_field(corpus, tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        train_tokenizer(tiny_config(corpus, tmp_path, **{field: value}), tmp_path, log=lambda *_: None)


def test_bad_inputs_fail_naming_the_field(corpus, tmp_path):
    with pytest.raises(ValueError, match="config.inputs"):
        train_tokenizer(tiny_config([], tmp_path), tmp_path, log=lambda *_: None)
    with pytest.raises(ValueError, match="config.sample.domain_weights"):
        train_tokenizer(
            tiny_config([f"prose={corpus[1]}", corpus[0]], tmp_path), tmp_path, log=lambda *_: None
        )
    with pytest.raises(ValueError, match="config.spm.vocab_size: too large"):
        train_tokenizer(
            tiny_config(corpus, tmp_path, **{"spm.vocab_size": 50_000}), tmp_path, log=lambda *_: None
        )


def test_a_file_without_domain_prefix_trains_on_its_own(corpus, tmp_path):
    """`tokenizer.train --input corpus.jsonl`: the domain is the file's name, not a configured one."""
    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text(Path(corpus[0]).read_text())
    settings = train_tokenizer(
        tiny_config([str(corpus_file)], tmp_path / "tok", **{"spm.vocab_size": 400}),
        tmp_path / "tok",
        log=lambda *_: None,
    )
    assert list(settings["sample"]["domains"]) == ["corpus"]
    assert settings["sample"]["domains"]["corpus"]["sentences_kept"] > 0
    assert load_vocabulary(tmp_path / "tok").vocab_size == 400


def test_gemma_config_puts_turn_tokens_at_the_released_ids(corpus, tmp_path):
    config = gemma.get_config()
    assert config.spm.vocab_size == 256_000
    config.inputs, config.spm.vocab_size, config.sample.max_sentences = corpus, VOCAB_SIZE, 500
    train_tokenizer(config, tmp_path, log=lambda *_: None)
    vocab = load_vocabulary(tmp_path)
    assert vocab.encode("<start_of_turn>") == [106] and vocab.encode("<end_of_turn>") == [107]


def test_report_measures_tokens_per_byte_per_domain(vocab, corpus):
    rows = report.measure(vocab.tokenizer, corpus, split="validation", max_bytes_per_domain=200_000)
    by_domain = {r["domain"]: r for r in rows}
    assert set(by_domain) == {"code", "web", "math"}
    for row in rows:
        assert 0 < row["tokens_per_byte"] < 1.5
        assert row["round_trip_errors"] == 0
        assert row["mb_per_s"] > 0
    assert by_domain["web"]["tokens_per_byte"] < by_domain["math"]["tokens_per_byte"]  # web words repeat


def test_cli_trains_and_reports(corpus, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = [f"--input={p}" for p in corpus] + [
        "--vocab_size=500",
        f"--output={tmp_path}",
        "--config.sample.max_sentences=500",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "tokenizer.train", "--config=configs/tokenizer/demo.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_vocabulary(tmp_path).vocab_size == 500
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokenizer.report",
            f"--tokenizer={tmp_path}/tokenizer.model",
            *[f"--input={p}" for p in corpus],
            f"--json={tmp_path}/rows.json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert "code" in {r["domain"] for r in rows} and all(r["tokens_per_byte"] > 0 for r in rows)


def test_an_earlier_tokenizer_is_replaced_only_with_overwrite_and_nothing_else_is_touched(
    corpus, trained, tmp_path
):
    out = tmp_path / "tok"
    shutil.copytree(trained, out)
    (out / "NOTES.txt").write_text("mine\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = tiny_config(corpus, out, **{"sample.seed": 7, "sample.max_sentences": 300})
    with pytest.raises(
        ConfigError, match=r"^config\.output: .* earlier tokenizer.train run; pass --overwrite"
    ):
        train_tokenizer(other, out, log=lambda *_: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    other.overwrite = True
    settings = train_tokenizer(other, out, log=lambda *_: None)
    assert (out / "tokenizer.model").read_bytes() != before["tokenizer.model"]
    assert hashlib.sha256((out / "tokenizer.model").read_bytes()).hexdigest() == settings["model"]["sha256"]
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no staging left; NOTES.txt kept
    assert (out / "NOTES.txt").read_text() == "mine\n"


def test_a_folder_that_holds_no_tokenizer_is_refused_even_with_overwrite(corpus, tmp_path):
    (tmp_path / "data.txt").write_text("not a tokenizer\n")
    config = tiny_config(corpus, tmp_path)
    config.overwrite = True
    with pytest.raises(
        ConfigError, match=r"^config\.output: .* is not the output of an earlier tokenizer.train"
    ):
        train_tokenizer(config, tmp_path, log=lambda *_: None)
    assert [p.name for p in tmp_path.iterdir()] == ["data.txt"]
