"""The data-prep job: raw corpora -> cleaned, deduplicated, decontaminated TFDS datasets.

  python -m data_pipeline.prepare [--config=configs/data/demo.py] [--input DOMAIN=GLOB ...]
      [--eval_set NAME=PATH ...] --output DIR [--overwrite] [any Beam pipeline option]

Without --config the defaults of configs/data/base.py apply. The stages are the literal
list in ``stages()``: read (dead letters for unreadable input) -> clean (normalise, filter,
redact PII) -> exact dedup -> near dedup -> decontamination -> quality; then per-domain
TFDS datasets, plus rejected/, dead_letter/, contamination.jsonl, contamination_report.md
and stats.json (layout in
docs/DESIGN.md). Every configured stage runs or the job fails; nothing is skipped quietly.
One run at a time holds the output folder; it writes into its own staging folder and
commits at the end (common/outputs.py) only if the run's checks pass
(``stats.findings``): an invariant violation, an input file that could not be read to the
end (unless --accept_incomplete_files) or inputs that hold no records leave the output
folder as it was and the run's outputs in its staging folder, with exit status 1. An
existing non-empty output folder is refused unless --overwrite, and even then only a
previous run's own outputs (listed in its OUTPUTS.json) are replaced. Flags that are not
ours go to Beam unchanged, so ``--runner=DataflowRunner --project=...`` runs the same job
on Dataflow.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam
import ml_collections
from absl import flags
from absl import logging as absl_logging
from apache_beam.options.pipeline_options import PipelineOptions

from common import checks, cli, fs
from common import outputs as run_outputs
from data_pipeline import progress, records, stats
from data_pipeline.clean.pii import Redactor
from data_pipeline.clean.stage import Clean
from data_pipeline.decontamination import controls
from data_pipeline.decontamination import report as decontamination_report
from data_pipeline.decontamination.decontaminate import Decontaminate
from data_pipeline.decontamination.eval_sets import load_eval_sets, parse_specs
from data_pipeline.dedup.exact import ExactDedup
from data_pipeline.dedup.near import NearDedup
from data_pipeline.filters.chain import build_chain
from data_pipeline.quality.scoring import ScoreQuality
from data_pipeline.readers import sources
from data_pipeline.writers import outputs, tfds_output

WORK_DIR = "_work"
PROGRESS_DIR = "progress"  # under WORK_DIR: the readers' running totals (data_pipeline.progress)
HITS = "hits"
CONTROLS = "controls"
REPORT = "contamination_report.md"


@dataclasses.dataclass
class StageResult:
    """What every stage returns: the records it kept, those it rejected, and side outputs."""

    kept: beam.PCollection
    rejected: beam.PCollection
    side: dict[str, beam.PCollection] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the job: ``make()`` builds its PTransform, which returns
    ``(kept, rejected, *side outputs named by side)``; a disabled stage passes records on."""

    name: str
    enabled: bool
    make: Callable[[], beam.PTransform]
    side: tuple[str, ...] = ()

    def apply(self, pcoll: beam.PCollection) -> StageResult:
        if not self.enabled:
            empty = {
                name: pcoll.pipeline | f"{self.name}Off{name}" >> beam.Create([])
                for name in ("rejected", *self.side)
            }
            return StageResult(pcoll, empty.pop("rejected"), empty)
        kept, rejected, *side = pcoll | self.name >> self.make()
        if len(side) != len(self.side):
            raise RuntimeError(f"stage {self.name}: returned {len(side)} side outputs, declared {self.side}")
        return StageResult(kept, rejected, dict(zip(self.side, side)))


class RunFailed(Exception):
    """The job ran but failed its checks: nothing was committed, its outputs stay in ``staging``."""

    def __init__(self, failures: list[str], stats: dict[str, Any], out: str, staging: str) -> None:
        super().__init__("\n".join(failures + [f"{out} is unchanged; this run's outputs are in {staging}"]))
        self.stats = stats


