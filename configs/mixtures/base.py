"""Defaults of the offline packing job (`python -m mixtures.pack`), shared by every mixture config."""

import ml_collections


def pack_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            prep_dir="",  # required: --prep_dir (data_pipeline.prepare output)
            vocab_path="",  # required: --tokenizer (tokenizer.model)
            output="",  # required: --output, the packed directory the trainer reads (config.data.packed_dir)
            overwrite=False,  # --overwrite: replace an earlier pack in output (only what its manifest names)
            extra_tasks=(),  # "NAME=DIR": more tasks from prepared dataset dirs outside prep_dir (--extra_task)
            splits=("train", "validation"),
            rows_per_shard=1024,  # rows packed together; only a shard's last row may be short (fill >= 1 - 1/this)
            docs_per_read=20000,  # records per read work item (the unit of parallel tokenization)
            lookahead=64,  # DocumentPacker best-fit buffer
            max_padding=0.005,  # pad a row rather than cut a document when at most this share is left
            # Beam options; flags mixtures.pack does not define also go to Beam (--runner=DataflowRunner ...).
            # FnApiRunner is the DirectRunner's local engine, named directly because Beam 2.77's
            # DirectRunner first tries to download its Prism binary (no network at run time here).
            # direct_running_mode="multi_processing" + direct_num_workers=N spreads tokenization over N cores.
            runner=ml_collections.ConfigDict(
                dict(
                    runner="FnApiRunner",
                    direct_running_mode="in_memory",
                    direct_num_workers=1,
                    default_sdk_harness_log_level="WARNING",
                )
            ),
        )
    )
