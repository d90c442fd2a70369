"""Tiny prepared datasets and a tiny tokenizer for the mixtures tests, built in a temp dir.

The layout and features are those of docs/DESIGN.md (PREP_DIR/<domain> is a TFDS dataset
directory, ids pad=0 eos=1 bos=2 unk=3), so the tests exercise the real seams without
the data pipeline or the tokenizer trainer.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sentencepiece as spm
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipeline.prepared import features

DOMAIN_WORDS = {
    "web": "the news page site people city world today report music travel food market".split(),
    "math": "let prove theorem lemma integer prime sum equal proof group ring field".split(),
    "code": "def return import class self value list dict for while print lambda".split(),
}
FEATURES = features()  # what data_pipeline.prepare writes


def make_documents(domain: str, n: int, seed: int = 0, max_words: int = 120) -> list[dict]:
    """Records with the prepared-data features; every third one is high quality."""
    rng = random.Random(f"{domain}-{seed}")
    words = DOMAIN_WORDS[domain]
    docs = []
    for i in range(n):
        length = rng.choice([rng.randint(1, 12), rng.randint(10, max_words)])
        docs.append(
            {
                "text": " ".join(rng.choice(words) for _ in range(length)),
                "id": f"{domain}-{i}",
                "source": f"{domain}_fixture",
                "domain": domain,
                "language": "en",
                "quality_score": (i % 3) / 2,
                "high_quality": i % 3 == 0,
            }
        )
    return docs


def write_prepared(prep_dir: Path, domain: str, docs: dict[str, list[dict]], shards: int = 2) -> Path:
    """Writes `docs` ({split: records}) as the TFDS dataset directory PREP_DIR/<domain>.

    Several shards per split so that reading in canonical order is actually tested.
    """
    target = prep_dir / domain
    target.mkdir(parents=True)
    template = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
    split_infos = []
    for split, records in docs.items():
        bounds = [len(records) * k // shards for k in range(shards + 1)]
        for k in range(shards):
            path = target / f"{domain}-{split}.tfrecord-{k:05d}-of-{shards:05d}"
            with tf.io.TFRecordWriter(str(path)) as writer:
                for record in records[bounds[k] : bounds[k + 1]]:
                    writer.write(FEATURES.serialize_example(record))
        split_infos.append(
            tfds.core.SplitInfo(
                name=split, shard_lengths=[bounds[k + 1] - bounds[k] for k in range(shards)], num_bytes=0
            )
        )
    tfds.folder_dataset.write_metadata(
        data_dir=target,
        features=FEATURES,
        split_infos=split_infos,
        filename_template=template,
        check_data=False,
        version="1.0.0",
    )
    return target


def train_tokenizer(out_dir: Path, vocab_size: int = 120) -> Path:
    """A SentencePiece model with the Gemma special ids, trained on the fixture words."""
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    lines = [d["text"] for domain in DOMAIN_WORDS for d in make_documents(domain, 50)]
    corpus.write_text("\n".join(lines) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out_dir / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        character_coverage=1.0,
        minloglevel=2,
    )
    return out_dir / "tokenizer.model"


def build_prepared(root: Path, n_docs: int = 60, validation_docs: int = 10) -> tuple[Path, Path]:
    """PREP_DIR with web, math and code, and a tokenizer: returns (prep_dir, vocab_path)."""
    prep_dir = root / "prep"
    prep_dir.mkdir(parents=True)
    for i, domain in enumerate(DOMAIN_WORDS):
        docs = make_documents(domain, n_docs + validation_docs, seed=i)
        write_prepared(prep_dir, domain, {"train": docs[:n_docs], "validation": docs[n_docs:]})
    return prep_dir, train_tokenizer(root / "tok")


def demo_mixture(seq_len: int = 64, interpolate: bool = False):
    """Two stages over all six tasks: general mix, then high-quality for the last 25%."""
    import ml_collections

    cfg = ml_collections.ConfigDict()
    cfg.tasks = ["web", "math", "code", "web_hq", "math_hq", "code_hq"]
    cfg.stages = [
        dict(
            name="general",
            start=0.0,
            weights={"web": 0.6, "code": 0.25, "math": 0.15},
            interpolate=interpolate,
        ),
        dict(name="anneal", start=0.75, weights={"web_hq": 0.4, "math_hq": 0.3, "code_hq": 0.3}),
    ]
    cfg.seq_len = seq_len
    cfg.bos = "document"
    cfg.seed = 1234
    return cfg


PACK_SEQ_LEN = 64

_MIXTURE_CONFIG = """
from configs.mixtures import base
from tests.support.mixtures import demo_mixture


def get_config():
    cfg = demo_mixture({seq_len})
    cfg.pack = base.pack_config()
    cfg.pack.rows_per_shard = 8  # several packing shards even on the tiny fixture
    return cfg
"""


def write_mixture_config(path: Path, seq_len: int = PACK_SEQ_LEN) -> Path:
    """A mixture config file (demo_mixture + the pack defaults) for the commands' --config."""
    path.write_text(_MIXTURE_CONFIG.format(seq_len=seq_len))
    return path


def run_module(module: str, *args: str, timeout: int = 600) -> str:
    """Runs `python -m module args` from the repository root; returns stdout, raises on failure."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(root))
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode:
        raise AssertionError(
            f"{module} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def pack_mixture(root: Path, prep_dir: Path, vocab: Path, *extra: str, seq_len: int = PACK_SEQ_LEN) -> Path:
    """Runs the pack command (DirectRunner) on prepared data; returns the packed directory."""
    config = write_mixture_config(root / "mixture_config.py", seq_len)
    out = root / "packed"
    run_module(
        "mixtures.pack",
        f"--config={config}",
        f"--prep_dir={prep_dir}",
        f"--tokenizer={vocab}",
        f"--output={out}",
        *extra,
    )
    return out


_PACKED: dict[str, tuple[Path, Path, Path]] = {}


def packed_fixture(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(prep_dir, vocab, packed_dir) built once per test session (packing takes ~20 s)."""
    if "demo" not in _PACKED:
        root = tmp_path_factory.mktemp("packed_fixture")
        prep_dir, vocab = build_prepared(root)
        _PACKED["demo"] = (prep_dir, vocab, pack_mixture(root, prep_dir, vocab))
    return _PACKED["demo"]
