"""Packs a mixture's SeqIO tasks offline into fixed-length rows (Apache Beam).

    python -m mixtures.pack --config=configs/mixtures/demo_two_stage.py \\
        --prep_dir=PREP --tokenizer=TOK/tokenizer.model --output=PACKED [--overwrite] [any Beam option]

For every task of the mixture and every split in `config.pack.splits`, the job reads the
task's documents through the task itself (same source, preprocessors and vocabulary as
`mixtures.tasks`), shuffles them with `config.seed`, packs them into rows of
`config.seq_len` tokens with `DocumentPacker` (long documents continue in the next rows,
nothing is dropped) and writes the rows to ArrayRecord files with an index and stats
(`mixtures.manifest`). The trainer then only reads rows (`mixtures.stream`). The run
writes into a staging folder and commits at the end (common/outputs.py): PACKED may
hold an earlier pack only with `--overwrite`, and then only the files its OUTPUTS.json
lists are replaced.
`--extra_task=NAME=DIR` (repeatable) packs one more task from a prepared dataset directory
outside PREP (another prepare run's `PREP2/math`, say): a candidate dataset for an anneal.

How it distributes (why the fill stays high): documents are read in ranges of
`config.pack.docs_per_read` records (one work item each, so reading and tokenizing spread
over workers), each document gets a 64-bit key from (seed, task, split, index), and the
key picks one of S packing shards per (task, split), S = tokens / (seq_len *
rows_per_shard) from a first count of the tokens. Each shard sorts its documents by key
(the seeded shuffle) and packs them sequentially. Only a shard's last row may be short, so
the fill is >= 1 - 1/rows_per_shard minus the packer's own <= 0.5% padding: >= 99% at the
default 1024 rows per shard. Paths go through common/fs, files are written to a local
temp file and copied, so the same job runs on Dataflow (`--runner=DataflowRunner ...`;
flags the job does not define go to Beam).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import ml_collections
import numpy as np
import seqio
import tensorflow as tf
from absl import flags
from absl import logging as absl_logging
from apache_beam.options.pipeline_options import PipelineOptions

from common import checks, cli, fs, outputs
from common.parsers import parse_assignment
from data_pipeline import prepared
from mixtures import manifest as manifest_lib
from mixtures import rows
from mixtures import tasks as tasks_lib
from mixtures.document_packer import DocumentPacker
from mixtures.schedule import Schedule
from tokenizer.model_file import model_sha256
from tokenizer.vocab import load_vocabulary

Key = tuple[str, str]  # (task, split)


# Stage starts become steps only with the trainer's total_steps; any large count checks the rest.
SCHEDULE_CHECK_STEPS = 1_000_000


def validate(config: ml_collections.ConfigDict) -> None:
    p = config.pack
    checks.positive(config.seq_len, "seq_len")
    checks.require(bool(config.tasks), "tasks", "must name at least one task", config.tasks)
    checks.require(bool(p.splits), "pack.splits", "must name at least one split", p.splits)
    if config.get("stages"):  # the weights every reader of these rows will be given (finite, >= 0)
        Schedule.from_config(config, SCHEDULE_CHECK_STEPS, "config")
    checks.positive(p.rows_per_shard, "pack.rows_per_shard")
    checks.positive(p.docs_per_read, "pack.docs_per_read")
    checks.positive(p.lookahead, "pack.lookahead")
    checks.require(0 <= p.max_padding < 1, "pack.max_padding", "must be in [0, 1)", p.max_padding)
    checks.require(
        fs.isdir(p.prep_dir),
        "pack.prep_dir",
        "must be a prepared-data directory (python -m data_pipeline.prepare)",
        p.prep_dir,
    )
    try:
        extra = extra_tasks(config)
    except ValueError as e:
        raise checks.ConfigError(f"config.pack.extra_tasks: {e}") from None
    for name, path in extra.items():
        checks.require(
            prepared.is_dataset_dir(path),
            "pack.extra_tasks",
            f"{name}: must be a prepared dataset directory (PREP/<domain>, with dataset_info.json)",
            path,
        )
    checks.require(fs.isfile(p.vocab_path), "pack.vocab_path", "must be a tokenizer.model file", p.vocab_path)


def extra_tasks(config: ml_collections.ConfigDict) -> dict[str, str]:
    """{NAME: dataset dir} of `pack.extra_tasks` ("NAME=DIR" strings)."""
    pairs = [parse_assignment(spec, "extra_task", right="DIR") for spec in config.pack.extra_tasks]
    return {name: fs.resolve(path) for name, path in pairs}


def packed_tasks(config: ml_collections.ConfigDict) -> list[str]:
    """The mixture's tasks, then the extra tasks it does not name."""
    return list(dict.fromkeys([*config.tasks, *extra_tasks(config)]))


