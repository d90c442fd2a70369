"""Full-size Gemma tokenizer: 256000 pieces, as released (the model pads its embedding to 256128 rows).

To use the released vocabulary instead of training one, point at it:
    python -m tokenizer.train --config=configs/tokenizer/gemma.py \
        --config.model_path=/path/to/gemma/tokenizer.model --output DIR
"""

import ml_collections

from configs.tokenizer import demo

# Pieces 4..107 of the released vocabulary: with pad/eos/bos/unk at 0..3 these land on the same
# ids, so <start_of_turn> is 106 and <end_of_turn> is 107 as in the released tokenizer.
GEMMA_SYMBOLS = [
    "<mask>",
    "<2mass>",
    "[@BOS@]",
    *[f"<unused{i}>" for i in range(99)],
    "<start_of_turn>",
    "<end_of_turn>",
]


def get_config() -> ml_collections.ConfigDict:
    config = demo.get_config()
    config.inputs = ["runs/gemma/prep"]
    config.output = "runs/gemma/tokenizer"
    config.sample.domain_weights = ml_collections.ConfigDict({"web": 0.6, "math": 0.15, "code": 0.25})
    config.sample.max_sentences = 5_000_000
    config.sample.max_sentence_bytes = 4192
    config.spm.vocab_size = 256_000
    config.spm.character_coverage = 0.99995
    config.spm.num_threads = 1  # see bench/RESULTS.md (Tokenizer) on threads and determinism
    config.spm.user_defined_symbols = GEMMA_SYMBOLS
    return config
