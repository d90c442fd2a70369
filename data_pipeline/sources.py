"""Readers for raw corpora: JSONL (plain, .gz, .zst), Parquet, plain-text file trees, TFDS.

Every input yields records with a stable ``id`` (the input's id field, else
``<path relative to the glob's root>:<record index>``), and everything that cannot be
read becomes a dead letter with its raw bytes and the error, never an exception that
kills the job and never a silent drop. Records larger than ``max_doc_bytes`` are rejected
as ``too_long`` right here, so a 50 MB document is never carried through the pipeline.
Files are the unit of parallelism: ``MatchAll`` + ``Reshuffle`` spreads them over workers,
which is how Beam reads many-file corpora on Dataflow.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import posixpath
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from data_pipeline import records
from data_pipeline.code_languages import language_from_path

FORMATS = ("jsonl", "parquet", "text", "tfds")
DEAD_LETTER = "dead_letter"
REJECTED = "rejected"
_BINARY_SNIFF_BYTES = 8192
_WILDCARD = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One configured input: which files, how to parse them, and which domain they feed."""

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
            raise ValueError(f"inputs.domain: must be one of {records.DOMAINS}, got {self.domain!r}")
        if not self.glob:
            raise ValueError("inputs.glob: must not be empty")
        fmt = self.format if self.format != "auto" else guess_format(self.glob)
        if fmt not in FORMATS:
            raise ValueError(f"inputs.format: must be one of {FORMATS} or 'auto', got {self.format!r}")
        object.__setattr__(self, "format", fmt)
        if not self.source:
            object.__setattr__(self, "source", f"{self.domain}:{posixpath.basename(self.glob.rstrip('/'))}")

    @classmethod
    def from_flag(cls, value: str) -> "InputSpec":
        """Parses ``--input DOMAIN=GLOB``."""
        domain, sep, glob = value.partition("=")
        if not sep:
            raise ValueError(f"--input: expected DOMAIN=GLOB, got {value!r}")
        return cls(domain=domain.strip(), glob=glob.strip())


def guess_format(glob: str) -> str:
    """Format from the glob's file extension; anything unknown is read as plain text files."""
    name = glob.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        name = name.removesuffix(suffix)
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.startswith("tfds:"):
        return "tfds"
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


def open_decompressed(path: str) -> BinaryIO:
    """Opens ``path`` and undoes .gz / .zst compression by extension."""
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if lower.endswith((".zst", ".zstd")):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw


class ReadFileFn(beam.DoFn):
    """Parses one matched file into records; side outputs ``dead_letter`` and ``rejected``."""

    def __init__(self, spec: InputSpec, max_doc_bytes: int, max_raw_bytes: int):
        self._spec = spec
        self._max_doc_bytes = max_doc_bytes
        self._max_raw_bytes = max_raw_bytes
        self._root = glob_root(spec.glob)
        self._read = beam.metrics.Metrics.counter("data_pipeline", f"read_{spec.domain}")
        self._dead = beam.metrics.Metrics.counter("data_pipeline", "dead_letter")

    def process(self, element: tuple[str, int]) -> Iterator[Any]:
        path, size = element
        rel = relative_path(path, self._root)
        count = 0
        try:
            if self._spec.format == "jsonl":
                parsed = self._jsonl(path, rel)
            elif self._spec.format == "parquet":
                parsed = self._parquet(path, rel)
            else:
                yield from self._text_file(path, rel, size)
                return
            for count, output in enumerate(parsed, 1):
                yield output
        except Exception as e:  # noqa: BLE001 - a broken file must become a dead letter, not a crash
            # Records read before the failure were emitted already; the rest of the file is one entry.
            yield self._dead_letter(f"{rel}:error", path, f"unreadable_file: {type(e).__name__}: {e}", b"")
        print(f"read {self._spec.source}: {path} ({count} records)", flush=True)  # progress, one line per file

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
        if len(text) > self._max_doc_bytes // 4 and len(text.encode("utf-8")) > self._max_doc_bytes:
            return beam.pvalue.TaggedOutput(REJECTED, records.rejection(record, "too_long"))
        return record

    def _language(self, rel: str, row: dict[str, Any] | None = None) -> str:
        if row is not None and self._spec.language_field and isinstance(row.get(self._spec.language_field), (str, bytes)):
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
        record_id = str(row_id) if row_id not in (None, "") else f"{rel}:{index}"
        text = row.get(self._spec.text_field)
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                return self._dead_letter(record_id, path, f"invalid_utf8: {e}", text)
        if not isinstance(text, str):
            error = "missing_text_field" if text is None else f"text_not_a_string: {type(text).__name__}"
            return self._dead_letter(record_id, path, f"{error}: {self._spec.text_field!r}", raw)
        return self._emit(record_id, text, path, self._language(rel, row))

    def _jsonl(self, path: str, rel: str) -> Iterator[Any]:
        with open_decompressed(path) as f:
            head = f.peek(_BINARY_SNIFF_BYTES) if hasattr(f, "peek") else b""
            if b"\x00" in head[:_BINARY_SNIFF_BYTES]:
                yield self._dead_letter(f"{rel}:0", path, "binary_file", head[:_BINARY_SNIFF_BYTES])
                return
            for index, raw in enumerate(f):
                if not raw.strip():
                    continue  # blank separator lines are not records
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield self._dead_letter(f"{rel}:{index}", path, f"invalid_utf8: {e}", raw)
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    yield self._dead_letter(f"{rel}:{index}", path, f"bad_json: {e}", raw)
                    continue
                yield self.parse_row(row, index, rel, path, raw[: self._max_raw_bytes])

    def _parquet(self, path: str, rel: str) -> Iterator[Any]:
        import pyarrow.parquet as pq

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            table = pq.ParquetFile(f)
            names = set(table.schema_arrow.names)
            columns = [c for c in (self._spec.text_field, self._spec.id_field, self._spec.language_field) if c in names]
            index = 0
            for batch in table.iter_batches(columns=columns or None):
                for row in batch.to_pylist():
                    yield self.parse_row(row, index, rel, path, b"")
                    index += 1

    def _text_file(self, path: str, rel: str, size: int) -> Iterator[Any]:
        """One document per file; ``size`` (stored bytes, compressed if the file is) bounds it."""
        with open_decompressed(path) as f:
            head = f.read(_BINARY_SNIFF_BYTES)
            record_id = f"{rel}:0"
            if b"\x00" in head:
                yield self._dead_letter(record_id, path, "binary_file", head)
                return
            if size > self._max_doc_bytes:
                self._read.inc()
                record = {"id": record_id, "source": self._spec.source, "domain": self._spec.domain}
                yield beam.pvalue.TaggedOutput(REJECTED, records.rejection(record, "too_long", keep_text=False))
                return
            data = head + f.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield self._dead_letter(record_id, path, f"invalid_utf8: {e}", data)
            return
        yield self._emit(record_id, text, path, self._language(rel))


