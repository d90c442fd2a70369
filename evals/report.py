"""The downstream table a person reads: per task and metric its value, 95% interval, chance
level, and whether the interval rules chance out ("no difference" when it spans chance)."""

from __future__ import annotations

from typing import Any


def _verdict(metric: dict[str, Any]) -> str:
    if "chance" not in metric:
        return ""
    if not metric["differs_from_chance"]:
        return "no difference from chance"
    return "above chance" if metric["value"] > metric["chance"] else "below chance"


def table(summary: dict[str, Any]) -> str:
    """Fixed-width lines of `harness.summarize`'s output, one per task and metric, and a
    contamination line per task that was checked."""
    header = ("task", "metric", "value", "95% interval", "chance", "")
    rows = [header]
    notes = []
    for task, entry in summary.items():
        for name, m in entry["metrics"].items():
            low, high = m["ci95"]
            chance = f"{m['chance']:.4f}" if "chance" in m else "-"
            rows.append((task, name, f"{m['value']:.4f}", f"[{low:.4f}, {high:.4f}]", chance, _verdict(m)))
        if entry.get("truncated"):
            notes.append(
                f"{task}: {entry['truncated']} of {entry['items']} items cut on the left to fit a row "
                "(lm-eval's truncation at its max_length: row_len, by default the model's max_seq_len)"
            )
        c = entry["contamination"]
        if c["checked"]:
            line = f"{task}: {c['items_found']} of {entry['items']} items found in the training data"
            if c["items_found"]:
                clean = ", ".join(f"{k} {v['value']:.4f}" for k, v in c["clean"].items())
                dirty = ", ".join(f"{k} {v['value']:.4f}" for k, v in c["contaminated"].items())
                line += f"; clean items: {clean}; found items: {dirty}"
            notes.append(line)
        else:
            notes.append(
                f"{task}: {entry['items']} items; contamination not checked (the run names no prep_dir)"
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], "", *notes])
