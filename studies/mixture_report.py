"""The mixture search's report: what was searched, how well the fit ranks held-out arms, the
proposal, the proof on fresh seeds with bootstrap confidence intervals, and the cost.

OUTPUT_DIR/report.{json,md,png}; the figure plots predicted against measured loss per fitted
metric (held-out arms marked) and the proof's objective differences with their intervals.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections
import numpy as np

from common import fs
from studies import controls
from studies.anneal_report import noise_markdown


def _w(weights: dict[str, float] | None) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in (weights or {}).items() if v)


def _bound(better: str) -> str:
    """How a constraint's metric must compare with its limit."""
    return ">=" if better == "higher" else "<="


def _objective(config: ml_collections.ConfigDict) -> str:
    return " + ".join(f"{c:g} x {m}" if c != 1 else m for m, c in config.search.objective.items())


def markdown(config, arms, fitted, best, proof, paths, costs, wall) -> str:
    s = config.search
    reference = config.arms[0]["name"]
    lines = [
        f"## Mixture search: {s.arms} sampled annealing mixtures + {len(config.arms)} recipes, "
        f"seeds {list(config.seeds)}; proof on fresh seeds {list(s.proof_seeds)}",
        "",
        f"Searched: weights over {', '.join(s.tasks)} from Dirichlet(concentration {s.concentration:g}) around "
        f"{_w(dict(s.center)) or 'the general mixture (' + _w(fitted['general']) + ')'} "
        f"blended {s.uniform_share:.0%} with uniform"
        + (f", bounds {dict((k, tuple(v)) for k, v in s.bounds.items())}" if s.bounds else "")
        + f"; each arm {config.anneal_steps} annealing steps from the same checkpoint, same decay.",
        f"Objective: minimise {_objective(config)}"
        + "".join(
            f"; subject to {c['metric']} {_bound(c.get('better', 'lower'))} {reference} x "
            f"(1 {'-' if c.get('better') == 'higher' else '+'} {c['tolerance']:g})"
            for c in s.constraints
        )
        + ".",
        "",
        "### Fit: loss as a function of the weights",
        "",
        "| metric | model (cross-validated Spearman: " + ", ".join(s.models) + ") | held-out Spearman |",
        "|---|---|---|",
    ]
    for m, f in fitted["fits"].items():
        cv = ", ".join(f"{k} {v['spearman']:+.2f}" for k, v in f["cv"].items())
        h = fitted["holdout"].get(m, {}).get("spearman")
        lines.append(f"| {m} | **{f['model']}** ({cv}) | {'' if h is None else f'{h:+.2f}'} |")
    if "objective" in fitted["holdout"]:
        h = fitted["holdout"]["objective"]
        lines.append(f"| objective | (the metrics' models) | **{h['spearman']:+.2f}** |")
        lines.append("")
        lines.append(
            f"Held-out arms ({', '.join(h['arms'])}) were left out of the fit; Spearman between their "
            "predicted and measured loss."
        )
    p = fitted["proposal"]
    better = {c["metric"]: c.get("better", "lower") for c in s.constraints}
    lines += [
        "",
        "### Proposal",
        "",
        f"**{_w(p['weights'])}**: predicted "
        + ", ".join(f"{m} {v:.4f}" for m, v in p["predicted"].items())
        + f"; objective {p['objective']:.4f} (limits: "
        + ", ".join(f"{m} {_bound(better[m])} {v:.4f}" for m, v in p["limits"].items())
        + ").",
        f"Written as `{paths['mixture']}` (the schedule, its annealing stage from "
        f"{s.anneal_start:g} of training) and `{paths['train']}` (the training config with it).",
        "",
        f"Search arms by measured objective (mean over seeds {list(config.seeds)}):",
        "",
        "| arm | annealing weights | objective measured | predicted (in-sample) |"
        + "".join(f" {c['metric']} |" for c in s.constraints),
        "|---|---|---|---|" + "---|" * len(s.constraints),
    ]
    ordered = sorted(fitted["measured"], key=lambda a: fitted["measured"][a]["objective"])
    for a in ordered:
        v = fitted["measured"][a]
        pred = fitted["predicted"][a]
        po = sum(c * pred[m] for m, c in s.objective.items())
        tag = " (held out)" if a in fitted["held_out"] else (" (best sampled)" if a == best else "")
        weights = dict(zip(fitted["tasks"], fitted["weights"][a]))
        lines.append(
            f"| {a}{tag} | {_w(weights)} | {v['objective']:.4f} | {po:.4f} |"
            + "".join(f" {v[c['metric']]:.4f} |" for c in s.constraints)
        )
    lines += [
        "",
        f"### Proof on fresh seeds {list(s.proof_seeds)}",
        "",
        f"Objective difference proposal - arm, mean over seeds, with its {s.confidence:.0%} bootstrap "
        "interval (seeds and probe items resampled, paired); the proposal beats an arm when the "
        "interval lies below 0.",
        "",
        "| arm | objective | proposal - arm | interval | seed spread | beaten | meets constraints |",
        "|---|---|---|---|---|---|---|",
        f"| {proof['proposal']} | {proof['measured'][proof['proposal']]['objective']:.4f} | | | | | "
        f"{'yes' if proof['constraints_ok'] else 'NO'} |",
    ]
    for a, ci in proof["objective"].items():
        lines.append(
            f"| {a} | {proof['measured'][a]['objective']:.4f} | {ci['difference']:+.4f} | "
            f"[{ci['low']:+.4f}, {ci['high']:+.4f}] | {ci['seed_spread']:.4f} | {'yes' if ci['beats'] else 'NO: ' + ci['verdict']} | "
            f"{'yes' if ci.get('meets_constraints', True) else 'NO'} |"
        )
    for m, ci in proof["constraints"].items():
        lines.append("")
        lines.append(
            f"Constraint {m}: proposal - {reference} {ci['difference']:+.4f} ({ci['relative']:+.2%}; "
            f"interval [{ci['low']:+.4f}, {ci['high']:+.4f}]), limit "
            f"{'-' if ci.get('better') == 'higher' else '+'}{ci['tolerance']:.0%}: "
            f"{'met' if ci['ok'] else 'NOT met'}."
        )
    breakers = [
        a for a, ci in proof["objective"].items() if not ci["beats"] and not ci.get("meets_constraints", True)
    ]
    verdict = (
        "**The proposal wins**: it meets the constraints and beats every contender that meets them by more "
        "than the interval"
        + (
            f" ({', '.join(breakers)}: not beaten beyond the interval, but breaks a constraint)"
            if breakers
            else ""
        )
        + "."
        if proof["wins"]
        else "**The proposal does not win**: "
        + "; ".join(
            [
                f"not beaten beyond the interval: {a}"
                for a, ci in proof["objective"].items()
                if not ci["beats"] and ci.get("meets_constraints", True)
            ]
            + [f"constraint {m} not met" for m, ci in proof["constraints"].items() if not ci["ok"]]
        )
        + "."
    )
    lines += ["", verdict, ""]
    lines.append(
        f"Cost: {costs['runs']} arm runs, training {costs['train_seconds']:.0f}s + scoring "
        f"{costs['score_seconds']:.0f}s (+ prefixes {costs['prefix_seconds']:.0f}s); this call {wall:.0f}s wall."
    )
    return "\n".join(lines) + "\n"