def document_key(seed: int, task: str, split: str, index: int) -> int:
    """The document's place in the seeded shuffle, and (mod shards) its packing shard."""
    return int.from_bytes(
        hashlib.blake2b(f"{seed}:{task}:{split}:{index}".encode(), digest_size=8).digest(), "little"
    )


def num_shards(tokens: int, seq_len: int, rows_per_shard: int) -> int:
    return max(1, tokens // (seq_len * rows_per_shard))


class _TaskDoFn(beam.DoFn):
    """Registers the mixture's SeqIO tasks once per worker (the registry is per process)."""

    def __init__(self, prep_dir: str, vocab_path: str, bos: str, extra: dict[str, str]):
        self.prep_dir, self.vocab_path, self.bos, self.extra = prep_dir, vocab_path, bos, extra

    def setup(self) -> None:
        tasks_lib.register_tasks(self.prep_dir, self.vocab_path, bos=self.bos, extra=self.extra)


class ReadDocuments(_TaskDoFn):
    """(task, split, lo, hi) -> ((task, split), (key, tokens)) for records [lo, hi) of the split."""

    def __init__(self, prep_dir: str, vocab_path: str, bos: str, extra: dict[str, str], seed: int):
        super().__init__(prep_dir, vocab_path, bos, extra)
        self.seed = seed
        self.documents = beam.metrics.Metrics.counter("pack", "documents")
        self.tokens = beam.metrics.Metrics.counter("pack", "tokens_in")

    def process(self, item: tuple[str, str, int, int]) -> Iterator[tuple[Key, tuple[int, np.ndarray]]]:
        task_name, split, lo, hi = item
        for index, tokens in read_documents(task_name, split, lo, hi):
            self.documents.inc()
            self.tokens.inc(len(tokens))
            yield (task_name, split), (document_key(self.seed, task_name, split, index), tokens)


def read_documents(task_name: str, split: str, lo: int, hi: int) -> Iterator[tuple[int, np.ndarray]]:
    """(record index, token ids) of records [lo, hi) of a task's split, through its preprocessors."""
    task = seqio.get_mixture_or_task(task_name)
    source = task.source
    ds = prepared.read_split(
        source.dataset_dir, f"{split}[{lo}:{hi}]", one_file_at_a_time=True, builder=source.builder
    )
    ds = ds.enumerate(lo).map(lambda k, ex: {**ex, tasks_lib.INDEX_KEY: k})
    ds = task.preprocess_postcache(task.preprocess_precache(ds), sequence_length=None)
    next_record = lo
    try:
        for ex in ds.as_numpy_iterator():
            next_record = int(ex[tasks_lib.INDEX_KEY]) + 1
            if len(ex["targets"]):
                yield int(ex[tasks_lib.INDEX_KEY]), ex["targets"].astype(np.int32)
    except tf.errors.DataLossError as e:  # TensorFlow names the byte offset, not the file
        files = source.builder.info.splits[f"{split}[{lo}:{hi}]"].file_instructions
        ends = lo + np.cumsum([f.take for f in files])
        at = int(np.searchsorted(ends, next_record, side="right"))
        file = files[at].filename if at < len(files) else f"a file in {source.dataset_dir}"
        reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*", "", str(e.message).splitlines()[0])  # TF's op names
        raise RuntimeError(
            f"{DAMAGED} {file} ({reason}; at or after record {next_record} of {task_name}/{split}); "
            f"{DAMAGED_ADVICE}"
        ) from None


# A damaged prepared file, named by the worker; Beam re-raises a worker's error as its text,
# so `pack` finds the line again by these words and makes it the command's one line.
DAMAGED = "prepared data unreadable:"
DAMAGED_ADVICE = "restore the file, or prepare the data again"


class DamagedPreparedData(checks.ConfigError):
    """A prepared file that does not read to the end; the command prints the one line naming
    it and exits 2 (rerunning cannot help), OUTPUT untouched."""


class PackShard(beam.DoFn):
    """((task, split, shard), documents) -> one ArrayRecord file of packed rows, and its stats."""

    def __init__(self, output: str, seq_len: int, lookahead: int, max_padding: float):
        self.output, self.seq_len, self.lookahead, self.max_padding = output, seq_len, lookahead, max_padding
        self.rows = beam.metrics.Metrics.counter("pack", "rows")

    def process(self, element, shards: dict[Key, int]) -> Iterator[dict[str, Any]]:
        from array_record.python.array_record_module import ArrayRecordWriter

        (task, split, shard), documents = element
        documents = sorted(documents, key=lambda d: d[0])  # the seeded shuffle
        packer = DocumentPacker(documents, self.seq_len, self.lookahead, self.max_padding)
        relative = manifest_lib.shard_path(split, task, shard, shards[(task, split)])
        digest = hashlib.sha256()
        stats = dict(rows=0, tokens_out=0, cut_documents=0)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "rows" + manifest_lib.RECORD_SUFFIX)
            writer = ArrayRecordWriter(local, manifest_lib.WRITER_OPTIONS)
            for row in iter(packer.next_row, []):
                record = rows.encode(row)
                writer.write(record)
                digest.update(record)
                stats["rows"] += 1
                stats["tokens_out"] += sum(p.end - p.start for p in row)
                stats["cut_documents"] += int(not row[-1].ends_document)
            writer.close()
            identity = manifest_lib.file_identity(local)  # what readers check at open
            target = fs.join(self.output, relative)
            fs.makedirs(fs.dirname(target))
            fs.copy(local, target)
        self.rows.inc(stats["rows"])
        absl_logging.info("packed %s: %d rows", relative, stats["rows"])
        yield dict(
            task=task,
            split=split,
            shard=shard,
            path=relative,
            sha256=digest.hexdigest(),
            **identity,
            documents=packer.documents_in,
            tokens_in=packer.tokens_in,
            **stats,
        )


