"""Readers for raw corpora: JSONL (plain, .gz, .zst), Parquet, plain-text file trees, TFDS.

Every input yields records with a stable ``id`` (the input's id field, else
``<path relative to the glob's root>:<record index>``). The format is decided per file, from
the file's own name (``--input web=DIR/*`` over ``.jsonl`` and ``.jsonl.gz`` files reads
them as JSONL), unless the input names one. What cannot be parsed is a dead letter with
its raw bytes and the error: one per bad line or row, and one for a file whose content is
not its format (binary in a text format, a Parquet file without its magic bytes). I/O
errors are *raised*, so the runner retries the bundle; only a compressed stream or a
Parquet file that is itself corrupt ends a file early, as one dead letter, and the file
is reported incomplete, with its error. Each file also reports how many records it holds
(lines, Parquet rows from the footer, TFDS shard lengths; 0 for an empty file), so the
job's invariant counts what the files hold, not what the reader chose to emit. Records
larger than ``max_doc_bytes`` are rejected as ``too_long`` here, so a 50 MB document is
never carried through the pipeline. Files are the unit of parallelism: the glob is
expanded on a worker and ``Reshuffle`` spreads the files. All I/O goes through
common/fs.py (data_pipeline/readers/textio.py).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from absl import logging

from common import fs
from common.checks import ConfigError
from common.parsers import parse_assignment
from common.text import escape_lone_surrogates, has_lone_surrogate
from data_pipeline import prepared, progress, records
from data_pipeline.readers.code_languages import language_from_path
from data_pipeline.readers.textio import CORRUPT_STREAM_ERRORS, strip_compression

FORMATS = ("jsonl", "parquet", "text", "tfds")
DEAD_LETTER = "dead_letter"
FILE_COUNTS = "file_counts"
_BINARY_SNIFF_BYTES = 8192
_WILDCARD = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One configured input: which files, how to parse them (``auto``: per file), which domain."""

    domain: str
    glob: str
    format: str = "auto"
    source: str = ""
    text_field: str = "text"
    id_field: str = "id"
    language_field: str = ""
    language: str = ""
    split: str = "train"  # TFDS only
    data_dir: str = ""  # TFDS only

    def __post_init__(self):
        if self.domain not in records.DOMAINS:
            raise ValueError(f"domain: must be one of {records.DOMAINS}, got {self.domain!r}")
        if not self.glob:
            raise ValueError("glob: must not be empty")
        fmt = "tfds" if self.glob.startswith("tfds:") else self.format
        if fmt not in FORMATS + ("auto",):
            raise ValueError(f"format: must be one of {FORMATS} or 'auto', got {self.format!r}")
        object.__setattr__(self, "format", fmt)
        if fmt != "tfds":
            object.__setattr__(self, "glob", fs.resolve(self.glob))
        if not self.source:
            object.__setattr__(self, "source", f"{self.domain}:{fs.basename(self.glob)}")

    @classmethod
    def from_flag(cls, value: str) -> InputSpec:
        """Parses ``--input DOMAIN=GLOB``."""
        domain, glob = parse_assignment(value, "input", "DOMAIN", "GLOB")
        return cls(domain=domain, glob=glob)

    def format_of(self, path: str) -> str:
        """The configured format, or (``auto``) the one the file's own name says."""
        return self.format if self.format != "auto" else guess_format(path)


def guess_format(path: str) -> str:
    """Format from a file's extension; anything unknown is read as a plain text file."""
    name = strip_compression(path.lower())
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def glob_root(glob: str) -> str:
    """The directory above the first wildcard: ids are paths relative to it, so they are stable."""
    match = _WILDCARD.search(glob)
    prefix = glob[: match.start()] if match else glob
    return prefix.rsplit("/", 1)[0] if "/" in prefix else ""


def relative_path(path: str, root: str) -> str:
    if root and path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1 :]
    return path


def match_files(glob: str) -> list[str]:
    """Files (not directories) the glob matches, through common/fs.py.

    As in Beam's matcher, ``**`` inside a name matches across folders: ``tex/**.tex`` is
    ``tex/**/*.tex``.
    """
    parts = [
        part if "**" not in part or part == "**" else "**/" + re.sub(r"\*\*+", "*", part)
        for part in glob.split("/")
    ]
    return [path for path in fs.glob("/".join(parts)) if not fs.isdir(path)]