def plot(config, fitted, proof, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(fitted["fits"])
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(4 * (len(metrics) + 1), 3.6))
    axes = np.atleast_1d(axes)
    held = set(fitted["held_out"])
    for ax, m in zip(axes, metrics):
        for group, color in ((False, "C0"), (True, "C3")):
            arms = [a for a in fitted["measured"] if (a in held) == group]
            if group and m in fitted["holdout"]:
                pred, meas = fitted["holdout"][m]["predicted"], fitted["holdout"][m]["measured"]
            else:
                pred = [fitted["predicted"][a][m] for a in arms]
                meas = [fitted["measured"][a][m] for a in arms]
            ax.scatter(meas, pred, s=14, color=color, label="held out (fit without)" if group else "fitted")
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.7)
        ax.set_title(f"{m}: {fitted['fits'][m]['model']}", fontsize=9)
        ax.set_xlabel("measured loss")
        ax.set_ylabel("predicted loss")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    names = list(proof["objective"])
    ds = [proof["objective"][a] for a in names]
    ax.bar(
        range(len(names)),
        [d["difference"] for d in ds],
        yerr=[
            [max(d["difference"] - d["low"], 0.0) for d in ds],
            [max(d["high"] - d["difference"], 0.0) for d in ds],
        ],
        capsize=3,
        color=["C2" if d["beats"] else "C7" for d in ds],
    )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, fontsize=8)
    ax.set_title("proof: objective, proposal - arm (CI)", fontsize=9)
    fig.tight_layout()
    with fs.open(path, "wb") as f:
        fig.savefig(f, dpi=110)
    plt.close(fig)


def write(
    config, arms, fitted, best, proof, paths, costs, wall, noise_rows, outcomes, decision, hashes
) -> dict[str, Any]:
    """Writes OUTPUT_DIR/report.{json,md,png}; `costs` is {"search", "proof"} from the search.
    Without a fit (`fitted` None: the objective's SNR is below the floor) the report gives the
    noise, the controls and "no decision"."""
    total = {k: costs["search"][k] + costs["proof"][k] for k in costs["search"]}
    reference = config.arms[0]["name"]
    head = [
        f"**Decision: {decision['summary']}**" + (f": {decision['reason']}." if decision["reason"] else "."),
        "",
        noise_markdown(noise_rows, config.search.confidence),
        "",
        *controls.markdown(outcomes, reference),
        "",
    ]
    if fitted is None:
        text = "\n".join(
            [
                f"## Mixture search: {config.search.arms} sampled annealing mixtures + {len(config.arms)} "
                f"recipes, seeds {list(config.seeds)}: no fit",
                "",
                *head,
                f"Cost: {total['runs']} arm runs, training {total['train_seconds']:.0f}s + scoring "
                f"{total['score_seconds']:.0f}s (+ prefixes {total['prefix_seconds']:.0f}s); this call {wall:.0f}s wall.",
            ]
        )
    else:
        body = markdown(config, arms, fitted, best, proof, paths, total, wall)
        first, _, rest = body.partition("\n\n")
        text = "\n\n".join([first, "\n".join(head).rstrip(), rest])
    text += "\n" + "Inputs (sha256): " + ", ".join(f"{k} {v[:12]}" for k, v in sorted(hashes.items())) + ".\n"
    out = config.output_dir
    report_paths = {k: fs.join(out, f"report.{k}") for k in ("json", "md", "png")}
    report = {
        "search": json.loads(config.search.to_json()),
        "inputs": hashes,
        "decision": decision,
        "noise": noise_rows,
        "controls": outcomes,
        "fitted": fitted,
        "best_sampled": best,
        "proof": proof,
        "proposal_configs": paths,
        "cost": {**costs, "wall_seconds": wall},
        "markdown": text,
        "paths": report_paths,
    }
    fs.write_text(report_paths["json"], json.dumps(report, indent=2, default=_jsonable) + "\n")
    fs.write_text(report_paths["md"], text)
    if fitted is not None:
        plot(config, fitted, proof, report_paths["png"])
    else:
        report_paths.pop("png")
    return report


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(type(value))
