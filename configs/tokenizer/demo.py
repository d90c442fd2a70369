"""Tokenizer for the CPU demo: a small Gemma-style BPE vocabulary trained in seconds."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # An existing SentencePiece model (e.g. the released Gemma tokenizer.model) to use as is;
    # when set, nothing is sampled or trained.
    config.model_path = ""
    # [domain=]path: PREP_DIR with one TFDS dataset per domain, TFDS dirs, JSONL or text files.
    config.inputs = ["runs/demo/prep"]
    config.split = "train"  # TFDS split to sample from
    config.output = "runs/demo/tokenizer"
    config.overwrite = False  # replace an earlier tokenizer in `output` (its three files only)

    config.sample = ml_collections.ConfigDict()
    config.sample.domain_weights = ml_collections.ConfigDict({"web": 0.4, "math": 0.3, "code": 0.3})
    config.sample.max_sentences = 4000
    config.sample.max_sentence_bytes = 2048
    config.sample.max_documents_per_domain = 0  # 0: stream every document
    config.sample.seed = 0

    config.spm = ml_collections.ConfigDict()
    config.spm.vocab_size = 4096
    config.spm.character_coverage = 0.9995
    config.spm.max_sentencepiece_length = 16
    config.spm.num_threads = 1  # single-threaded: byte-identical models for the same config
    config.spm.user_defined_symbols = ["<start_of_turn>", "<end_of_turn>"]
    config.spm.control_symbols = []
    return config
