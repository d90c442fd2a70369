"""Positive controls: every run measures the recall of its own decontamination stage.

A sample of each eval set's items (``control_items_per_set``) is planted into carrier
documents, verbatim and perturbed the way copies on the web differ (lines re-wrapped, case
changed, punctuation dropped or spaced out, digit grouping changed), and flows through the
real Decontaminate stage beside the user's records. The controls are then split off: they
never reach the outputs, the accounting or contamination.jsonl. A control is caught when the
stage reports a hit for its own eval set; the recall per eval set goes to stats.json and the
printed summary, and a run whose recall for any set is below ``control_min_recall`` fails
naming the set (a broken index, a window longer than the items, a normalisation change).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import ml_collections

from data_pipeline.decontamination.eval_sets import EvalItem, load_eval_sets

SOURCE = "_decontamination_controls"  # reserved: no input may use this source name
VARIANTS = ("verbatim", "perturbed")
CARRIER_BEFORE = (
    "Notes from the Thursday study group. We went through the practice sheet together and "
    "copied the exercises below so that everyone has them for the weekend."
)
CARRIER_AFTER = (
    "Bring your own attempts next week; we will compare methods and talk about where the "
    "mistakes came from before moving on to the next chapter."
)


def _regroup_digits(match: re.Match, rng: random.Random) -> str:
    """1250 -> 1,250 or 1 250; 1,250 -> 1250: numbers are written both ways."""
    digits = match.group().replace(",", "")
    if "," in match.group() or len(digits) < 4:
        return digits
    head = len(digits) % 3 or 3
    groups = [digits[:head]] + [digits[i : i + 3] for i in range(head, len(digits), 3)]
    return rng.choice([",", " "]).join(groups)


def perturb(text: str, rng: random.Random) -> str:
    """``text`` with digit grouping changed, punctuation dropped or spaced out, each word's
    case redrawn and the lines re-wrapped at random widths with random whitespace runs."""
    text = re.sub(r"\d[\d,]*\d", lambda m: _regroup_digits(m, rng), text)
    text = re.sub(r"[,.;:!?()\[\]\"']", lambda m: rng.choice(["", f" {m.group()} ", m.group()]), text)
    words = [rng.choice([str.lower, str.upper, str.title, str])(w) for w in text.split()]
    lines, i = [], 0
    while i < len(words):
        width = rng.randint(4, 12)
        lines.append(rng.choice([" ", "  ", "\t"]).join(words[i : i + width]))
        i += width
    return rng.choice(["\n", "\n\n", " \n"]).join(lines)


def control_records(items: list[EvalItem], per_set: int, seed: int) -> list[dict[str, Any]]:
    """Carrier documents for up to ``per_set`` items of every eval set, each verbatim and perturbed."""
    rng = random.Random(seed)
    by_set: dict[str, list[EvalItem]] = {}
    for item in items:
        by_set.setdefault(item.eval_set, []).append(item)
    out = []
    for name, pool in sorted(by_set.items()):
        for k, item in enumerate(rng.sample(pool, min(per_set, len(pool)))):
            for variant in VARIANTS:
                text = item.text if variant == "verbatim" else perturb(item.text, rng)
                out.append(
                    {
                        "id": f"{name}:{variant}:{k}",
                        "text": f"{CARRIER_BEFORE}\n\n{text}\n\n{CARRIER_AFTER}",
                        "source": SOURCE,
                        "domain": "web",
                        "language": "en",
                        "eval_set": name,
                        "variant": variant,
                        "eval_item_id": item.item_id,
                    }
                )
    return out


def is_control(element: dict[str, Any]) -> bool:
    return element.get("source") == SOURCE


def _outcome(element: tuple[str, dict[str, list]]) -> Iterator[dict[str, Any]]:
    _, grouped = element
    for control in grouped["planted"]:
        yield {
            "eval_set": control["eval_set"],
            "variant": control["variant"],
            "caught": control["eval_set"] in grouped["hit_sets"],
        }


def _plant(_: Any, config: ml_collections.ConfigDict, eval_specs: dict[str, str]) -> list[dict[str, Any]]:
    items = load_eval_sets(eval_specs, config)
    return control_records(items, int(config.control_items_per_set), int(config.control_seed))


class WithControls(beam.PTransform):
    """Runs ``stage`` (records -> kept, rejected, hits) on the records plus the controls of
    ``eval_specs``; returns the user's (kept, rejected, hits) and one ``{eval_set, variant,
    caught}`` per control. The controls are made on a worker: only the paths travel in the job."""

    def __init__(
        self, stage: beam.PTransform, config: ml_collections.ConfigDict, eval_specs: dict[str, str]
    ) -> None:
        super().__init__()
        self._stage = stage
        self._config = ml_collections.ConfigDict(config.to_dict())
        self._specs = dict(eval_specs)

    def expand(self, records: beam.PCollection) -> tuple[beam.PCollection, ...]:
        planted = (
            records.pipeline
            | "ControlSeed" >> beam.Create([None])
            | "PlantControls" >> beam.FlatMap(_plant, self._config, self._specs)
        )
        kept, rejected, hits = (records, planted) | "AddControls" >> beam.Flatten() | self._stage
        user = [
            pcoll | f"DropControls{i}" >> beam.Filter(lambda e: not is_control(e))
            for i, pcoll in enumerate((kept, rejected, hits))
        ]
        control_hits = hits | "ControlHits" >> beam.Filter(is_control)
        outcomes = (
            {
                "planted": planted | "KeyPlanted" >> beam.Map(lambda r: (r["id"], r)),
                "hit_sets": control_hits | "KeyHits" >> beam.Map(lambda h: (h["id"], h["eval_set"])),
            }
            | "JoinControlHits" >> beam.CoGroupByKey()
            | "ControlOutcome" >> beam.FlatMap(_outcome)
        )
        return (*user, outcomes)


def recall(outcomes: Iterable[tuple[str, str, bool, int]]) -> dict[str, dict[str, Any]]:
    """``{eval_set: {planted, caught, recall, verbatim: "caught/planted", perturbed: ...}}``
    from (eval_set, variant, caught, count) rows."""
    out: dict[str, dict[str, Any]] = {}
    for eval_set, variant, caught, n in outcomes:
        entry = out.setdefault(eval_set, {"planted": 0, "caught": 0, **{v: [0, 0] for v in VARIANTS}})
        entry["planted"] += n
        entry[variant][1] += n
        if caught:
            entry["caught"] += n
            entry[variant][0] += n
    for entry in out.values():
        entry["recall"] = round(entry["caught"] / entry["planted"], 4)
        for v in VARIANTS:
            entry[v] = f"{entry[v][0]}/{entry[v][1]}"
    return out


def failures(per_set: dict[str, dict[str, Any]], floor: float) -> list[str]:
    """One line naming every eval set whose control recall is below ``floor`` (none: [])."""
    low = {name: e for name, e in sorted(per_set.items()) if e["recall"] < floor}
    if not low:
        return []
    sets = ", ".join(f"{name} {e['recall']:.3f} ({e['caught']}/{e['planted']})" for name, e in low.items())
    return [
        f"decontamination controls: recall below config.decontamination.control_min_recall={floor} "
        f"for eval set(s) {sets}"
    ]
