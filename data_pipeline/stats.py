"""Accounting: stats.json, the printed summary table, and the input == outputs invariant.

Counts are computed inside the pipeline from the PCollections themselves (so they are
right on every runner, where metrics may be approximate or unavailable), reduced to a few
hundred numbers, and assembled on the driver. The id check is distributed too: every input
id and every output id meet in one GroupByKey, and only violations leave the workers. Ids
are compared across all inputs, since the datasets hold the records of every input.
``findings`` turns the numbers into the lines a user reads: failures keep a run from
committing, warnings do not.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

INPUT, KEPT, REJECTED, DEAD_LETTER, REDACTIONS, CONTAMINATION, ID_VIOLATION = (
    "input",
    "kept",
    "rejected",
    "dead_letter",
    "redactions",
    "contamination",
    "id_violation",
)
CONTROL = (
    "control"  # decontamination positive controls (data_pipeline/decontamination/controls.py), never inputs
)
# What the input files hold by their own count (lines, Parquet footer rows, TFDS shard
# lengths), files whose stream broke off (their true size is unknown), and files holding nothing.
HELD, INCOMPLETE_FILES, EMPTY_FILES = "held_by_files", "incomplete_files", "empty_files"
# An id that several input records share (the data's doing) vs. a record the job lost or duplicated.
DUPLICATE_INPUT_ID, LOST_OR_DUPLICATED = "duplicate_input_id", "lost_or_duplicated"
OUTCOMES = (KEPT, REJECTED, DEAD_LETTER)
MAX_VIOLATION_EXAMPLES = 20
MAX_FILE_EXAMPLES = 20


def is_incomplete(file_counts: dict[str, Any]) -> bool:
    return not file_counts["complete"]


def is_empty(file_counts: dict[str, Any]) -> bool:
    return file_counts["complete"] and not file_counts["held"]


# Files worth naming, by what a reader's file counts say of them.
FILE_KINDS = {INCOMPLETE_FILES: is_incomplete, EMPTY_FILES: is_empty}
_SUMMED = (INPUT, HELD, INCOMPLETE_FILES, EMPTY_FILES, KEPT, "rejected_total", DEAD_LETTER, REDACTIONS)


class CountBy(beam.PTransform):
    """((kind, source, detail), count) for each element, detail picked by ``detail_fn``."""

    def __init__(self, kind: str, detail_fn=None, value_fn=None):
        super().__init__()
        self._kind = kind
        self._detail_fn = detail_fn
        self._value_fn = value_fn

    def expand(self, pcoll):
        kind, detail_fn, value_fn = self._kind, self._detail_fn, self._value_fn
        return pcoll | beam.Map(
            lambda e: (
                (kind, e.get("source", ""), detail_fn(e) if detail_fn else ""),
                value_fn(e) if value_fn else 1,
            )
        )


class CheckIds(beam.PTransform):
    """Input ids vs. outcome ids over all inputs: emits {"source", "id", "kind", "input": n,
    "kept": n, ...} for each id not seen exactly once as input and exactly once as an outcome
    (``source``: the inputs holding it, comma-separated)."""

    def expand(self, tagged: dict[str, Any]):
        keyed = [
            pcoll | f"Key{tag}" >> beam.Map(lambda e, tag=tag: (e["id"], (tag, e["source"])))
            for tag, pcoll in tagged.items()
        ]

        def violations(element: tuple[str, Iterable[tuple[str, str]]]) -> Iterator[dict[str, Any]]:
            record_id, seen = element
            seen = list(seen)
            counts = collections.Counter(tag for tag, _ in seen)
            outcomes = sum(counts[o] for o in OUTCOMES)
            if counts[INPUT] != 1 or outcomes != 1:
                kind = DUPLICATE_INPUT_ID if counts[INPUT] == outcomes else LOST_OR_DUPLICATED
                source = ",".join(sorted({s for _, s in seen}))
                yield {"source": source, "id": record_id, "kind": kind, **counts}

        return keyed | beam.Flatten() | beam.GroupByKey() | beam.FlatMap(violations)


def _empty_entry() -> dict[str, Any]:
    return {
        INPUT: 0,
        HELD: 0,
        INCOMPLETE_FILES: 0,
        EMPTY_FILES: 0,
        KEPT: 0,
        REJECTED: {},
        "rejected_total": 0,
        DEAD_LETTER: 0,
        REDACTIONS: 0,
    }


def assemble(
    counts: Iterable[tuple[tuple[str, str, str], int]],
    source_domains: dict[str, str],
    violation_examples: list[dict[str, Any]],
    extra: dict[str, Any],
    file_examples: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """stats.json content from the reduced counts; ``file_examples``: FILE_KINDS -> file counts
    of some such input files, to name them."""
    sources: dict[str, dict[str, Any]] = {
        s: {"domain": d, **_empty_entry()} for s, d in source_domains.items()
    }
    contamination: dict[str, int] = {}
    id_checks = {DUPLICATE_INPUT_ID: 0, LOST_OR_DUPLICATED: 0}
    for (kind, source, detail), n in counts:
        if kind == CONTAMINATION:
            contamination[detail] = contamination.get(detail, 0) + n
            continue
        if kind == ID_VIOLATION:
            id_checks[detail] += n
            continue
        entry = sources.setdefault(source, {"domain": "", **_empty_entry()})
        if kind == REJECTED:
            entry[REJECTED][detail] = entry[REJECTED].get(detail, 0) + n
            entry["rejected_total"] += n
        else:
            entry[kind] += n
    total = _empty_entry()
    domains: dict[str, dict[str, int]] = {}
    for entry in sources.values():
        for key in _SUMMED:
            total[key] += entry[key]
        for reason, n in entry[REJECTED].items():
            total[REJECTED][reason] = total[REJECTED].get(reason, 0) + n
        per_domain = domains.setdefault(entry["domain"], {INPUT: 0, KEPT: 0})
        per_domain[INPUT] += entry[INPUT]
        per_domain[KEPT] += entry[KEPT]
    accounted = total[KEPT] + total["rejected_total"] + total[DEAD_LETTER]
    file_examples = {
        kind: sorted(found, key=lambda f: f["path"]) for kind, found in (file_examples or {}).items()
    }
    return {
        "total": total,
        "domains": domains,
        "sources": sources,
        "contamination": contamination,
        "invariant": {
            "ok": accounted == total[INPUT] == total[HELD] and id_checks[LOST_OR_DUPLICATED] == 0,
            "input": total[INPUT],
            HELD: total[HELD],
            INCOMPLETE_FILES: total[INCOMPLETE_FILES],
            "kept_plus_rejected_plus_dead_letter": accounted,
            **id_checks,
            "id_violation_examples": violation_examples[:MAX_VIOLATION_EXAMPLES],
        },
        "files": {
            INCOMPLETE_FILES: [
                {"path": f["path"], "error": f["error"]} for f in file_examples.get(INCOMPLETE_FILES, [])
            ],
            EMPTY_FILES: [f["path"] for f in file_examples.get(EMPTY_FILES, [])],
        },
        **extra,
    }


def _input_files(n: int) -> str:
    return f"{n} input file{'' if n == 1 else 's'}"


def _listed(n: int, names: list[str]) -> str:
    return ", ".join(names) + (f" and {n - len(names)} more" if n > len(names) else "")


def findings(stats: dict[str, Any], accept_incomplete_files: bool) -> tuple[list[str], list[str]]:
    """(failures, warnings), one line each: a failure keeps the run's outputs from being committed."""
    failures, warnings = [], []
    total, invariant = stats["total"], stats["invariant"]
    if not invariant["ok"]:
        failures.append(
            f"invariant violated: input {invariant['input']}, kept + rejected + dead_letter "
            f"{invariant['kept_plus_rejected_plus_dead_letter']}, held by the files {invariant[HELD]}, "
            f"{invariant[LOST_OR_DUPLICATED]} ids lost or duplicated (see stats.json)"
        )
    incomplete = total[INCOMPLETE_FILES]
    if incomplete:
        named = [f"{f['path']} ({f['error']})" for f in stats["files"][INCOMPLETE_FILES]]
        line = (
            f"{_input_files(incomplete)} could not be read to the end: {_listed(incomplete, named)}; "
            f"the unreadable rest of each is one dead letter in dead_letter/"
        )
        if accept_incomplete_files:
            warnings.append(line)
        else:
            failures.append(
                line
                + "; pass --accept_incomplete_files (config.read.accept_incomplete_files) to keep the rest"
            )
    empty = total[EMPTY_FILES]
    if not total[INPUT]:
        failures.append(f"no input records: the {_input_files(empty)} are empty")
    elif empty:
        verb = "holds" if empty == 1 else "hold"
        warnings.append(
            f"{_input_files(empty)} {verb} no records: {_listed(empty, stats['files'][EMPTY_FILES])}"
        )
    return failures, warnings