def redactor(config: ml_collections.ConfigDict) -> Redactor | None:
    """The configured PII redactor (None when ``pii.enabled`` is off)."""
    pii = {k: v for k, v in config.pii.items() if k != "enabled"}
    try:
        return Redactor(**pii) if config.pii.enabled else None
    except TypeError as e:
        raise checks.ConfigError(f"config.pii: {e}") from None


def stages(config: ml_collections.ConfigDict, domains: set[str], eval_specs: dict[str, str]) -> list[Stage]:
    """The job's stages, in order. The positive controls (data_pipeline/decontamination/controls.py) go through
    Decontaminate only: the earlier stages would judge their carrier, not the decontamination."""
    chains = {domain: build_chain(domain, config.filters) for domain in domains}
    clean_redactor = redactor(config)
    return [
        Stage("Clean", True, lambda: Clean(chains, clean_redactor, config.normalize.form)),
        Stage("ExactDedup", config.dedup.enabled, lambda: ExactDedup(config.dedup)),
        Stage("NearDedup", config.near_dedup.enabled, lambda: NearDedup(config.near_dedup)),
        Stage(
            "Decontaminate",
            config.decontamination.enabled,
            lambda: controls.WithControls(
                Decontaminate(config.decontamination, eval_specs), config.decontamination, eval_specs
            ),
            side=(HITS, CONTROLS),
        ),
        Stage("Quality", True, lambda: ScoreQuality(config.quality)),
    ]