class ReadFileFn(beam.DoFn):
    """Parses one matched file into records; side outputs dead letters, rejections, file counts.

    With ``progress_dir``, the worker's running totals go there (``data_pipeline.progress``).
    """

    def __init__(self, spec: InputSpec, max_doc_bytes: int, max_raw_bytes: int, progress_dir: str = ""):
        self._spec = spec
        self._max_doc_bytes = max_doc_bytes
        self._max_raw_bytes = max_raw_bytes
        self._root = glob_root(spec.glob)
        self._read = beam.metrics.Metrics.counter("data_pipeline", f"read_{spec.domain}")
        self._dead = beam.metrics.Metrics.counter("data_pipeline", "dead_letter")
        self._progress_dir = progress_dir
        self.progress: progress.WorkerTotals | None = None

    def setup(self) -> None:
        if self._progress_dir:
            self.progress = progress.WorkerTotals(self._progress_dir)

    def finish_bundle(self) -> None:
        if self.progress is not None:
            self.progress.write()

    def process(self, path: str) -> Iterator[Any]:
        rel = relative_path(path, self._root)
        fmt = self._spec.format_of(path)
        counts = {"held": 0, "complete": True}
        if fmt == "jsonl":
            yield from self._jsonl(path, rel, counts)
        elif fmt == "parquet":
            yield from self._parquet(path, rel, counts)
        else:
            yield from self._text_file(path, rel, counts)
        logging.debug("read %s: %s as %s (%d records)", self._spec.source, path, fmt, counts["held"])
        if self.progress is not None:
            self.progress.add(files=1)
        yield beam.pvalue.TaggedOutput(FILE_COUNTS, {"source": self._spec.source, "path": path, **counts})

    def _dead_letter(self, record_id: str, path: str, error: str, raw: bytes) -> beam.pvalue.TaggedOutput:
        self._dead.inc()
        entry = records.dead_letter(record_id, self._spec.source, path, error, raw, self._max_raw_bytes)
        return beam.pvalue.TaggedOutput(DEAD_LETTER, entry)

    def _emit(self, record_id: str, text: str, path: str, language: str) -> Any:
        """A record, or a ``too_long`` rejection when it exceeds the size limit."""
        record = {
            "id": record_id,
            "text": text,
            "source": self._spec.source,
            "domain": self._spec.domain,
            "language": language,
            "path": path,
        }
        self._read.inc()
        if self.progress is not None:
            self.progress.add(records=1)
        if len(text) > self._max_doc_bytes // 4 and len(text.encode("utf-8")) > self._max_doc_bytes:
            return beam.pvalue.TaggedOutput(records.REJECTED, records.rejection(record, "too_long"))
        return record

    def _language(self, rel: str, row: dict[str, Any] | None = None) -> str:
        if (
            row is not None
            and self._spec.language_field
            and isinstance(row.get(self._spec.language_field), (str, bytes))
        ):
            value = row[self._spec.language_field]
            value = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
            return value.lower() if self._spec.domain == "code" else value
        if self._spec.language:
            return self._spec.language
        return language_from_path(rel) if self._spec.domain == "code" else ""

    def parse_row(self, row: Any, index: int, rel: str, path: str, raw: bytes) -> Any:
        """Record or dead letter for one parsed row (JSONL line or Parquet row)."""
        if not isinstance(row, dict):
            return self._dead_letter(f"{rel}:{index}", path, "not_an_object", raw)
        row_id = row.get(self._spec.id_field) if self._spec.id_field else None
        if isinstance(row_id, bytes):
            row_id = row_id.decode("utf-8", errors="backslashreplace")
        record_id = escape_lone_surrogates(str(row_id)) if row_id not in (None, "") else f"{rel}:{index}"
        text = row.get(self._spec.text_field)
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                return self._dead_letter(record_id, path, f"invalid_utf8: {e}", text)
        if not isinstance(text, str):
            error = "missing_text_field" if text is None else f"text_not_a_string: {type(text).__name__}"
            return self._dead_letter(record_id, path, f"{error}: {self._spec.text_field!r}", raw)
        if has_lone_surrogate(text):  # no UTF-8 encodes it: every writer downstream would fail
            return self._dead_letter(
                record_id,
                path,
                f"lone_surrogate: {self._spec.text_field!r} holds an unpaired UTF-16 surrogate",
                raw,
            )
        return self._emit(record_id, text, path, escape_lone_surrogates(self._language(rel, row)))

    def _lines(self, path: str, counts: dict[str, Any]) -> Iterator[tuple[int, bytes]]:
        """(index, raw line) of each non-blank line; a corrupt compressed stream ends the file."""
        index = -1
        try:
            with fs.open_decompressed(path) as f:
                f = f if hasattr(f, "peek") else io.BufferedReader(f)
                head = f.peek(_BINARY_SNIFF_BYTES)[:_BINARY_SNIFF_BYTES]
                if b"\x00" in head:
                    counts["held"] = 1
                    raise _NotText(head)
                for index, raw in enumerate(f):
                    if raw.strip():
                        counts["held"] += 1
                        yield index, raw
        except CORRUPT_STREAM_ERRORS as e:
            counts["held"] += 1  # the unreadable rest is one dead letter
            counts.update(complete=False, error=f"{type(e).__name__}: {e}")
            raise _CorruptStream(index + 1, e) from e

    def _jsonl(self, path: str, rel: str, counts: dict[str, Any]) -> Iterator[Any]:
        try:
            for index, raw in self._lines(path, counts):
                try:
                    row = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    yield self._dead_letter(f"{rel}:{index}", path, f"invalid_utf8: {e}", raw)
                    continue
                except ValueError as e:
                    yield self._dead_letter(f"{rel}:{index}", path, f"bad_json: {e}", raw)
                    continue
                yield self.parse_row(row, index, rel, path, raw[: self._max_raw_bytes])
        except _NotText as e:
            yield self._dead_letter(f"{rel}:0", path, "binary_file: content is not JSONL text", e.head)
        except _CorruptStream as e:
            yield self._dead_letter(
                f"{rel}:{e.line}:unreadable_rest",
                path,
                f"corrupt_stream: {type(e.cause).__name__}: {e.cause} (after line {e.line}; "
                f"the rest of the file is unreadable)",
                b"",
            )

    def _parquet(self, path: str, rel: str, counts: dict[str, Any]) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            head = f.read(4)
            f.seek(-4, io.SEEK_END)
            if head != b"PAR1" or f.read(4) != b"PAR1":
                counts["held"] = 1
                yield self._dead_letter(
                    f"{rel}:0", path, "not_parquet: the file lacks Parquet's PAR1 magic bytes", head
                )
                return
            f.seek(0)
            index = 0
            try:
                table = pq.ParquetFile(f)
                counts["held"] = table.metadata.num_rows
                names = set(table.schema_arrow.names)
                columns = [
                    c
                    for c in (self._spec.text_field, self._spec.id_field, self._spec.language_field)
                    if c in names
                ]
                for batch in table.iter_batches(columns=columns or None):
                    for row in batch.to_pylist():
                        yield self.parse_row(row, index, rel, path, b"")
                        index += 1
            except (pa.ArrowException, OSError) as e:
                # pyarrow reports corrupt bytes as an OSError without errno; an I/O error of the
                # file itself keeps its errno and is raised, so the runner retries.
                if isinstance(e, OSError) and e.errno is not None:
                    raise
                error = f"{type(e).__name__}: {e}"
                counts.update(held=index + 1, complete=False, error=error)  # the rest is one dead letter
                yield self._dead_letter(
                    f"{rel}:{index}:unreadable_rest",
                    path,
                    f"corrupt_parquet: {error} (after row {index})",
                    b"",
                )

    def _text_file(self, path: str, rel: str, counts: dict[str, Any]) -> Iterator[Any]:
        """One document per file, read up to the size limit (a larger one is rejected unread)."""
        record_id = f"{rel}:0"
        try:
            with fs.open_decompressed(path) as f:
                data = f.read(self._max_doc_bytes + 1)
        except CORRUPT_STREAM_ERRORS as e:
            counts.update(held=1, complete=False, error=f"{type(e).__name__}: {e}")
            yield self._dead_letter(record_id, path, f"corrupt_stream: {type(e).__name__}: {e}", b"")
            return
        counts["held"] = int(bool(data))
        if not data:
            return  # an empty file holds no document (it is counted as empty)
        if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
            yield self._dead_letter(
                record_id, path, "binary_file: content is not text", data[:_BINARY_SNIFF_BYTES]
            )
            return
        if len(data) > self._max_doc_bytes:
            self._read.inc()
            record = {"id": record_id, "source": self._spec.source, "domain": self._spec.domain}
            yield beam.pvalue.TaggedOutput(
                records.REJECTED, records.rejection(record, "too_long", keep_text=False)
            )
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield self._dead_letter(record_id, path, f"invalid_utf8: {e}", data)
            return
        yield self._emit(record_id, text, path, self._language(rel))