def manifest_header(config: ml_collections.ConfigDict, vocab: dict[str, Any]) -> dict[str, Any]:
    """What the rows were packed with (plain values, so it travels to a Beam worker)."""
    return dict(
        format=manifest_lib.FORMAT,
        seq_len=int(config.seq_len),
        seed=int(config.seed),
        bos=config.bos,
        vocab=vocab,
        tasks=packed_tasks(config),
        split_names=list(config.pack.splits),
        settings=dict(
            rows_per_shard=int(config.pack.rows_per_shard),
            lookahead=int(config.pack.lookahead),
            max_padding=float(config.pack.max_padding),
        ),
    )


def assemble_manifest(
    shard_stats: list[dict[str, Any]], header: dict[str, Any], read_tokens: dict[Key, int]
) -> dict[str, Any]:
    """The manifest (without its fingerprint): per split and task, files in index order and stats."""
    splits: dict[str, dict[str, Any]] = {}
    for split in header["split_names"]:
        splits[split] = {}
        for task in header["tasks"]:
            mine = sorted(
                (s for s in shard_stats if (s["task"], s["split"]) == (task, split)), key=lambda s: s["shard"]
            )
            totals = {
                k: sum(s[k] for s in mine)
                for k in ("rows", "documents", "tokens_in", "tokens_out", "cut_documents")
            }
            totals["tokens_read"] = int(read_tokens.get((task, split), 0))
            totals["fill"] = (
                totals["tokens_out"] / (totals["rows"] * header["seq_len"]) if totals["rows"] else None
            )
            totals["files"] = [
                dict(
                    path=s["path"],
                    rows=s["rows"],
                    tokens=s["tokens_out"],
                    sha256=s["sha256"],
                    **{k: s[k] for k in ("bytes", "sample_sha256") if k in s},
                )
                for s in mine
            ]
            splits[split][task] = totals
    return {**{k: v for k, v in header.items() if k != "split_names"}, "splits": splits}