def input_specs(config: ml_collections.ConfigDict) -> list[sources.InputSpec]:
    """``config.inputs``: dicts of InputSpec fields, or ``"DOMAIN=GLOB"`` strings (--input)."""
    specs = []
    for i, entry in enumerate(config.inputs):
        if not isinstance(entry, str):
            entry = dict(entry)
            unknown = set(entry) - {f.name for f in dataclasses.fields(sources.InputSpec)}
            checks.require(not unknown, f"inputs[{i}]", f"unknown fields {sorted(unknown)}")
        try:
            specs.append(
                sources.InputSpec.from_flag(entry) if isinstance(entry, str) else sources.InputSpec(**entry)
            )
        except ValueError as e:  # the spec's own checks name its field: "domain: must be one of ..."
            raise checks.ConfigError(f"config.inputs[{i}]: {e}") from None
    checks.require(bool(specs), "inputs", "no inputs; give some in the config or with --input DOMAIN=GLOB")
    names = [s.source for s in specs]
    checks.require(len(set(names)) == len(names), "inputs", "source names must be unique", names)
    checks.require(controls.SOURCE not in names, "inputs", f"source name {controls.SOURCE!r} is reserved")
    return specs


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the fields this module reads; the stages check their own sections."""
    checks.require(bool(config.output_dir), "output_dir", "must be set (or pass --output)")
    checks.require(
        0.0 <= config.split.validation_fraction < 1.0,
        "split.validation_fraction",
        "must be in [0, 1)",
        config.split.validation_fraction,
    )
    for field in ("train_shards", "validation_shards"):
        checks.positive(int(config.output[field]), f"output.{field}")
    for field in ("max_doc_bytes", "dead_letter_raw_bytes"):
        checks.positive(int(config.read[field]), f"read.{field}")
    checks.one_of(config.normalize.form, ("NFC", "NFKC", "NFD", "NFKD"), "normalize.form")
    model = config.quality.model_path
    checks.require(not model or fs.isfile(model), "quality.model_path", "no such file", model)


def build(
    p: beam.Pipeline,
    config: ml_collections.ConfigDict,
    specs: list[sources.InputSpec],
    eval_specs: dict[str, str],
    out: str,
) -> None:
    """Adds the whole job to ``p``, writing under ``out`` (the run's staging folder)."""
    work = fs.join(out, WORK_DIR)
    reads = [
        p
        | f"Read[{spec.source}]"
        >> sources.ReadSource(
            spec,
            int(config.read.max_doc_bytes),
            int(config.read.dead_letter_raw_bytes),
            fs.join(work, PROGRESS_DIR),
        )
        for spec in specs
    ]
    read_records = [r.records for r in reads] | "FlattenRecords" >> beam.Flatten()
    dead = [r[sources.DEAD_LETTER] for r in reads] | "FlattenDeadLetters" >> beam.Flatten()
    file_counts = [r[sources.FILE_COUNTS] for r in reads] | "FlattenFileCounts" >> beam.Flatten()
    rejections = [[r[records.REJECTED] for r in reads] | "FlattenReadRejections" >> beam.Flatten()]

    kept, side = read_records, {}
    for stage in stages(config, {s.domain for s in specs}, eval_specs):
        result = stage.apply(kept)
        kept = result.kept
        rejections.append(result.rejected)
        side.update(result.side)
    all_rejected = rejections | "FlattenRejected" >> beam.Flatten()
    hits = side[HITS]
    rejected_redactor = redactor(config)
    stored_rejected = (  # rejected text is kept for inspection, never with the PII the kept text loses
        all_rejected | "RedactRejected" >> beam.Map(rejected_redactor) if rejected_redactor else all_rejected
    )

    num_shards = {
        "train": int(config.output.train_shards),
        "validation": int(config.output.validation_shards),
    }
    shard_infos = kept | "WriteTfds" >> tfds_output.WriteTfdsShards(
        out, config.split.validation_fraction, num_shards
    )
    big = num_shards["train"]  # shards of the outputs that may be as large as the input
    _ = shard_infos | "WriteShardInfos" >> outputs.WriteJsonl(fs.join(work, "shards"), compress=False)
    _ = stored_rejected | "WriteRejected" >> outputs.WriteJsonl(
        fs.join(out, records.REJECTED, "rejected"), big
    )
    _ = dead | "WriteDeadLetters" >> outputs.WriteJsonl(fs.join(out, "dead_letter", "dead_letter"), big)
    _ = hits | "WriteContamination" >> outputs.WriteJsonl(
        fs.join(out, "contamination.jsonl"), exact=True, compress=False
    )

    inputs = [read_records, rejections[0], dead] | "FlattenInputs" >> beam.Flatten()
    violations = {
        stats.INPUT: inputs,
        stats.KEPT: kept,
        stats.REJECTED: all_rejected,
        stats.DEAD_LETTER: dead,
    } | "CheckIds" >> stats.CheckIds()
    counts = (
        [
            inputs | "CountInput" >> stats.CountBy(stats.INPUT),
            file_counts | "CountHeld" >> stats.CountBy(stats.HELD, value_fn=lambda c: c["held"]),
            *(
                file_counts | f"Count[{kind}]" >> stats.CountBy(kind, value_fn=lambda c, is_=is_: int(is_(c)))
                for kind, is_ in stats.FILE_KINDS.items()
            ),
            kept | "CountKept" >> stats.CountBy(stats.KEPT),
            kept
            | "CountRedactions" >> stats.CountBy(stats.REDACTIONS, value_fn=lambda r: r.get("redactions", 0)),
            all_rejected | "CountRejected" >> stats.CountBy(stats.REJECTED, detail_fn=lambda r: r["reason"]),
            dead | "CountDead" >> stats.CountBy(stats.DEAD_LETTER),
            hits | "CountHits" >> stats.CountBy(stats.CONTAMINATION, detail_fn=lambda h: h["eval_set"]),
            side[CONTROLS]
            | "CountControls"
            >> stats.CountBy(stats.CONTROL, detail_fn=lambda o: (o["eval_set"], o["variant"], o["caught"])),
            violations
            | "CountViolations" >> stats.CountBy(stats.ID_VIOLATION, detail_fn=lambda v: v["kind"]),
        ]
        | "FlattenCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "CountPairs" >> beam.MapTuple(lambda key, n: list(key) + [n])
    )
    _ = counts | "WriteCounts" >> outputs.WriteJsonl(fs.join(work, "counts"), compress=False)
    _ = violations | "Violations" >> _WriteExamples(fs.join(work, "violations"), stats.MAX_VIOLATION_EXAMPLES)
    for kind, is_ in stats.FILE_KINDS.items():
        _ = (
            file_counts
            | f"Filter[{kind}]" >> beam.Filter(is_)
            | f"Examples[{kind}]" >> _WriteExamples(fs.join(work, kind), stats.MAX_FILE_EXAMPLES)
        )


class _WriteExamples(beam.PTransform):
    """Up to ``n`` elements, for the driver to name in stats.json."""

    def __init__(self, prefix: str, n: int) -> None:
        super().__init__()
        self._prefix, self._n = prefix, n

    def expand(self, pcoll):
        return (
            pcoll
            | "Sample" >> beam.combiners.Sample.FixedSizeGlobally(self._n)
            | "Unbatch" >> beam.FlatMap(lambda batch: batch)
            | "Write" >> outputs.WriteJsonl(self._prefix, compress=False)
        )


def _metrics(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 - some runners do not report metrics; stats.json does not need them
        return {}
    return {
        f"{c.key.metric.namespace}/{c.key.metric.name}": int(c.committed or c.attempted or 0)
        for c in counters
    }


def pipeline_options(config: ml_collections.ConfigDict, beam_args: Sequence[str]) -> PipelineOptions:
    return PipelineOptions([f"--{k}={v}" for k, v in config.runner.items()] + list(beam_args))


COMMAND = "data_pipeline.prepare"


def prepare(config: ml_collections.ConfigDict, beam_args: Sequence[str] = ()) -> dict[str, Any]:
    """Runs the job; returns (and writes) stats.json's content. Raises RunFailed, leaving the
    output folder as it was, when the run fails its checks."""
    start = time.time()
    validate(config)
    specs = input_specs(config)
    input_files = sum(sources.check_matches(spec) for spec in specs)
    eval_specs = parse_specs(list(config.eval_sets))
    decon = config.decontamination
    if decon.enabled:  # fail now on an unreadable eval set, not on every worker
        items = load_eval_sets(eval_specs, decon)
        absl_logging.info(
            "decontamination: %d eval items from %s", len(items), sorted({i.eval_set for i in items})
        )
    out = fs.resolve(config.output_dir)
    with run_outputs.writing(
        out,
        command=COMMAND,
        field="config.output_dir",
        overwrite=bool(config.overwrite),
        say=absl_logging.warning,
    ) as staged:
        result_stats = _run(config, beam_args, specs, eval_specs, out, staged.path, start, input_files)
        failures, warnings = stats.findings(result_stats, bool(config.read.accept_incomplete_files))
        if config.decontamination.enabled:  # a run that cannot show its decontamination works fails
            failures += controls.failures(
                result_stats["controls"], float(config.decontamination.control_min_recall)
            )
        result_stats.update(failures=failures, warnings=warnings)
        fs.write_text(fs.join(staged.path, "stats.json"), stats.dumps(result_stats))
        if failures:
            staged.keep()
            raise RunFailed(failures, result_stats, out, staged.path)
        staged.commit()
    return result_stats


def _run(
    config: ml_collections.ConfigDict,
    beam_args: Sequence[str],
    specs: list[sources.InputSpec],
    eval_specs: dict[str, str],
    out: str,
    staging: str,
    start: float,
    input_files: int,
) -> dict[str, Any]:
    """Runs the pipeline into ``staging`` and writes the TFDS metadata; returns the stats."""
    for spec in specs:
        absl_logging.info(
            "input %s: domain=%s format=%s glob=%s", spec.source, spec.domain, spec.format, spec.glob
        )
    options = pipeline_options(config, beam_args)
    p = beam.Pipeline(options=options)
    build(p, config, specs, eval_specs, staging)
    absl_logging.info("running the pipeline (%s) ...", options.get_all_options()["runner"])
    work = fs.join(staging, WORK_DIR)
    with progress.Reporter(fs.join(work, PROGRESS_DIR), input_files, absl_logging.info):
        result = p.run()
        result.wait_until_finish()
    absl_logging.info("pipeline finished in %.1fs; writing TFDS metadata and stats", time.time() - start)

    num_shards = {
        "train": int(config.output.train_shards),
        "validation": int(config.output.validation_shards),
    }
    domains = sorted({s.domain for s in specs})
    tfds_output.write_metadata(
        staging, domains, outputs.read_jsonl_files(fs.join(work, "shards")), num_shards
    )
    for folder in (records.REJECTED, "dead_letter"):  # the layout holds them even when empty
        fs.makedirs(fs.join(staging, folder))
    hits_path = fs.join(staging, "contamination.jsonl")
    if not fs.exists(hits_path):
        fs.write_text(hits_path, "")
    violations = outputs.read_jsonl_files(fs.join(work, "violations"))
    counts, control_counts = [], []
    for kind, source, detail, n in outputs.read_jsonl_files(fs.join(work, "counts")):
        if kind == stats.CONTROL:
            control_counts.append((*detail, n))
        else:
            counts.append(((kind, source, detail), n))
    metrics = _metrics(result)
    extra = {
        "metrics": metrics,
        "dedup_clusters": {
            "exact": metrics.get("dedup/exact_duplicate_groups"),
            "near": metrics.get("near_dedup/clusters"),
        },
        "stages": [s.name for s in stages(config, set(domains), eval_specs) if s.enabled],
        "controls": controls.recall(control_counts),
        "datasets": {d: fs.join(out, d) for d in domains},
        "elapsed_s": round(time.time() - start, 1),
    }
    files = {kind: outputs.read_jsonl_files(fs.join(work, kind)) for kind in stats.FILE_KINDS}
    result_stats = stats.assemble(counts, {s.source: s.domain for s in specs}, violations, extra, files)
    fs.write_text(
        fs.join(staging, REPORT), decontamination_report.report(fs.read_jsonl(hits_path), extra["controls"])
    )
    fs.rmtree(work)
    return result_stats


def _define_extra_flags() -> None:
    flags.DEFINE_bool(
        "overwrite",
        None,
        "Replace the outputs of an earlier prepare run in --output "
        "(only what its OUTPUTS.json lists; sets config.overwrite).",
    )
    flags.DEFINE_bool(
        "accept_incomplete_files",
        None,
        "Commit even when input files could not be read to the end (their unreadable rest is a "
        "dead letter each), with a warning; sets config.read.accept_incomplete_files.",
    )


def main(config: ml_collections.ConfigDict, beam_args: list[str]) -> None:
    # Beam forwards every worker's INFO log; the job's own progress is logged at INFO.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.INFO)
    if flags.FLAGS.overwrite is not None:
        config.overwrite = flags.FLAGS.overwrite
    if flags.FLAGS.accept_incomplete_files is not None:
        config.read.accept_incomplete_files = flags.FLAGS.accept_incomplete_files
    failed = None
    try:
        result = prepare(config, beam_args)
    except RunFailed as e:
        result, failed = e.stats, e
    print(stats.format_table(result))
    for line in result["warnings"]:
        sys.stderr.write(f"warning: {line}\n")
    if failed:
        sys.exit(str(failed))
    print(
        f"outputs in {fs.resolve(config.output_dir)}: {', '.join(result['datasets'].values())}, rejected/, "
        f"dead_letter/, contamination.jsonl, {REPORT}, stats.json ({result['elapsed_s']}s)"
    )


def run() -> None:
    """Console entry point; flags we do not define are passed to Beam."""
    cli.run(
        main,
        doc=__doc__,
        default_config="data/base.py",
        shortcuts=[
            cli.Shortcut(
                "input",
                "inputs",
                f"DOMAIN=GLOB (repeatable); replaces the config's inputs. GLOB: {fs.PATTERN_HELP}.",
                multi=True,
            ),
            cli.Shortcut(
                "eval_set",
                "eval_sets",
                f"NAME=PATH of an eval set (repeatable); PATH may be a folder or a pattern: {fs.PATTERN_HELP}.",
                multi=True,
            ),
            cli.Shortcut("output", "output_dir", "Output folder (PREP).", deprecated=("output_dir",)),
        ],
        required=["output_dir"],
        define_extra_flags=_define_extra_flags,
        pass_unknown_flags=True,
    )


if __name__ == "__main__":
    run()
