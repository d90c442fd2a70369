"""Runs a mixture's stream for N steps and reports schedule against realized token shares.

    python -m mixtures.inspect --config=configs/mixtures/demo_two_stage.py \\
        --prep_dir=runs/demo/prep --vocab_path=runs/demo/tokenizer/tokenizer.model \\
        --steps=200 --batch_size=8 [--plot=out.png] [--json=out.json]

Prints the schedule table, the realized shares per window of `--window` steps, the fill,
the token balance (tokens read == tokens emitted + tokens still waiting in the packers)
and tokens/s. The JSON is the same for the same config and seed, apart from the speed.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from common import fs
from mixtures.schedule import Schedule
from mixtures.stream import PackedStream

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined when run as a command, so importing this module defines no flags."""
    config_flags.DEFINE_config_file("config", None, "Mixture config file (configs/mixtures/*.py).")
    flags.DEFINE_string("prep_dir", None, "Prepared data directory (PREP_DIR/{web,math,code}).")
    flags.DEFINE_string("vocab_path", None, "SentencePiece tokenizer.model (or its directory).")
    flags.DEFINE_integer("steps", 100, "Steps to draw from the stream.")
    flags.DEFINE_integer("total_steps", None, "Steps the schedule spans (default: --steps).")
    flags.DEFINE_integer("batch_size", 8, "Global batch size (rows per step).")
    flags.DEFINE_integer("seq_len", None, "Row length (default: config.seq_len).")
    flags.DEFINE_integer("window", 50, "Steps per reporting window.")
    flags.DEFINE_string("plot", None, "Write a PNG of schedule against realized shares here.")
    flags.DEFINE_string("json", None, "Write the report as JSON here.")



def windows_report(schedule, task_names: list[str], token_counts: np.ndarray, window: int) -> list[dict[str, Any]]:
    """Scheduled mean weight and realized share of non-padding tokens, per window of steps.

    `token_counts[s, t]` is the number of non-padding tokens task t got at step s.
    """
    out = []
    for start in range(0, len(token_counts), window):
        end = min(start + window, len(token_counts))
        scheduled = np.mean([[schedule.weights_at(s)[t] for t in task_names] for s in range(start, end)], axis=0)
        tokens = token_counts[start:end].sum(0)
        realized = tokens / max(tokens.sum(), 1)
        out.append(dict(start_step=start, end_step=end,
                        scheduled={t: round(float(w), 6) for t, w in zip(task_names, scheduled)},
                        realized={t: round(float(r), 6) for t, r in zip(task_names, realized)}))
    return out


def plot(path: str, schedule, task_names: list[str], windows: list[dict], steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, task in enumerate(task_names):
        color = f"C{i}"
        ax.plot(range(steps), [schedule.weights_at(s)[task] for s in range(steps)], color=color, label=f"{task} scheduled")
        mids = [(w["start_step"] + w["end_step"] - 1) / 2 for w in windows]
        ax.plot(mids, [w["realized"][task] for w in windows], "o", color=color, label=f"{task} realized")
    ax.set_xlabel("step")
    ax.set_ylabel("share of non-padding tokens")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    fs.write_bytes(path, buffer.getvalue())  # through common.fs: PATH may be gs://


def inspect(config, prep_dir: str, vocab_path: str, steps: int, batch_size: int, total_steps: int | None = None,
            seq_len: int | None = None, window: int = 50) -> dict[str, Any]:
    """Draws `steps` batches and measures shares, fill, token balance and speed."""
    if steps <= 0:
        raise ValueError(f"--steps: must be > 0, got {steps}")
    if window <= 0:
        raise ValueError(f"--window: must be > 0, got {window}")
    stream = PackedStream(config, prep_dir, vocab_path, batch_size=batch_size, total_steps=total_steps or steps,
                          seq_len=seq_len, prefetch=0)
    counts = np.zeros((steps, len(stream.task_names)), np.int64)
    started = time.perf_counter()
    for step in range(steps):
        batch = next(stream)
        np.add.at(counts[step], batch["task_ids"], (batch["segment_ids"] > 0).sum(1))
        if step == 0:
            started = time.perf_counter()  # the first batch pays for opening the pipelines
        if (step + 1) % max(steps // 10, 1) == 0:
            print(f"  step {step + 1}/{steps}", flush=True)
    elapsed = time.perf_counter() - started
    tokens_out = int(counts.sum())
    balance = stream.token_counts()
    tokens_in = sum(c["tokens_in"] for c in balance.values())
    tokens_waiting = sum(c["tokens_waiting"] for c in balance.values())
    stream.close()
    timed_tokens = int(counts[1:].sum())
    return dict(
        config=dict(seed=stream.seed, seq_len=stream.seq_len, batch_size=batch_size, steps=steps,
                    total_steps=stream.total_steps),
        schedule=stream.schedule.table(),
        windows=windows_report(stream.schedule, stream.task_names, counts, window),
        fill=round(tokens_out / (steps * batch_size * stream.seq_len), 6),
        tokens_in=tokens_in, tokens_out=tokens_out, tokens_waiting=tokens_waiting,
        tokens_per_sec=round(timed_tokens / elapsed, 1) if steps > 1 and elapsed > 0 else None,
    )


def print_report(report: dict[str, Any]) -> None:
    print("schedule:")
    for row in report["schedule"]:
        weights = ", ".join(f"{t}={w:g}" for t, w in row["weights"].items() if w)
        ramp = " (ramps to next)" if row["interpolate"] else ""
        print(f"  {row['name']:<10} steps {row['start_step']:>7}-{row['end_step']:<7} {weights}{ramp}")
    tasks = list(report["windows"][0]["scheduled"])
    print("realized share of non-padding tokens (scheduled) per window:")
    print("  steps        " + " ".join(f"{t:>15}" for t in tasks))
    worst = 0.0
    for w in report["windows"]:
        cells = " ".join(f"{w['realized'][t]:>6.3f} ({w['scheduled'][t]:.3f})" for t in tasks)
        print(f"  {w['start_step']:>5}-{w['end_step']:<6} {cells}")
        worst = max(worst, max(abs(w["realized"][t] - w["scheduled"][t]) for t in tasks))
    balanced = report["tokens_in"] == report["tokens_out"] + report["tokens_waiting"]
    print(f"max |realized - scheduled| over windows: {worst:.4f}")
    print(f"fill: {report['fill']:.4%}")
    print(f"tokens in {report['tokens_in']} = out {report['tokens_out']} + waiting {report['tokens_waiting']}: "
          f"{'ok' if balanced else 'MISMATCH'}")
    print(f"tokens/s (after the first batch): {report['tokens_per_sec']}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("prep_dir", "vocab_path"):
        if not FLAGS[name].value:
            raise app.UsageError(f"--{name} is required")
    report = inspect(FLAGS.config, FLAGS.prep_dir, FLAGS.vocab_path, FLAGS.steps, FLAGS.batch_size,
                     FLAGS.total_steps, FLAGS.seq_len, FLAGS.window)
    print_report(report)
    if FLAGS.json:
        fs.write_text(FLAGS.json, json.dumps(report, indent=1))
        print(f"wrote {FLAGS.json}")
    if FLAGS.plot:
        plot(FLAGS.plot, Schedule.from_config(FLAGS.config, report["config"]["total_steps"]),
             list(report["windows"][0]["scheduled"]), report["windows"], report["config"]["steps"])
        print(f"wrote {FLAGS.plot}")


def run() -> None:
    _define_flags()
    flags.mark_flag_as_required("config")
    app.run(main)


if __name__ == "__main__":
    run()
