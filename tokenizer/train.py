"""Train a Gemma-style SentencePiece tokenizer on a sample of the prepared data.

    python -m tokenizer.train --config=configs/tokenizer/demo.py [--input ...] \
        [--vocab_size N] [--output DIR]

Writes DIR/tokenizer.model, DIR/tokenizer.vocab and DIR/settings.json (the SentencePiece
settings, the config and a description of the sample). With `config.model_path` set, an
existing model (e.g. the released Gemma tokenizer.model) is checked and copied instead.

The Gemma properties are fixed here rather than configurable, because later stages rely
on them: BPE, digits split one per piece, byte fallback for unseen characters, identity
normalisation without a dummy prefix or whitespace clean-up (so `decode(encode(x)) == x`,
code indentation included), whitespace-only pieces, and ids pad=0, eos=1, bos=2, unk=3.
The sample is seeded and SentencePiece's BPE trainer is deterministic, so the same config
gives a byte-identical model (the pieces do not depend on `num_threads` either; only the
trainer_spec recorded in the model does).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable

import ml_collections
import sentencepiece as spm
from absl import logging
from google.protobuf import json_format
from sentencepiece import sentencepiece_model_pb2

from common import checks, cli, fs, outputs
from common.checks import require
from tokenizer import sample as sample_lib
from tokenizer.special_ids import BOS_ID, EOS_ID, PAD_ID, SPECIAL_PIECES, UNK_ID
from tokenizer.vocab import load_vocabulary

BYTE_PIECES = 256
GEMMA_SPM_FLAGS = {
    "model_type": "bpe",
    "split_digits": True,
    "byte_fallback": True,
    "allow_whitespace_only_pieces": True,
    "split_by_whitespace": True,
    "split_by_number": True,
    "split_by_unicode_script": True,
    "treat_whitespace_as_suffix": False,
    "normalization_rule_name": "identity",
    "add_dummy_prefix": False,
    "remove_extra_whitespaces": False,
    "vocabulary_output_piece_score": True,
    "hard_vocab_limit": True,
    "input_sentence_size": 0,  # the sample is already drawn (seeded) by tokenizer.sample
    "pad_id": PAD_ID,
    "eos_id": EOS_ID,
    "bos_id": BOS_ID,
    "unk_id": UNK_ID,
    "pad_piece": SPECIAL_PIECES[PAD_ID],
    "eos_piece": SPECIAL_PIECES[EOS_ID],
    "bos_piece": SPECIAL_PIECES[BOS_ID],
    "unk_piece": SPECIAL_PIECES[UNK_ID],
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every field used, naming the field on failure."""
    if config.model_path:
        require(
            fs.isfile(config.model_path), "model_path", "no such SentencePiece model file", config.model_path
        )
        return
    require(
        bool(config.inputs), "inputs", "need at least one input (or set config.model_path)", config.inputs
    )
    s, t = config.sample, config.spm
    checks.positive(s.max_sentences, "sample.max_sentences")
    require(
        64 <= s.max_sentence_bytes <= 1 << 20,
        "sample.max_sentence_bytes",
        "must be in [64, 1048576]",
        s.max_sentence_bytes,
    )
    checks.non_negative(s.max_documents_per_domain, "sample.max_documents_per_domain")
    checks.non_negative(s.seed, "sample.seed")
    for domain, weight in s.domain_weights.items():
        checks.non_negative(weight, f"sample.domain_weights.{domain}")
    symbols = list(t.user_defined_symbols) + list(t.control_symbols)
    for field in ("user_defined_symbols", "control_symbols"):
        for symbol in t[field]:
            require(
                bool(symbol) and symbol not in SPECIAL_PIECES.values(),
                f"spm.{field}",
                "symbols must be non-empty and not pad/eos/bos/unk",
                symbol,
            )
    require(
        len(set(symbols)) == len(symbols),
        "spm.user_defined_symbols",
        "duplicate symbol across user_defined_symbols/control_symbols",
        symbols,
    )
    reserved = len(SPECIAL_PIECES) + len(symbols) + BYTE_PIECES
    require(
        t.vocab_size > reserved,
        "spm.vocab_size",
        f"must exceed the {reserved} special, symbol and byte pieces",
        t.vocab_size,
    )
    require(
        0 < t.character_coverage <= 1, "spm.character_coverage", "must be in (0, 1]", t.character_coverage
    )
    require(
        1 <= t.max_sentencepiece_length <= 64,
        "spm.max_sentencepiece_length",
        "must be in [1, 64]",
        t.max_sentencepiece_length,
    )
    require(t.num_threads >= 1, "spm.num_threads", "must be >= 1", t.num_threads)


def spm_flags(config: ml_collections.ConfigDict) -> dict:
    """The full SentencePiece trainer settings: Gemma's fixed ones plus the config's."""
    t = config.spm
    return {
        **GEMMA_SPM_FLAGS,
        "vocab_size": t.vocab_size,
        "character_coverage": t.character_coverage,
        "max_sentencepiece_length": t.max_sentencepiece_length,
        "num_threads": t.num_threads,
        "user_defined_symbols": list(t.user_defined_symbols),
        "control_symbols": list(t.control_symbols),
        "max_sentence_length": config.sample.max_sentence_bytes,
    }


