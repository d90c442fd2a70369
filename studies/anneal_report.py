"""The anneal study's report: arm x metric table, noise, controls, verdicts and cost, as JSON, Markdown, PNG.

Spread over seeds is the sample standard deviation of a metric across seeds (0 with one
seed). Differences to the reference arm (the first declared) are paired: each seed's arm
minus the same seed's reference, which share the prefix, so the prefix's seed-to-seed
variation cancels. A verdict rests on the paired bootstrap interval of that difference over
seeds and items (`studies.noise`): with one seed there is none ("one seed: no verdict"), an
interval spanning zero is "no difference". An arm "beats" the reference on a `lower` metric
when the interval lies below zero (`higher`: above), and is "level" on a `level` metric when
the interval spans zero or the difference is within `verdict.tolerance` (relative). For
every metric the report gives its signal-to-noise ratio over the arms and the minimum
detectable difference at the seeds used; the controls (`studies.controls`) say whether the
verdicts can be trusted at all. An arm that names `versus` (another arm) is also compared
with that arm, and judged against it: arm (c) "(b) plus a candidate dataset" says
`versus="b"`, so the question it answers is what the candidate adds to (b). Those
comparisons are keyed "arm vs other" in the delta and verdict tables.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections
import numpy as np

from common import fs
from studies import controls, noise
from studies.anneal_eval import curves, item_arrays

PREFIX = "prefix"


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def comparisons(runs: list[str], reference: str, versus: dict[str, str] | None = None) -> dict[str, tuple]:
    """{label: (arm, baseline)}: every arm against the reference (label: the arm's name),
    and each arm that names `versus` also against that arm (label "arm vs other")."""
    pairs = {r: (r, reference) for r in runs if r not in (reference, PREFIX)}
    for arm, other in (versus or {}).items():
        if other != reference:
            pairs[f"{arm} vs {other}"] = (arm, other)
    return pairs


def summarize(
    losses: dict[str, dict[str, dict[str, float]]], reference: str, versus: dict[str, str] | None = None
) -> dict[str, Any]:
    """{metric: {run: stats}} and {metric: {comparison: paired-difference stats}} over seeds."""
    seeds = sorted(losses)
    runs = list(losses[seeds[0]])
    metrics = sorted({m for s in seeds for r in runs for m in losses[s][r]})
    pairs = comparisons(runs, reference, versus)
    table, delta = {}, {}
    for m in metrics:
        table[m] = {
            r: _stats([losses[s][r][m] for s in seeds]) for r in runs if all(m in losses[s][r] for s in seeds)
        }
        delta[m] = {}
        for label, (arm, base) in pairs.items():
            if arm not in table[m] or base not in table[m]:
                continue
            d = _stats([losses[s][arm][m] - losses[s][base][m] for s in seeds])
            d["relative"] = d["mean"] / table[m][base]["mean"]
            delta[m][label] = d
    return {"metrics": metrics, "runs": runs, "table": table, "delta": delta, "comparisons": pairs}


def interval_of(config: ml_collections.ConfigDict, scores: dict[str, Any]) -> controls.Interval:
    """(arm, baseline, objective) -> paired bootstrap interval over the study's seeds and items."""
    seeds = sorted(scores["items"])
    groups = {k: list(v) for k, v in config.probes.groups.items()}
    items = {s: {run: item_arrays({"items": v}) for run, v in scores["items"][s].items()} for s in seeds}

    def interval(arm: str, base: str, objective: dict[str, float]) -> dict[str, Any]:
        return noise.paired_difference(
            [items[s][arm] for s in seeds],
            [items[s][base] for s in seeds],
            objective,
            groups,
            config.verdict.bootstrap,
            config.verdict.confidence,
        )

    return interval


def verdict(
    config: ml_collections.ConfigDict, summary: dict[str, Any], interval: controls.Interval
) -> dict[str, Any]:
    """Per comparison (each arm but the controls against the reference, and against its
    `versus` arm): the verdict of each `lower`, `higher` and `level` metric from its paired
    interval; `ok` is None with one seed (no verdict)."""
    v = config.verdict
    wanted = {
        **{m: "level" for m in v.level},
        **{m: "lower" for m in v.lower},
        **{m: "higher" for m in v.higher},
    }
    control_arms = {a["name"] for a in config.arms if controls.is_control(a)}
    out = {}
    for label, (arm, base) in summary["comparisons"].items():
        if arm in control_arms:
            continue
        checks = {}
        for m, kind in wanted.items():
            if label not in summary["delta"].get(m, {}):
                continue
            ci = interval(arm, base, {m: 1.0})
            said = noise.verdict(ci)
            relative = summary["delta"][m][label]["relative"]
            if said == noise.ONE_SEED:
                ok = None
            elif kind == "level":
                ok = said == noise.NO_DIFFERENCE or abs(relative) <= v.tolerance
            else:
                ok = said == kind
            checks[m] = {"kind": kind, "verdict": said, "ok": ok, "relative": relative, **ci}
        out[label] = {
            "arm": arm,
            "baseline": base,
            "checks": checks,
            "all_ok": bool(checks) and all(c["ok"] for c in checks.values()),
        }
    return out


def noise_of(
    config: ml_collections.ConfigDict, summary: dict[str, Any], losses: dict[str, Any]
) -> dict[str, Any]:
    """Signal-to-noise and minimum detectable difference of every metric over the arms (no
    controls, no prefix), from each arm's value per seed."""
    arms = [a["name"] for a in config.arms if not controls.is_control(a)]
    seeds = sorted(losses)
    values = {
        m: {a: [losses[s][a][m] for s in seeds] for a in arms if a in summary["table"][m]}
        for m in summary["metrics"]
    }
    return noise.noise_table({m: v for m, v in values.items() if len(v) >= 2}, config.verdict.confidence)


def cost(timings: dict[str, Any]) -> dict[str, Any]:
    """Seconds of prefix + K x anneal (what ran) against K x (prefix + anneal) (separate runs)."""
    prefix = [t["seconds"] for t in timings.get("prefix", []) if t["seconds"]]
    arms = {a: [t["seconds"] for t in ts if t["seconds"]] for a, ts in timings.get("arms", {}).items()}
    k = len(arms)
    arm_seconds = [s for ts in arms.values() for s in ts]
    per_seed_prefix = float(np.mean(prefix)) if prefix else 0.0
    per_seed_arm = float(np.mean(arm_seconds)) if arm_seconds else 0.0
    return {
        "prefix_seconds_per_seed": per_seed_prefix,
        "arm_seconds_per_seed": per_seed_arm,
        "arms": k,
        "branched_seconds_per_seed": per_seed_prefix + k * per_seed_arm,
        "separate_runs_seconds_per_seed": k * (per_seed_prefix + per_seed_arm),
        "train_seconds": timings.get("train_seconds"),
        "eval_seconds": timings.get("eval_seconds"),
    }


def _fmt(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}" if stats["n"] > 1 else f"{stats['mean']:.4f}"


def markdown(
    config: ml_collections.ConfigDict,
    runs: dict[str, Any],
    scores: dict[str, Any],
    summary: dict[str, Any],
    verdicts: dict[str, Any],
    costs: dict[str, Any],
    noise_rows: dict[str, Any],
    outcomes: dict[str, Any],
    hashes: dict[str, str],
) -> str:
    reference = config.arms[0]["name"]
    seeds = sorted(scores["losses"])
    first = runs["seeds"][seeds[0]]
    prefix_step = first["prefix"]["step"]
    lines = [
        f"## Anneal study: {len(config.arms)} arms from step {prefix_step}, "
        f"{config.anneal_steps} annealing steps, seeds {', '.join(seeds)}",
        "",
    ]
    lines.append("| arm | annealing mixture | optimiser overrides |")
    lines.append("|---|---|---|")
    lines.append(
        f"| {PREFIX} (pre-anneal baseline) | "
        + ", ".join(f"{k}={v:g}" for k, v in first["prefix"]["weights"].items())
        + " | |"
    )
    for name, arm in first["arms"].items():
        lines.append(
            f"| {name}{' (reference)' if name == reference else ''} | "
            + ", ".join(f"{k}={v:g}" for k, v in arm["weights"].items() if v)
            + f" | {arm['optim'] or ''} |"
        )
    notes = [f"- `{arm['name']}`: {arm['note']}" for arm in config.arms if arm.get("note")]
    if notes:  # where an arm's weights come from (e.g. a studies.mixture_search proposal)
        lines += ["", "Where arms come from (from the study's config, not measured in this run):", "", *notes]
    lines += ["", "Mean loss per token (nats) on the held-out sets, mean ± spread over seeds:", ""]
    metrics = summary["metrics"]
    lines.append("| run | " + " | ".join(metrics) + " |")
    lines.append("|---|" + "---|" * len(metrics))
    for run in summary["runs"]:
        lines.append(
            f"| {run} | "
            + " | ".join(
                _fmt(summary["table"][m][run]) if run in summary["table"][m] else "" for m in metrics
            )
            + " |"
        )
    named = any(base != reference for _, base in summary["comparisons"].values())
    lines += [
        "",
        f"Difference to `{reference}`{' (rows `a vs b`: to arm b)' if named else ''}, paired by seed; "
        "negative = lower loss:",
        "",
    ]
    lines.append("| arm | " + " | ".join(metrics) + " |")
    lines.append("|---|" + "---|" * len(metrics))
    for label in summary["comparisons"]:
        cells = []
        for m in metrics:
            d = summary["delta"].get(m, {}).get(label)
            cells.append(
                ""
                if d is None
                else f"{d['mean']:+.4f} ({d['relative']:+.1%})" + (f" ± {d['std']:.4f}" if d["n"] > 1 else "")
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", noise_markdown(noise_rows, config.verdict.confidence), ""]
    lines += controls.markdown(outcomes, reference)
    if verdicts:
        lines += [
            "",
            f"Verdict ({config.verdict.confidence:.0%} paired interval over seeds and items; lower/higher: "
            f"beyond the interval; level: no difference or within {config.verdict.tolerance:.0%}):",
            "",
        ]
        for arm, v in verdicts.items():
            parts = [
                f"{m} {c['kind']}: {c['verdict']} ({c['difference']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}])"
                + ("" if c["ok"] is None else f" {'yes' if c['ok'] else 'NO'}")
                for m, c in v["checks"].items()
            ]
            lines.append(f"- `{arm}`: " + "; ".join(parts))
    held = scores["heldout"]
    dirty = {k: v for k, v in held["contaminated_items"].items() if v}
    lines += [
        "",
        "Held-out documents: "
        + ", ".join(f"{k} {v}" for k, v in held["documents"].items())
        + ". Probes are eval items as question + reference answer text; "
        + (
            "none of them shares a decontamination window with the training split "
            "(checked on the prepared data)."
            if not dirty
            else f"CONTAMINATED items found in the training split: {dirty}."
        ),
    ]
    if costs["arms"] and costs["prefix_seconds_per_seed"]:
        lines.append(
            f"Cost per seed: prefix {costs['prefix_seconds_per_seed']:.0f}s + {costs['arms']} x "
            f"anneal {costs['arm_seconds_per_seed']:.0f}s = {costs['branched_seconds_per_seed']:.0f}s "
            f"(separate runs: {costs['separate_runs_seconds_per_seed']:.0f}s); whole study: train "
            f"{costs['train_seconds']:.0f}s, scoring {costs['eval_seconds']:.0f}s."
        )
    lines.append("Inputs (sha256): " + ", ".join(f"{k} {v[:12]}" for k, v in sorted(hashes.items())) + ".")
    return "\n".join(lines) + "\n"


def noise_markdown(rows: dict[str, Any], confidence: float) -> str:
    """The noise table: per metric, arm spread, seed std, SNR and the minimum detectable difference."""
    lines = [
        "Noise per metric over the arms (SNR: spread of the arms' means over the pooled seed std, after "
        f"Signal and Noise, arXiv 2508.13144; MDD: minimum detectable difference at {confidence:.0%}, "
        "power 80%, at the seeds used):",
        "",
        "| metric | seeds | arm spread | seed std | SNR | MDD |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in rows.items():
        lines.append(
            f"| {m} | {r['seeds']} | {r['spread']:.4f} | {r['seed_std']:.4f} | {r['snr']:.2f} | {r['mdd']:.4f} |"
        )
    return "\n".join(lines)


def plot(runs: dict[str, Any], summary: dict[str, Any], reference: str, path: str) -> None:
    """Validation loss per domain along prefix and arms (stage switch marked), and probe deltas."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted(runs["seeds"])
    per_run: dict[str, list[dict[str, list]]] = {}
    for seed in seeds:
        entry = runs["seeds"][seed]
        per_run.setdefault(PREFIX, []).append(curves(entry["prefix"]["workdir"]))
        for name, arm in entry["arms"].items():
            per_run.setdefault(name, []).append(curves(arm["workdir"]))
    domains = sorted({d for cs in per_run.values() for c in cs for d in c})
    color = {name: "0.4" if name == PREFIX else f"C{i}" for i, name in enumerate(per_run)}
    switch = runs["seeds"][seeds[0]]["prefix"]["step"]
    fig, axes = plt.subplots(1, len(domains) + 1, figsize=(4.2 * (len(domains) + 1), 3.6))
    axes = np.atleast_1d(axes)
    for ax, domain in zip(axes, domains):
        for name, cs in per_run.items():
            series = [dict(c.get(domain, [])) for c in cs]
            steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
            steps = [s for s in steps if (s <= switch if name == PREFIX else s >= switch)]
            if not steps:
                continue
            values = np.array([[s[step] for step in steps] for s in series])
            (line,) = ax.plot(
                steps, values.mean(0), label=name, lw=1.6 if name != PREFIX else 1.0, color=color[name]
            )
            if len(series) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2, color=line.get_color())
        ax.axvline(switch, ls="--", color="k", lw=0.8)
        ax.text(switch, ax.get_ylim()[1], " anneal", va="top", fontsize=8)
        ax.set_title(f"validation loss: {domain}")
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    arms = list(summary["comparisons"])
    metrics = [m for m in summary["metrics"] if summary["delta"].get(m)]
    width = 0.8 / max(len(arms), 1)
    for i, label in enumerate(arms):
        ds = [summary["delta"][m].get(label, {"mean": 0.0, "std": 0.0}) for m in metrics]
        arm, base = summary["comparisons"][label]
        ax.bar(
            np.arange(len(metrics)) + i * width,
            [d["mean"] for d in ds],
            width,
            yerr=[d["std"] for d in ds],
            label=label,
            capsize=2,
            color=color.get(arm),
            hatch="//" if base != reference else None,  # against the arm it names, not the reference
            edgecolor="k" if base != reference else None,
        )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(arms) - 1) / 2)
    ax.set_xticklabels(metrics, rotation=60, fontsize=7)
    ax.set_title(f"loss difference to {reference} (or the named arm)")
    if arms:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with fs.open(path, "wb") as f:
        fig.savefig(f, dpi=110)
    plt.close(fig)


def write(
    config: ml_collections.ConfigDict, runs: dict[str, Any], scores: dict[str, Any], hashes: dict[str, str]
) -> dict[str, Any]:
    """OUTPUT_DIR/report.{json,md,png}; returns the report (with the Markdown and the paths)."""
    reference = config.arms[0]["name"]
    versus = {arm["name"]: arm["versus"] for arm in config.arms if arm.get("versus")}
    summary = summarize(scores["losses"], reference, versus)
    interval = interval_of(config, scores)
    verdicts = verdict(config, summary, interval)
    decided_on = [*config.verdict.lower, *config.verdict.higher, *config.verdict.level]
    outcomes = controls.judge(config, decided_on, interval)
    noise_rows = noise_of(config, summary, scores["losses"])
    costs = cost(runs["timings"])
    text = markdown(config, runs, scores, summary, verdicts, costs, noise_rows, outcomes, hashes)
    out = config.output_dir
    paths = {k: fs.join(out, f"report.{k}") for k in ("json", "md", "png")}
    report = {
        "reference": reference,
        "inputs": hashes,
        "runs": runs,
        "heldout": scores["heldout"],
        "losses": scores["losses"],
        "summary": summary,
        "noise": noise_rows,
        "controls": outcomes,
        "trustworthy": noise.trustworthy(outcomes),
        "verdict": verdicts,
        "cost": costs,
        "markdown": text,
        "paths": paths,
    }
    fs.write_text(paths["json"], json.dumps(report, indent=2) + "\n")
    fs.write_text(paths["md"], text)
    plot(runs, summary, reference, paths["png"])
    return report
