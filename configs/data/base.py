"""Defaults for every data-prep job; ``demo.py`` and ``full.py`` start from these.

Filter thresholds are the papers' own (Gopher, C4, FineWeb, StarCoder) as datatrove uses
them; each filter is switched per domain with ``enabled``.
"""

from __future__ import annotations

import ml_collections

from common.domains import DOMAINS
from data_pipeline.decontamination import matching
from data_pipeline.dedup import exact, near
from data_pipeline.filters.chain import default_params


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Each: {domain, glob, format (auto = per file, by its extension | jsonl | parquet | text | tfds),
    # source, text_field, id_field, language_field, language, split, data_dir}, or a
    # "DOMAIN=GLOB" string; --input DOMAIN=GLOB (repeatable) replaces the list.
    config.inputs = []
    config.eval_sets = []  # "NAME=PATH" strings (--eval_set), decontaminated against with the built-ins
    config.output_dir = ""
    config.overwrite = False  # replace an earlier prepare run's outputs in output_dir (only those)
    # accept_incomplete_files: commit (with a warning) when an input file breaks off mid-way;
    # by default the run fails and leaves output_dir as it was.
    config.read = ml_collections.ConfigDict(
        {"max_doc_bytes": 1 << 22, "dead_letter_raw_bytes": 1 << 16, "accept_incomplete_files": False}
    )
    config.normalize = ml_collections.ConfigDict({"form": "NFC"})

    config.filters = ml_collections.ConfigDict()
    config.filters.min_chars = 200
    for domain, names in (
        ("web", ("language", "gopher_repetition", "gopher_quality", "c4", "fineweb")),
        ("math", ("math_density", "gopher_repetition")),
        ("code", ("code",)),
    ):
        config.filters[domain] = ml_collections.ConfigDict(
            {name: {"enabled": True, **default_params(name)} for name in names}
        )
    # LaTeX repeats structural lines (\item, \end{proof}) and short n-grams legitimately: on the
    # HoTT book and the Stacks project Gopher repetition dropped 59 of 169 chapter files.
    config.filters.math.gopher_repetition.enabled = False

    config.pii = ml_collections.ConfigDict(
        {
            "enabled": True,
            "email": True,
            "ip_address": True,
            "phone": True,
            "secrets": True,
            "secrets_domains": DOMAINS,  # keys and tokens leak into web pages and papers too
        }
    )
    config.dedup = exact.default_config()
    config.near_dedup = near.default_config()
    config.decontamination = matching.default_config()
    config.quality = ml_collections.ConfigDict({
        "model_path": "",  # data_pipeline.quality.classifier model; empty: the heuristic score (data_pipeline/quality/heuristic.py)
        "min_score": 0.0,  # drop documents scoring below (reason low_quality)
        "high_quality_percentile": 0.7,  # per domain, documents at or above this score quantile are high_quality
        "high_quality_min_score": -1.0,  # if >= 0, an absolute threshold instead of the percentile
    })  # fmt: skip
    config.split = ml_collections.ConfigDict({"validation_fraction": 0.02})
    config.output = ml_collections.ConfigDict({"train_shards": 16, "validation_shards": 1})
    config.runner = ml_collections.ConfigDict(
        {
            "runner": "DirectRunner",
            "direct_running_mode": "multi_processing",
            "direct_num_workers": 2,
            "default_sdk_harness_log_level": "WARNING",
        }
    )
    return config