class ReadTfdsShardFn(beam.DoFn):
    """Reads one shard of a prepared TFDS dataset (by name + data_dir, or by directory)."""

    def __init__(self, spec: InputSpec, max_doc_bytes: int, max_raw_bytes: int):
        self._spec = spec
        self._file_fn = ReadFileFn(spec, max_doc_bytes, max_raw_bytes)

    def process(self, shard: int) -> Iterator[Any]:
        builder = tfds_builder(self._spec)
        split = self._spec.split
        name = builder.name
        dataset = builder.as_dataset(split=f"{split}[{shard}shard]", shuffle_files=False)
        for index, example in enumerate(dataset.as_numpy_iterator()):
            row = {k: v for k, v in example.items()}
            yield self._file_fn.parse_row(row, index, f"{name}/{split}/{shard}", self._spec.glob, b"")


def tfds_builder(spec: InputSpec):
    """``tfds:NAME[/CONFIG][:VERSION]`` from ``data_dir``, or ``tfds:/path/to/dataset/dir``."""
    import tensorflow_datasets as tfds

    target = spec.glob.removeprefix("tfds:")
    if "/" in target and FileSystems.exists(posixpath.join(target, "dataset_info.json")):
        return tfds.builder_from_directory(target)
    return tfds.builder(target, data_dir=spec.data_dir or None)


def check_matches(spec: InputSpec) -> None:
    """Fails at start, naming the input, when its glob matches nothing."""
    if spec.format == "tfds":
        try:
            builder = tfds_builder(spec)
        except Exception as e:  # noqa: BLE001 - TFDS raises several types for "not there"
            raise ValueError(f"inputs[{spec.source}].glob: cannot open TFDS dataset {spec.glob!r}: {e}") from None
        if spec.split not in builder.info.splits:
            raise ValueError(f"inputs[{spec.source}].split: {spec.split!r} not in {list(builder.info.splits)}")
        return
    if not FileSystems.match([spec.glob])[0].metadata_list:
        raise ValueError(f"inputs[{spec.source}].glob: no files match {spec.glob!r}")


class ReadSource(beam.PTransform):
    """PCollection of records for one input, with tagged ``dead_letter`` and ``rejected`` outputs."""

    def __init__(self, spec: InputSpec, max_doc_bytes: int, max_raw_bytes: int):
        super().__init__()
        self._spec = spec
        self._max_doc_bytes = max_doc_bytes
        self._max_raw_bytes = max_raw_bytes

    def expand(self, pbegin):
        spec = self._spec
        if spec.format == "tfds":
            shards = len(tfds_builder(spec).info.splits[spec.split].shard_lengths)
            units = pbegin | "Shards" >> beam.Create(list(range(shards)))
            fn = ReadTfdsShardFn(spec, self._max_doc_bytes, self._max_raw_bytes)
        else:
            units = (
                pbegin
                | "Glob" >> beam.Create([spec.glob])
                | "Match" >> fileio.MatchAll()
                | "PathSize" >> beam.Map(lambda metadata: (metadata.path, metadata.size_in_bytes))
            )
            fn = ReadFileFn(spec, self._max_doc_bytes, self._max_raw_bytes)
        return (
            units
            | "Spread" >> beam.Reshuffle()
            | "Parse" >> beam.ParDo(fn).with_outputs(DEAD_LETTER, REJECTED, main="records")
        )