def train_model(sentences: list[str], trainer_flags: dict, seed: int) -> bytes:
    """Runs the SentencePiece BPE trainer in memory and returns the serialised model."""
    spm.set_random_generator_seed(seed)
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=writer, minloglevel=1, **trainer_flags
        )
    except RuntimeError as e:
        if "Vocabulary size" in str(e):
            raise checks.ConfigError(f"config.spm.vocab_size: too large for this sample ({e})") from e
        raise
    return writer.getvalue()


_VOCAB_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def write_vocab(model: bytes, path: fs.PathLike) -> None:
    """Writes `piece<TAB>score` lines like SentencePiece's .vocab, one line per piece.

    Pieces may hold newlines and tabs (Gemma keeps whitespace), so backslash, newline,
    carriage return and tab are written escaped (`\\n` ...) to keep one piece per line.
    """
    proto = sentencepiece_model_pb2.ModelProto.FromString(model)
    lines = (f"{p.piece.translate(_VOCAB_ESCAPES)}\t{p.score:g}\n" for p in proto.pieces)
    fs.write_text(path, "".join(lines))


def describe_model(model: bytes) -> dict:
    """The model's own record of how it was built (trainer and normaliser specs)."""
    proto = sentencepiece_model_pb2.ModelProto.FromString(model)
    return {
        "pieces": len(proto.pieces),
        "sha256": hashlib.sha256(model).hexdigest(),
        "trainer_spec": json_format.MessageToDict(proto.trainer_spec, preserving_proto_field_name=True),
        "normalizer_spec": json_format.MessageToDict(proto.normalizer_spec, preserving_proto_field_name=True),
    }


def train_tokenizer(
    config: ml_collections.ConfigDict, output: fs.PathLike, log: Callable[[str], None] = logging.info
) -> dict:
    """Trains (or copies `config.model_path`) into `output`; returns the settings written.

    `log` receives the progress lines (default: the log; the command prints them)."""
    validate(config)
    output = fs.resolve(output)
    with outputs.writing(
        output,
        command="tokenizer.train",
        field="config.output",
        overwrite=bool(config.get("overwrite", False)),
        say=log,
    ) as staged:
        settings = _train_into(config, staged.path, log)
        staged.commit(last=["tokenizer.model"])  # the file runs use comes once the others are in
    log(
        f"tokenizer: wrote {fs.join(output, 'tokenizer.model')} ({settings['model']['pieces']} pieces, "
        f"sha256 {settings['model']['sha256'][:12]}) and settings.json in {settings['seconds']:.1f}s"
    )
    return settings


def _train_into(config: ml_collections.ConfigDict, staging: str, log: Callable[[str], None]) -> dict:
    """Trains (or copies) the model and writes its three files into `staging`; returns the settings."""
    start = time.perf_counter()
    settings: dict = {"config": config.to_dict()}
    if config.model_path:
        log(f"tokenizer: using existing model {config.model_path}")
        load_vocabulary(config.model_path)  # fails before writing anything if the id layout differs
        model = fs.read_bytes(config.model_path)
    else:
        sources = sample_lib.resolve_inputs(list(config.inputs))
        log(
            f"tokenizer: sampling from {len(sources)} source(s) in domains {sorted({s.domain for s in sources})}"
        )
        sentences, settings["sample"] = sample_lib.sample_sentences(
            sources,
            dict(config.sample.domain_weights),
            config.sample.max_sentences,
            config.sample.max_sentence_bytes,
            config.sample.seed,
            split=config.split,
            max_documents_per_domain=config.sample.max_documents_per_domain,
            log=log,
        )
        settings["trainer"] = spm_flags(config)
        log(
            f"tokenizer: training BPE, vocab {config.spm.vocab_size}, on {len(sentences)} sentences "
            f"({settings['sample']['bytes'] / 1e6:.1f} MB)"
        )
        model = train_model(sentences, settings["trainer"], config.sample.seed)
    settings["model"] = describe_model(model)
    settings["seconds"] = round(time.perf_counter() - start, 2)
    fs.write_bytes(fs.join(staging, "tokenizer.model"), model)
    write_vocab(model, fs.join(staging, "tokenizer.vocab"))
    fs.write_text(fs.join(staging, "settings.json"), json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return settings


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    require(not argv, "inputs", "unexpected positional arguments (use --input)", argv)
    train_tokenizer(config, config.output, log=print)


def run() -> None:
    """Console entry point."""
    cli.run(
        main,
        doc=__doc__,
        default_config="tokenizer/demo.py",
        shortcuts=[
            cli.Shortcut(
                "input",
                "inputs",
                "[domain=]path of training text (PREP_DIR, TFDS dir, "
                f"JSONL, text files, patterns; local or gs://); repeatable; patterns: {fs.PATTERN_HELP}",
                multi=True,
            ),
            cli.Shortcut("vocab_size", "spm.vocab_size", "number of pieces"),
            cli.Shortcut("output", help="output directory"),
            cli.Shortcut(
                "overwrite",
                help="replace the tokenizer in --output (only the files it wrote; sets config.overwrite)",
            ),
        ],
        required=["output"],
    )


if __name__ == "__main__":
    run()
