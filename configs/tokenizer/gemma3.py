"""Gemma 3-style tokenizer: 262,144 pieces (Gemma 3 report, arXiv:2503.19786: the Gemini 2.0
SentencePiece vocabulary, split digits, whitespace kept, byte fallback, more balanced across
languages), trained like configs/tokenizer/gemma.py with its control symbols.

configs/models/gemma3_1b.py has exactly 262,144 embedding rows; gemma3_4b's 262,208 add the
released model's image tokens, which a text-only run leaves unused. A sample needs enough
distinct text for SentencePiece to reach this size (config.sample.max_sentences).
"""

import ml_collections

from configs.tokenizer import gemma


def get_config() -> ml_collections.ConfigDict:
    config = gemma.get_config()
    config.output = "runs/gemma3/tokenizer"
    config.spm.vocab_size = 262_144
    return config
