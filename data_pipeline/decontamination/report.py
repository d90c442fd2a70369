"""contamination_report.md: what decontamination flagged, in a form a reader can check.

Per eval set: the documents flagged and the positive controls caught; the most frequent
matched stretches (a generic phrase, matched in many documents, shows up at the top at
once); and a sample of flagged documents with the matched stretch in [[brackets]] inside
its context. Built on the driver from contamination.jsonl in one streaming pass: memory
grows with the number of distinct matched stretches, not with the corpus.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from typing import Any

TOP_STRETCHES = 10
SAMPLE_DOCUMENTS = 5


def report(
    hits: Iterable[dict[str, Any]],
    controls: dict[str, dict[str, Any]],
    top: int = TOP_STRETCHES,
    samples: int = SAMPLE_DOCUMENTS,
) -> str:
    """The markdown report from contamination hits and controls.recall's table."""
    documents: dict[str, set[tuple[str, str]]] = {}
    stretches: dict[str, Counter] = {}
    sample: dict[str, list[tuple[str, str, str, str]]] = {}  # the smallest (source, id) per set
    for h in hits:
        name = h["eval_set"]
        documents.setdefault(name, set()).add((h["source"], h["id"]))
        stretches.setdefault(name, Counter())[h["match"]] += 1
        row = (h["source"], h["id"], h["eval_item_id"], h["context"])
        kept = sample.setdefault(name, [])  # sorted: the same sample whatever the file order
        if row not in kept:
            bisect.insort(kept, row)
            del kept[samples:]
    names = sorted(set(documents) | set(controls))
    lines = [
        "# Contamination report",
        "",
        "| eval set | documents flagged | controls caught (verbatim, perturbed) |",
        "|---|---|---|",
    ]
    for name in names:
        c = controls.get(name)
        caught = f"{c['recall']:.3f} ({c['verbatim']}, {c['perturbed']})" if c else "-"
        lines.append(f"| {name} | {len(documents.get(name, ()))} | {caught} |")
    for name in sorted(documents):
        lines += ["", f"## {name}", "", "| hits | matched stretch (letters and digits) |", "|---|---|"]
        lines += [f"| {n} | `{match}` |" for match, n in stretches[name].most_common(top)]
        lines += ["", "Flagged documents (sample):", ""]
        lines += [f"- `{s}` `{i}` ~ item `{item}`: {context}" for s, i, item, context in sample[name]]
    return "\n".join(lines) + "\n"
