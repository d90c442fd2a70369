"""WORKDIR/loss.png: the run's loss curves in one picture, rewritten at the end of each session.

Top: training loss and each held-out domain's validation loss; bottom: training loss per
source (mixture task). The start of each mixture stage after the first (the annealing stage
in a two-stage mixture) is a dashed line, so the effect of the switch shows where it happens.
Drawn with matplotlib's Agg canvas (no display, no pyplot state) from metrics.jsonl records.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common import fs
from mixtures.schedule import Schedule

FILE = "loss.png"


def _series(records: Sequence[dict[str, Any]], field: str) -> dict[str, tuple[list[int], list[float]]]:
    """{name: (steps, values)} of a per-name dict field (`eval_loss`, `loss_per_source`)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in records:
        for name, value in r.get(field, {}).items():
            steps, values = out.setdefault(name, ([], []))
            steps.append(r["step"])
            values.append(value)
    return out


def write_loss_plot(workdir: str, records: Sequence[dict[str, Any]], schedule: Schedule | None) -> str | None:
    """Draws the records' curves to WORKDIR/loss.png; None (nothing written) without records."""
    logged = [r for r in records if "loss" in r]
    if not logged:
        return None
    fig = Figure(figsize=(9, 6.5))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot([r["step"] for r in logged], [r["loss"] for r in logged], color="black", label="train")
    for name, (steps, values) in sorted(_series(records, "eval_loss").items()):
        top.plot(steps, values, "o--", label=f"validation {name}")
    for name, (steps, values) in sorted(_series(logged, "loss_per_source").items()):
        bottom.plot(steps, values, ".-", label=name)
    for stage in schedule.stages[1:] if schedule else []:
        for ax in (top, bottom):
            ax.axvline(stage.start_step, color="grey", linestyle="--", linewidth=1)
        top.annotate(f" {stage.name}", (stage.start_step, 1), xycoords=("data", "axes fraction"), va="top")
    top.set_ylabel("loss (nats/token)")
    bottom.set_ylabel("train loss per source")
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        ax.legend(fontsize=7, ncol=3)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    path = fs.join(workdir, FILE)
    fs.write_bytes(path, buffer.getvalue())
    return path