def _write_manifest(
    shard_stats: list[dict[str, Any]], output: str, header: dict[str, Any], read_tokens: dict[Key, int]
) -> None:
    manifest_lib.write(output, assemble_manifest(shard_stats, header, read_tokens))


def work_items(config: ml_collections.ConfigDict) -> list[tuple[str, str, int, int]]:
    """(task, split, lo, hi) record ranges covering every split of every task."""
    try:
        registered = tasks_lib.register_tasks(
            config.pack.prep_dir, config.pack.vocab_path, bos=config.bos, extra=extra_tasks(config)
        )
    except checks.ConfigError as e:  # names its argument: prep_dir or extra_tasks
        raise checks.ConfigError(f"config.pack.{e}") from None
    missing = [t for t in config.tasks if t not in registered]
    checks.require(
        not missing,
        "tasks",
        f"{missing} have no prepared data under {config.pack.prep_dir} (registered: {registered})",
        list(config.tasks),
    )
    import seqio

    items = []
    for task in packed_tasks(config):
        source = seqio.get_mixture_or_task(task).source
        for split in config.pack.splits:
            n = source.num_input_examples(split) if split in source.splits else 0
            step = int(config.pack.docs_per_read)
            items += [(task, split, lo, min(lo + step, n)) for lo in range(0, n, step)]
    return items


def build(
    p: beam.Pipeline,
    config: ml_collections.ConfigDict,
    items: list[tuple[str, str, int, int]],
    vocab: dict[str, Any],
    output: str,
) -> None:
    """The job's stages: read+tokenize -> count -> key to shards -> pack per shard -> manifest
    in `output` (the run's staging folder)."""
    pc = config.pack
    seq_len, rows_per_shard = int(config.seq_len), int(pc.rows_per_shard)
    documents = (
        p
        | "WorkItems" >> beam.Create(items)
        | "Spread" >> beam.Reshuffle()
        | "ReadAndTokenize"
        >> beam.ParDo(
            ReadDocuments(pc.prep_dir, pc.vocab_path, config.bos, extra_tasks(config), int(config.seed))
        )
    )
    read_tokens = (
        documents
        | "Lengths" >> beam.MapTuple(lambda key, doc: (key, len(doc[1])))
        | "TokensPerTask" >> beam.CombinePerKey(sum)
    )
    shards = read_tokens | "Shards" >> beam.MapTuple(
        lambda key, n: (key, num_shards(n, seq_len, rows_per_shard))
    )
    shard_stats = (
        documents
        | "ToShard"
        >> beam.Map(lambda kv, s: ((*kv[0], kv[1][0] % s[kv[0]]), kv[1]), s=beam.pvalue.AsDict(shards))
        | "GroupShards" >> beam.GroupByKey()
        | "Pack"
        >> beam.ParDo(
            PackShard(output, seq_len, int(pc.lookahead), float(pc.max_padding)),
            shards=beam.pvalue.AsDict(shards),
        )
    )
    _ = (
        shard_stats
        | "AllStats" >> beam.combiners.ToList()
        | "Manifest"
        >> beam.Map(
            _write_manifest,
            output=output,
            header=manifest_header(config, vocab),
            read_tokens=beam.pvalue.AsDict(read_tokens),
        )
    )


def vocab_info(vocab_path: str) -> dict[str, Any]:
    return dict(
        path=vocab_path, size=int(load_vocabulary(vocab_path).vocab_size), sha256=model_sha256(vocab_path)
    )


def pack(config: ml_collections.ConfigDict, beam_args: Iterable[str] = ()) -> dict[str, Any]:
    """Runs the job; returns the manifest it wrote."""
    pc = config.pack
    with config.unlocked():
        pc.prep_dir, pc.vocab_path, pc.output = (
            fs.resolve(pc.prep_dir),
            fs.resolve(pc.vocab_path),
            fs.resolve(pc.output),
        )
    validate(config)
    items = work_items(config)
    with outputs.writing(
        pc.output,
        command="mixtures.pack",
        field="config.pack.output",
        overwrite=bool(pc.overwrite),
        say=absl_logging.warning,
    ) as staged:
        manifest = _pack_into(staged.path, config, items, beam_args)
        staged.commit(last=[manifest_lib.FILE_NAME])  # readers find the manifest only once every file is in
    return manifest


