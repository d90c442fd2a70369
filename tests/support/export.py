"""Shared helpers for the export tests: a tiny SentencePiece model and random tiny Gemmas."""

import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece as spm

from configs.models import tiny
from pretrain.model.transformer import TransformerConfig
from tokenizer.train import GEMMA_SPM_FLAGS

TOKENIZER_PIECES = 300  # the model below has more embedding rows, so export must slice


def train_tokenizer(directory: Path) -> Path:
    """A 300-piece BPE model with the project's Gemma settings (byte fallback, ids 0-3 special)."""
    words = ["gemma", "model", "token", "export", "packed", "segment", "rotary", "norm", "flax"]
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, 8)) + f" {i}" for i in range(400)]
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "tokenizer"),
        vocab_size=TOKENIZER_PIECES,
        minloglevel=2,
        **GEMMA_SPM_FLAGS,
    )
    return directory / "tokenizer.model"


VARIED_TEXT = [
    "naïve café Größe",
    "日本語のテキスト 漢字",
    "Ελληνικά и русский",
    "emoji 😀🎉 ✓",
    "∑∫√π ≤ ≥",
    "tab\tseparated\tcolumns",
    "    indented  code  = [1, 22, 333]",
    "trailing   ",
    "1234567890 3.14159 -42",
    "no\u00a0break",
    "<start_of_turn>user",
]


def train_varied_tokenizer(directory: Path, vocab_size: int = 1000) -> Path:
    """A BPE model with the project's settings trained on Python's own modules and mixed-script
    lines: whitespace-run, digit, multi-byte and byte-fallback pieces all occur."""
    modules = sorted(Path(os.__file__).parent.glob("[a-m]*.py"))[:25]
    rng = np.random.default_rng(0)
    lines = [line for module in modules for line in module.read_text(encoding="utf-8").splitlines()]
    lines += [" ".join(rng.choice(VARIED_TEXT, 3)) for _ in range(2000)]
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "tokenizer"),
        vocab_size=vocab_size,
        character_coverage=0.9995,  # rare characters left to byte fallback
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        minloglevel=2,
        **GEMMA_SPM_FLAGS,
    )
    return directory / "tokenizer.model"


def tiny_config(num_kv_heads: int, **overrides) -> TransformerConfig:
    values = tiny.get_config().to_dict() | dict(
        vocab_size=320, embed_dim=64, num_kv_heads=num_kv_heads, head_dim=16, hidden_dim=96, max_seq_len=128
    )
    return TransformerConfig.from_config_dict(values | overrides)


def random_params(config: TransformerConfig, seed: int = 0) -> dict:
    """Initialised params with the (zero-initialised) norm scales randomised too."""
    from pretrain.model.transformer import Transformer

    tokens = jnp.zeros((1, 8), jnp.int32)
    params = nn.unbox(Transformer(config).init(jax.random.key(seed), tokens, tokens, tokens)["params"])
    key = jax.random.key(seed + 1)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: (
            x + 0.3 * jax.random.normal(jax.random.fold_in(key, len(str(path))), x.shape)
            if "scale" in str(path)
            else x
        ),
        params,
    )


@jax.jit
def lively(params, seed: int = 7):
    """Random weights (norm scales too) whose blocks outweigh the tied embedding: a fresh init
    mostly repeats its last input token, which would make "equal to the reference" a weak check."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    key = jax.random.key(seed)
    noisy = [
        x
        if "embedder" in str(path)
        else x
        + jax.random.normal(jax.random.fold_in(key, i), x.shape) / np.sqrt(x.shape[-1] if x.ndim > 1 else 1)
        for i, (path, x) in enumerate(leaves)
    ]
    return jax.tree_util.tree_unflatten(tree, noisy)