def format_table(stats: dict[str, Any]) -> str:
    """The readable summary printed at the end of a run."""
    rows = [("source", "domain", "input", "kept", "rejected", "dead", "redact", "top rejection reasons")]
    for name, entry in sorted(stats["sources"].items()) + [("TOTAL", {"domain": "", **stats["total"]})]:
        top = sorted(entry[REJECTED].items(), key=lambda kv: -kv[1])[:3]
        rows.append(
            (
                name,
                entry["domain"],
                str(entry[INPUT]),
                str(entry[KEPT]),
                str(entry["rejected_total"]),
                str(entry[DEAD_LETTER]),
                str(entry[REDACTIONS]),
                ", ".join(f"{r}={n}" for r, n in top),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    invariant = stats["invariant"]
    lines.append(
        f"invariant input == kept + rejected + dead_letter: {invariant['input']} == "
        f"{invariant['kept_plus_rejected_plus_dead_letter']} ({'ok' if invariant['ok'] else 'VIOLATED'}, "
        f"{invariant[LOST_OR_DUPLICATED]} ids lost or duplicated, {invariant[DUPLICATE_INPUT_ID]} ids shared by several inputs)"
        f"; the input files hold {invariant[HELD]} records, {invariant[INCOMPLETE_FILES]} files unreadable to the end, "
        f"{stats['total'][EMPTY_FILES]} empty"
    )
    if stats["contamination"]:
        lines.append(
            "contamination hits: " + ", ".join(f"{k}={v}" for k, v in sorted(stats["contamination"].items()))
        )
    if stats.get("controls"):
        lines.append(
            "decontamination controls caught (recall: verbatim, perturbed): "
            + ", ".join(
                f"{k} {e['recall']:.3f} ({e['verbatim']}, {e['perturbed']})"
                for k, e in sorted(stats["controls"].items())
            )
        )
    return "\n".join(lines)


def dumps(stats: dict[str, Any]) -> str:
    return json.dumps(stats, indent=2, sort_keys=True)