def _pack_into(
    staging: str,
    config: ml_collections.ConfigDict,
    items: list[tuple[str, str, int, int]],
    beam_args: Iterable[str],
) -> dict[str, Any]:
    """Runs the Beam job into `staging` and checks that every token read was packed; returns the manifest."""
    pc = config.pack
    options = PipelineOptions([f"--{k}={v}" for k, v in pc.runner.items()] + list(beam_args))
    try:
        with beam.Pipeline(options=options) as p:
            build(p, config, items, vocab_info(pc.vocab_path), staging)
    except Exception as e:
        damaged = re.search(rf"{re.escape(DAMAGED)} .*?; {re.escape(DAMAGED_ADVICE)}", str(e))
        if damaged:
            raise DamagedPreparedData(damaged.group(0)) from None
        raise
    manifest = manifest_lib.read(staging)
    for split, tasks in manifest["splits"].items():
        for task, s in tasks.items():
            if s["tokens_out"] != s["tokens_in"] or s["tokens_in"] != s["tokens_read"]:
                raise RuntimeError(
                    f"{split}/{task}: tokens read {s['tokens_read']}, packed in {s['tokens_in']}, "
                    f"out {s['tokens_out']}: packing lost tokens"
                )
    return manifest


def format_report(manifest: dict[str, Any], elapsed: float) -> str:
    """What the command prints at the end: per split and task, documents, tokens, rows, fill."""
    lines = [
        f"seq_len {manifest['seq_len']}, seed {manifest['seed']}, vocab {manifest['vocab']['size']} tokens",
        f"  {'split/task':<22} {'documents':>10} {'tokens':>12} {'rows':>8} {'files':>5} {'fill':>8} {'cut':>6}",
    ]
    total = 0
    for split, tasks in manifest["splits"].items():
        for task, s in tasks.items():
            fill = f"{s['fill']:.2%}" if s["fill"] is not None else "-"
            lines.append(
                f"  {split + '/' + task:<22} {s['documents']:>10} {s['tokens_out']:>12} {s['rows']:>8} "
                f"{len(s['files']):>5} {fill:>8} {s['cut_documents']:>6}"
            )
            total += s["tokens_out"]
    lines.append(
        f"tokens in == tokens out for every task; {total} tokens packed in {elapsed:.1f}s "
        f"({total / max(elapsed, 1e-9):,.0f} tokens/s); fingerprint {manifest['fingerprint'][:16]}"
    )
    return "\n".join(lines)


def main(config: ml_collections.ConfigDict, beam_args: list[str]) -> None:
    if flags.FLAGS.overwrite is not None:
        config.pack.overwrite = flags.FLAGS.overwrite
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)  # per-shard INFO lines stay in worker logs
    start = time.time()
    print(
        f"packing {packed_tasks(config)} x {list(config.pack.splits)} at seq_len {config.seq_len} "
        f"into {fs.resolve(config.pack.output)} ({config.pack.runner.runner}) ...",
        flush=True,
    )
    manifest = pack(config, beam_args)
    print(format_report(manifest, time.time() - start))
    print(f"wrote {fs.join(config.pack.output, manifest_lib.FILE_NAME)}")


def run() -> None:
    cli.run(
        main,
        doc=__doc__,
        default_config=None,
        shortcuts=[
            cli.Shortcut("prep_dir", "pack.prep_dir", "Prepared data (PREP/{web,math,code})."),
            cli.Shortcut(
                "tokenizer", "pack.vocab_path", "SentencePiece tokenizer.model.", deprecated=("vocab_path",)
            ),
            cli.Shortcut("output", "pack.output", "Directory for the packed rows and manifest.json."),
            cli.Shortcut(
                "extra_task",
                "pack.extra_tasks",
                "NAME=DIR: also pack a prepared dataset directory outside prep_dir as task NAME (repeatable).",
                multi=True,
            ),
        ],
        required=["pack.prep_dir", "pack.vocab_path", "pack.output"],
        pass_unknown_flags=True,
        define_extra_flags=lambda: flags.DEFINE_bool(
            "overwrite",
            None,
            "Replace an earlier pack in --output (only the files its OUTPUTS.json lists; sets "
            "config.pack.overwrite).",
        ),
    )


if __name__ == "__main__":
    run()
