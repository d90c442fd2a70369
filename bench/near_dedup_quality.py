"""Near-dedup recall and precision on real web documents with planted near-duplicates.

Each planted twin is a real document with a few words replaced until its word 5-gram
Jaccard with the original lies in [0.85, 0.97]. Recall: share of planted pairs of which
NearDedup rejects one member. Precision: share of rejected documents that have a twin
(any other document of the corpus) with Jaccard >= 0.5.

    .venv/bin/python bench/near_dedup_quality.py [--pairs 300] [--config.verify=False]
"""

from __future__ import annotations

import gzip
import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
from absl import app, flags
from apache_beam.options.pipeline_options import PipelineOptions
from ml_collections import config_flags

from data_pipeline.dedup import near
from data_pipeline.dedup.shingles import jaccard, shingle_set

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WEB_GLOBS = ("web/dolma-cc/*.json*.gz", "web/olmo-c4/*.json*.gz", "web/trafilatura/*.jsonl")

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Only when run as a script: the decontamination bench imports the loader below."""
    flags.DEFINE_integer("pairs", 300, "Planted near-duplicate pairs.")
    flags.DEFINE_integer("seed", 0, "Random seed for sampling and edits.")
    config_flags.DEFINE_config_dict("config", near.default_config(), "NearDedup config.")


def load_web_docs(min_words: int = 100) -> list[dict[str, str]]:
    """Real web documents of at least ``min_words`` words, unique text, from ../shared/data."""
    docs, seen = [], set()
    for pattern in WEB_GLOBS:
        for path in sorted(DATA.glob(pattern)):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as f:
                for i, line in enumerate(f):
                    text = json.loads(line).get("text", "")
                    if len(text.split()) >= min_words and text not in seen:
                        seen.add(text)
                        docs.append(
                            {
                                "id": f"{path.name}:{i}",
                                "text": text,
                                "source": "web",
                                "domain": "web",
                                "language": "en",
                            }
                        )
    return docs


def plant_twin(text: str, rng: random.Random) -> tuple[str, float] | None:
    """Replace random words until 5-gram Jaccard falls to a target in [0.85, 0.97]."""
    words = text.split(" ")
    target = rng.uniform(0.85, 0.97)
    original = shingle_set(text, 5)
    while True:
        pos = rng.randrange(len(words))
        words[pos] = f"edit{rng.randrange(10**6)}"
        edited = " ".join(words)
        similarity = jaccard(original, shingle_set(edited, 5))
        if similarity <= target:
            return (edited, similarity) if similarity >= 0.85 else None


def main(argv):
    del argv
    if not DATA.is_dir():
        sys.exit(f"skipped: {DATA} is absent (real sample data is needed for this measurement)")
    rng = random.Random(FLAGS.seed)
    docs = load_web_docs()
    pairs = []
    for doc in rng.sample(docs, min(FLAGS.pairs, len(docs))):
        planted = plant_twin(doc["text"], rng)
        if planted:
            twin = {**doc, "id": f"twin:{doc['id']}", "text": planted[0]}
            docs.append(twin)
            pairs.append((doc["id"], twin["id"], planted[1]))
    print(
        f"{len(docs)} documents, {len(pairs)} planted pairs (Jaccard {min(p[2] for p in pairs):.3f}-{max(p[2] for p in pairs):.3f})"
    )

    options = PipelineOptions(
        ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    )
    out_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"near_dedup_bench_{os.getpid()}"
    start = time.time()
    p = beam.Pipeline(options=options)
    _, rejected = p | beam.Create(docs) | near.NearDedup(FLAGS.config)
    _ = rejected | beam.Map(lambda r: r["id"]) | beam.io.WriteToText(str(out_dir / "rejected"))
    result = p.run()
    result.wait_until_finish()
    seconds = time.time() - start
    rejected_ids = {line.strip() for f in out_dir.glob("rejected*") for line in f.open()}
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}

    caught = sum(1 for a, b, _ in pairs if a in rejected_ids or b in rejected_ids)
    shingles = {d["id"]: shingle_set(d["text"], 5) for d in docs}
    postings = defaultdict(set)
    for doc_id, sh in shingles.items():
        for h in sh.tolist():
            postings[h].add(doc_id)
    with_twin = 0
    for doc_id in rejected_ids:
        others = set().union(*(postings[h] for h in shingles[doc_id].tolist())) - {doc_id}
        if any(jaccard(shingles[doc_id], shingles[o]) >= 0.5 for o in others):
            with_twin += 1
    recall = caught / len(pairs)
    precision = with_twin / max(1, len(rejected_ids))
    print(f"NearDedup on {len(docs)} docs in {seconds:.1f}s (DirectRunner, 2 workers); counters {counters}")
    print(f"recall    {recall:.4f}  ({caught}/{len(pairs)} planted pairs caught; target >= 0.95)")
    print(
        f"precision {precision:.4f}  ({with_twin}/{len(rejected_ids)} rejected have a twin with Jaccard >= 0.5; target >= 0.97)"
    )
    print(f"rejected beyond planted twins: {len(rejected_ids) - caught}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
