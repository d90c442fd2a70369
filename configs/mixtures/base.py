"""Defaults of the offline packing job (`python -m mixtures.pack`), shared by every mixture config."""

import ml_collections


def pack_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        prep_dir="",    # required: --prep_dir (data_pipeline.prepare output)
        vocab_path="",  # required: --vocab_path (tokenizer.model)
        output="",      # required: --output, the packed directory the trainer reads (config.data.packed_dir)
        splits=("train", "validation"),
        rows_per_shard=1024,  # rows packed together; only a shard's last row may be short (fill >= 1 - 1/this)
        docs_per_read=20000,  # records per read work item (the unit of parallel tokenization)
        lookahead=64,         # DocumentPacker best-fit buffer
        max_padding=0.005,    # pad a row rather than cut a document when at most this share is left
        # Beam options; flags mixtures.pack does not define also go to Beam (--runner=DataflowRunner ...).
        runner=ml_collections.ConfigDict(dict(runner="DirectRunner", direct_running_mode="in_memory",
                                              default_sdk_harness_log_level="WARNING")),
    ))