class _NotText(Exception):
    def __init__(self, head: bytes) -> None:
        super().__init__("binary content")
        self.head = head


class _CorruptStream(Exception):
    def __init__(self, line: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.line, self.cause = line, cause


class ReadTfdsShardFn(beam.DoFn):
    """Reads one shard of a prepared TFDS dataset (by name + data_dir, or by directory)."""

    def __init__(self, spec: InputSpec, max_doc_bytes: int, max_raw_bytes: int, progress_dir: str = ""):
        self._spec = spec
        self._file_fn = ReadFileFn(spec, max_doc_bytes, max_raw_bytes, progress_dir)

    def setup(self) -> None:
        self._file_fn.setup()

    def finish_bundle(self) -> None:
        self._file_fn.finish_bundle()

    def process(self, shard: int) -> Iterator[Any]:
        builder = tfds_builder(self._spec)
        split = self._spec.split
        name = builder.name
        dataset = builder.as_dataset(split=f"{split}[{shard}shard]", shuffle_files=False)
        for index, example in enumerate(dataset.as_numpy_iterator()):
            row = {k: v for k, v in example.items()}
            yield self._file_fn.parse_row(row, index, f"{name}/{split}/{shard}", self._spec.glob, b"")
        held = builder.info.splits[split].shard_lengths[shard]
        if self._file_fn.progress is not None:
            self._file_fn.progress.add(files=1)
        yield beam.pvalue.TaggedOutput(
            FILE_COUNTS,
            {
                "source": self._spec.source,
                "path": f"{self._spec.glob}[{shard}]",
                "held": held,
                "complete": True,
            },
        )


def tfds_builder(spec: InputSpec):
    """``tfds:NAME[/CONFIG][:VERSION]`` from ``data_dir``, or ``tfds:/path/to/prepared/dataset``
    (opened with the project's features, never with code the folder names)."""
    import tensorflow_datasets as tfds

    target = spec.glob.removeprefix("tfds:")
    if "/" in target and prepared.is_dataset_dir(target):
        return prepared.open_prepared(target)
    return tfds.builder(target, data_dir=spec.data_dir or None)


def check_matches(spec: InputSpec) -> int:
    """The number of files (TFDS: shards) the input reads. Fails at start, naming the input, when
    its glob matches nothing or its Parquet files lack the text column (else every row would be a
    dead letter)."""
    if spec.format == "tfds":
        try:
            builder = tfds_builder(spec)
        except Exception as e:  # noqa: BLE001 - TFDS raises several types for "not there"
            raise ConfigError(
                f"inputs[{spec.source}].glob: cannot open TFDS dataset {spec.glob!r}: {e}"
            ) from None
        if spec.split not in builder.info.splits:
            raise ConfigError(
                f"inputs[{spec.source}].split: {spec.split!r} not in {list(builder.info.splits)}"
            )
        return len(builder.info.splits[spec.split].shard_lengths)
    files = match_files(spec.glob)
    if not files:
        raise ConfigError(f"inputs[{spec.source}].glob: no files match {spec.glob!r}")
    parquet = next((f for f in files if spec.format_of(f) == "parquet"), None)
    columns = _parquet_columns(parquet) if parquet else None
    if columns is not None and spec.text_field not in columns:
        raise ConfigError(
            f"inputs[{spec.source}].text_field: {spec.text_field!r} is not a column of {parquet}; "
            f"columns seen: {sorted(columns)}"
        )
    return len(files)


def _parquet_columns(path: str) -> list[str] | None:
    """The file's column names; None when it cannot be read (the job dead-letters it, naming it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as f:
            return pq.read_schema(f).names
    except (pa.ArrowException, OSError):
        return None


class ReadSource(beam.PTransform):
    """Records of one input, with tagged ``dead_letter``, ``rejected`` and ``file_counts`` outputs."""

    def __init__(self, spec: InputSpec, max_doc_bytes: int, max_raw_bytes: int, progress_dir: str = ""):
        super().__init__()
        self._spec = spec
        self._max_doc_bytes = max_doc_bytes
        self._max_raw_bytes = max_raw_bytes
        self._progress_dir = progress_dir

    def expand(self, pbegin):
        spec = self._spec
        if spec.format == "tfds":
            shards = len(tfds_builder(spec).info.splits[spec.split].shard_lengths)
            units = pbegin | "Shards" >> beam.Create(list(range(shards)))
            fn = ReadTfdsShardFn(spec, self._max_doc_bytes, self._max_raw_bytes, self._progress_dir)
        else:
            # The glob is expanded on a worker: a million file names never enter the job graph.
            units = pbegin | "Glob" >> beam.Create([spec.glob]) | "Match" >> beam.FlatMap(match_files)
            fn = ReadFileFn(spec, self._max_doc_bytes, self._max_raw_bytes, self._progress_dir)
        return (
            units
            | "Spread" >> beam.Reshuffle()
            | "Parse"
            >> beam.ParDo(fn).with_outputs(DEAD_LETTER, records.REJECTED, FILE_COUNTS, main="records")
        )
