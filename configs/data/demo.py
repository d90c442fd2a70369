"""The CPU demo: the embedded corpus (data_pipeline.demo_corpus) in runs/demo/corpus.

Package READMEs are markdown, not web pages: C4's terminal-punctuation and curly-brace rules
and FineWeb's line rules would drop most of them, so the demo relaxes those (the full config
keeps the papers' values).
"""

from __future__ import annotations

from configs.data import base


def get_config():
    config = base.get_config()
    config.inputs = [
        {
            "domain": domain,
            "glob": f"runs/demo/corpus/{domain}.jsonl",
            "format": "jsonl",
            "source": f"demo_{domain}",
        }
        for domain in ("web", "math", "code")
    ]
    config.output_dir = "runs/demo/prep"
    config.filters.web.c4.enabled = False
    config.filters.web.fineweb.enabled = False
    config.filters.web.gopher_quality.max_symbol_word_ratio = 0.5
    config.filters.web.gopher_quality.max_bullet_lines_ratio = 1.0
    config.near_dedup.num_perm = 64  # 16 bands x 4 rows: cheaper signatures, the same recall at 0.85
    config.near_dedup.bands = 16
    config.output.train_shards = 2
    config.split.validation_fraction = 0.05
    return config
