"""The data-prep job: raw corpora -> cleaned, deduplicated, decontaminated TFDS datasets.

  python -m data_pipeline.prepare --config=configs/data/demo.py [--input DOMAIN=GLOB ...]
      [--eval_set NAME=PATH ...] [--output_dir DIR] [any Beam pipeline option]

Stages (docs/DESIGN.md has the output layout): read (dead letters for unreadable input) ->
normalise + per-domain filters + PII -> exact dedup -> near dedup -> decontamination ->
quality score and high-quality mark -> per-domain TFDS datasets, plus rejected/,
dead_letter/, contamination.jsonl and stats.json. Flags that are not ours go to Beam
unchanged, so ``--runner=DataflowRunner --project=...`` runs the same job on Dataflow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import sys
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from ml_collections import config_flags

from data_pipeline import records, sources, stats, tfds_output
from data_pipeline.clean import REJECTED, CleanFn
from data_pipeline.filters.chain import build_chain
from data_pipeline.pii import Redactor
from data_pipeline.scoring import ScoreQuality

WORK_DIR = "_work"
OUTPUT_PATHS = ("rejected", "dead_letter", "contamination.jsonl", "stats.json", WORK_DIR, *records.DOMAINS)


def input_specs(config: ml_collections.ConfigDict, input_flags: Sequence[str]) -> list[sources.InputSpec]:
    """``--input`` flags replace the config's inputs (so a run needs no new config file)."""
    if input_flags:
        return [sources.InputSpec.from_flag(value) for value in input_flags]
    specs = []
    for i, entry in enumerate(config.inputs):
        entry = dict(entry)
        unknown = set(entry) - {f.name for f in dataclasses.fields(sources.InputSpec)}
        if unknown:
            raise ValueError(f"config.inputs[{i}]: unknown fields {sorted(unknown)}")
        specs.append(sources.InputSpec(**entry))
    if not specs:
        raise ValueError("config.inputs: no inputs; give some in the config or with --input DOMAIN=GLOB")
    names = [s.source for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"config.inputs: source names must be unique, got {names}")
    return specs


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the fields this module reads; the stages check their own sections."""
    if not config.output_dir:
        raise ValueError("config.output_dir: must be set (or pass --output_dir)")
    if not 0.0 <= config.split.validation_fraction < 1.0:
        raise ValueError(f"config.split.validation_fraction: must be in [0, 1), got {config.split.validation_fraction}")
    for field in ("train_shards", "validation_shards"):
        if int(config.output[field]) < 1:
            raise ValueError(f"config.output.{field}: must be >= 1, got {config.output[field]}")
    for field in ("max_doc_bytes", "dead_letter_raw_bytes"):
        if int(config.read[field]) < 1:
            raise ValueError(f"config.read.{field}: must be >= 1, got {config.read[field]}")
    if config.normalize.form not in ("NFC", "NFKC", "NFD", "NFKD"):
        raise ValueError(f"config.normalize.form: must be NFC, NFKC, NFD or NFKD, got {config.normalize.form!r}")


def _optional_stages(config: ml_collections.ConfigDict, eval_specs: dict[str, str]) -> tuple[list, list[str]]:
    """(PTransforms of the colleague-owned stages that are importable, names skipped)."""
    stages, skipped = [], []
    try:
        from data_pipeline.dedup import ExactDedup

        stages.append(("ExactDedup", ExactDedup(config.dedup)))
    except ImportError as e:
        skipped.append(f"exact_dedup ({e})")
    try:
        from data_pipeline.near_dedup import NearDedup

        stages.append(("NearDedup", NearDedup(config.near_dedup)))
    except ImportError as e:
        skipped.append(f"near_dedup ({e})")
    try:
        from data_pipeline.decontaminate import Decontaminate
        from data_pipeline.eval_sets import load_eval_sets

        items = load_eval_sets(eval_specs, config.decontamination) if config.decontamination.enabled else []
        stages.append(("Decontaminate", Decontaminate(config.decontamination, items)))
        if config.decontamination.enabled:
            print(f"decontamination: {len(items)} eval items from {sorted({i.eval_set for i in items})}")
    except ImportError as e:
        skipped.append(f"decontamination ({e})")
    return stages, skipped


def _write_jsonl(pcoll, prefix: str, label: str, single_file: bool = False):
    encoded = pcoll | f"Encode{label}" >> beam.Map(lambda e: json.dumps(e, ensure_ascii=False, sort_keys=True))
    if single_file:
        return encoded | f"Write{label}" >> beam.io.WriteToText(prefix, shard_name_template="")
    return encoded | f"Write{label}" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl.gz")


def build(p: beam.Pipeline, config: ml_collections.ConfigDict, specs: list[sources.InputSpec],
          eval_specs: dict[str, str]) -> list[str]:
    """Adds the whole job to ``p``; returns the names of stages skipped because not importable."""
    out = config.output_dir
    work = posixpath.join(out, WORK_DIR)
    chains = {domain: build_chain(domain, config.filters) for domain in {s.domain for s in specs}}
    try:
        redactor = Redactor(**{k: v for k, v in config.pii.items() if k != "enabled"}) if config.pii.enabled else None
    except TypeError as e:
        raise ValueError(f"config.pii: {e}") from None
    optional, skipped = _optional_stages(config, eval_specs)
    quality = ScoreQuality(config.quality)

    reads = [
        p | f"Read[{spec.source}]" >> sources.ReadSource(spec, int(config.read.max_doc_bytes), int(config.read.dead_letter_raw_bytes))
        for spec in specs
    ]
    read_records = [r.records for r in reads] | "FlattenRecords" >> beam.Flatten()
    dead = [r[sources.DEAD_LETTER] for r in reads] | "FlattenDeadLetters" >> beam.Flatten()
    rejected = [r[sources.REJECTED] for r in reads] | "FlattenReadRejections" >> beam.Flatten()

    cleaned = read_records | "Clean" >> beam.ParDo(CleanFn(chains, redactor, config.normalize.form)).with_outputs(
        REJECTED, main="kept"
    )
    kept, rejections, hits = cleaned.kept, [rejected, cleaned[REJECTED]], []
    for name, stage in optional:
        result = kept | name >> stage
        kept, rejections = result[0], rejections + [result[1]]
        hits.extend(result[2:])
    kept, low_quality = kept | "Quality" >> quality
    rejections.append(low_quality)
    all_rejected = rejections | "FlattenRejected" >> beam.Flatten()
    all_hits = (hits or [p | "NoHits" >> beam.Create([])]) | "FlattenHits" >> beam.Flatten()

    num_shards = {"train": int(config.output.train_shards), "validation": int(config.output.validation_shards)}
    shard_infos = kept | "WriteTfds" >> tfds_output.WriteTfdsShards(out, config.split.validation_fraction, num_shards)
    _write_jsonl(shard_infos, posixpath.join(work, "shards"), "ShardInfos")
    _write_jsonl(all_rejected, posixpath.join(out, "rejected", "rejected"), "Rejected")
    _write_jsonl(dead, posixpath.join(out, "dead_letter", "dead_letter"), "DeadLetters")
    _write_jsonl(all_hits, posixpath.join(out, "contamination.jsonl"), "Contamination", single_file=True)

    inputs = [read_records, rejected, dead] | "FlattenInputs" >> beam.Flatten()
    violations = {stats.INPUT: inputs, stats.KEPT: kept, stats.REJECTED: all_rejected, stats.DEAD_LETTER: dead} | "CheckIds" >> stats.CheckIds()
    counts = (
        [
            inputs | "CountInput" >> stats.CountBy(stats.INPUT),
            kept | "CountKept" >> stats.CountBy(stats.KEPT),
            kept | "CountRedactions" >> stats.CountBy(stats.REDACTIONS, value_fn=lambda r: r.get("redactions", 0)),
            all_rejected | "CountRejected" >> stats.CountBy(stats.REJECTED, detail_fn=lambda r: r["reason"]),
            dead | "CountDead" >> stats.CountBy(stats.DEAD_LETTER),
            all_hits | "CountHits" >> stats.CountBy(stats.CONTAMINATION, detail_fn=lambda h: h["eval_set"]),
            violations | "CountViolations" >> stats.CountBy(stats.ID_VIOLATION, detail_fn=lambda v: v["kind"]),
        ]
        | "FlattenCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "CountPairs" >> beam.MapTuple(lambda key, n: list(key) + [n])
    )
    _write_jsonl(counts, posixpath.join(work, "counts"), "Counts")
    examples = violations | "SampleViolations" >> beam.combiners.Sample.FixedSizeGlobally(stats.MAX_VIOLATION_EXAMPLES)
    _write_jsonl(examples | "Unbatch" >> beam.FlatMap(lambda batch: batch), posixpath.join(work, "violations"), "Violations")
    return skipped


def _read_jsonl_files(prefix: str) -> list[Any]:
    import gzip

    rows = []
    for metadata in FileSystems.match([prefix + "*"])[0].metadata_list:
        with FileSystems.open(metadata.path, compression_type="uncompressed") as raw:
            data = raw.read()
        if metadata.path.endswith(".gz"):
            data = gzip.decompress(data)
        rows.extend(json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip())
    return rows


def _clear_outputs(out: str) -> None:
    """Removes what a previous run wrote here (only our own paths), so no stale shard survives."""
    stale = [posixpath.join(out, name) for name in OUTPUT_PATHS if FileSystems.exists(posixpath.join(out, name))]
    if stale:
        FileSystems.delete(stale)


def _metrics(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 - some runners do not report metrics; stats.json does not need them
        return {}
    return {f"{c.key.metric.namespace}/{c.key.metric.name}": int(c.committed or c.attempted or 0) for c in counters}


def prepare(config: ml_collections.ConfigDict, input_flags: Sequence[str] = (), eval_flags: Sequence[str] = (),
            beam_args: Sequence[str] = ()) -> dict[str, Any]:
    """Runs the job; returns (and writes) stats.json's content."""
    from data_pipeline.eval_sets import parse_specs

    start = time.time()
    validate(config)
    specs = input_specs(config, list(input_flags))
    for spec in specs:
        sources.check_matches(spec)
    eval_specs = parse_specs(list(eval_flags))
    out = config.output_dir
    runner_args = [f"--{k}={v}" for k, v in config.runner.items()]
    options = PipelineOptions(runner_args + list(beam_args))
    _clear_outputs(out)
    for spec in specs:
        print(f"input {spec.source}: domain={spec.domain} format={spec.format} glob={spec.glob}")
    p = beam.Pipeline(options=options)
    skipped = build(p, config, specs, eval_specs)
    for name in skipped:
        print(f"WARNING: stage skipped, module not available: {name}")
    print(f"running the pipeline ({options.get_all_options()['runner']}) ...", flush=True)
    result = p.run()
    result.wait_until_finish()
    print(f"pipeline finished in {time.time() - start:.1f}s; writing TFDS metadata and stats", flush=True)

    work = posixpath.join(out, WORK_DIR)
    num_shards = {"train": int(config.output.train_shards), "validation": int(config.output.validation_shards)}
    domains = sorted({s.domain for s in specs})
    tfds_output.write_metadata(out, domains, _read_jsonl_files(posixpath.join(work, "shards")), num_shards)
    violations = _read_jsonl_files(posixpath.join(work, "violations"))
    counts = [((kind, source, detail), n) for kind, source, detail, n in _read_jsonl_files(posixpath.join(work, "counts"))]
    metrics = _metrics(result)
    extra = {
        "metrics": metrics,
        "dedup_clusters": {"exact": metrics.get("dedup/exact_duplicate_groups"), "near": metrics.get("near_dedup/clusters")},
        "stages_skipped": skipped,
        "datasets": {d: posixpath.join(out, d) for d in domains},
        "elapsed_s": round(time.time() - start, 1),
    }
    result_stats = stats.assemble(counts, {s.source: s.domain for s in specs}, violations, extra)
    with FileSystems.create(posixpath.join(out, "stats.json")) as f:
        f.write(stats.dumps(result_stats).encode("utf-8"))
    FileSystems.delete([work])
    return result_stats


FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined when run as a command, so importing this module defines no flags."""
    config_flags.DEFINE_config_file("config", None, "Data-prep config file, e.g. configs/data/demo.py.")
    flags.DEFINE_multi_string("input", [], "DOMAIN=GLOB (repeatable); replaces the config's inputs.")
    flags.DEFINE_multi_string("eval_set", [], "NAME=PATH of an eval set to decontaminate against (repeatable).")
    flags.DEFINE_string("output_dir", None, "Output folder (overrides config.output_dir).")


def main(argv: list[str]) -> None:
    # Beam forwards every worker's INFO log; our own progress lines are printed instead.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)
    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/data/demo.py")
    if FLAGS.output_dir:
        config.output_dir = FLAGS.output_dir
    result = prepare(config, FLAGS.input, FLAGS.eval_set, argv[1:])
    print(stats.format_table(result))
    print(f"outputs in {config.output_dir}: {', '.join(result['datasets'].values())}, rejected/, dead_letter/, "
          f"contamination.jsonl, stats.json ({result['elapsed_s']}s)")
    if not result["invariant"]["ok"]:
        sys.exit("invariant violated: input != kept + rejected + dead_letter (see stats.json)")


def run() -> None:
    """Console entry point; flags we do not define are passed to Beam."""
    _define_flags()
    app.run(main, flags_parser=lambda argv: flags.FLAGS(argv, known_only=True))


if __name__ == "__main__":
    run()
