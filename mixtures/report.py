"""Reads a packed mixture for N steps and reports schedule against realized token shares.

    python -m mixtures.report --config=configs/mixtures/demo_two_stage.py --packed_dir=PACKED \\
        --steps=450 --batch_size=8 [--plot=out.png] [--json=out.json]

Reads exactly what the trainer reads (`mixtures.stream.MixtureStream` over the rows that
`mixtures.pack` wrote) and prints the schedule table, the realized share of non-padding
tokens per window of `--window` steps, the fill, the packed data's token balance (tokens
read == tokens packed, per task) and tokens/s. The JSON is the same for the same config,
seed and packed data, apart from the speed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import ml_collections
import numpy as np
from absl import flags

from common import checks, cli, fs, outputs
from mixtures import manifest as manifest_lib
from mixtures.schedule import Schedule
from mixtures.stream import MixtureStream

FLAGS = flags.FLAGS


def _report_flags() -> None:
    flags.DEFINE_integer("steps", 100, "Steps to read.")
    flags.DEFINE_integer("total_steps", None, "Steps the schedule spans (default: --steps).")
    flags.DEFINE_integer("batch_size", 8, "Global batch size (rows per step).")
    flags.DEFINE_integer("window", 50, "Steps per reporting window.")
    flags.DEFINE_string("plot", None, "Write a PNG of schedule against realized shares here.")
    flags.DEFINE_string("json", None, "Write the report as JSON here.")
    flags.DEFINE_bool("overwrite", False, "Replace existing --json / --plot files.")


def windows_report(
    schedule: Schedule, task_names: list[str], token_counts: np.ndarray, window: int
) -> list[dict[str, Any]]:
    """Scheduled mean weight and realized share of non-padding tokens, per window of steps.

    `token_counts[s, t]` is the number of non-padding tokens task t got at step s.
    """
    out = []
    for start in range(0, len(token_counts), window):
        end = min(start + window, len(token_counts))
        scheduled = np.mean(
            [[schedule.weights_at(s)[t] for t in task_names] for s in range(start, end)], axis=0
        )
        tokens = token_counts[start:end].sum(0)
        realized = tokens / max(tokens.sum(), 1)
        out.append(
            dict(
                start_step=start,
                end_step=end,
                scheduled={t: round(float(w), 6) for t, w in zip(task_names, scheduled)},
                realized={t: round(float(r), 6) for t, r in zip(task_names, realized)},
            )
        )
    return out


def plot(
    path: str,
    schedule: Schedule,
    task_names: list[str],
    windows: list[dict],
    steps: int,
    overwrite: bool = False,
) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, task in enumerate(task_names):
        color = f"C{i}"
        ax.plot(
            range(steps),
            [schedule.weights_at(s)[task] for s in range(steps)],
            color=color,
            label=f"{task} scheduled",
        )
        mids = [(w["start_step"] + w["end_step"] - 1) / 2 for w in windows]
        ax.plot(mids, [w["realized"][task] for w in windows], "o", color=color, label=f"{task} realized")
    ax.set_xlabel("step")
    ax.set_ylabel("share of non-padding tokens")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    outputs.write_file(
        fs.resolve(path), lambda tmp: fs.write_bytes(tmp, buffer.getvalue()), overwrite=overwrite
    )


def report(
    config: ml_collections.ConfigDict,
    packed_dir: str,
    steps: int,
    batch_size: int,
    total_steps: int | None = None,
    window: int = 50,
) -> dict[str, Any]:
    """Reads `steps` batches and measures shares, fill and speed; adds the packing balance."""
    if steps <= 0:
        raise ValueError(f"--steps: must be > 0, got {steps}")
    if window <= 0:
        raise ValueError(f"--window: must be > 0, got {window}")
    stream = MixtureStream(config, packed_dir, batch_size=batch_size, total_steps=total_steps or steps)
    counts = np.zeros((steps, len(stream.task_names)), np.int64)
    started = time.perf_counter()
    with stream:
        for step in range(steps):
            batch = next(stream)
            np.add.at(counts[step], batch["task_ids"], (batch["segment_ids"] > 0).sum(1))
            if step == 0:
                started = time.perf_counter()  # the first batch pays for opening the files
    elapsed = time.perf_counter() - started
    tokens_out = int(counts.sum())
    packed = stream.manifest["splits"]["train"]
    return dict(
        config=dict(
            seed=stream.seed,
            seq_len=stream.seq_len,
            batch_size=batch_size,
            steps=steps,
            total_steps=stream.total_steps,
        ),
        schedule=stream.schedule.table(),
        windows=windows_report(stream.schedule, stream.task_names, counts, window),
        fill=round(tokens_out / (steps * batch_size * stream.seq_len), 6),
        tokens_read=tokens_out,
        packed={
            t: {k: packed[t][k] for k in ("documents", "rows", "tokens_read", "tokens_out", "fill")}
            for t in stream.task_names
        },
        packed_fingerprint=stream.manifest["fingerprint"],
        tokens_per_sec=round(int(counts[1:].sum()) / elapsed, 1) if steps > 1 and elapsed > 0 else None,
    )


def format_report(r: dict[str, Any]) -> str:
    """The report as the command prints it: schedule, realized shares, packed data, speed."""
    lines = ["schedule:"]
    for row in r["schedule"]:
        weights = ", ".join(f"{t}={w:g}" for t, w in row["weights"].items() if w)
        ramp = " (ramps to next)" if row["interpolate"] else ""
        lines.append(f"  {row['name']:<10} steps {row['start_step']:>7}-{row['end_step']:<7} {weights}{ramp}")
    tasks = list(r["windows"][0]["scheduled"])
    lines.append("realized share of non-padding tokens (scheduled) per window:")
    lines.append("  steps        " + " ".join(f"{t:>15}" for t in tasks))
    worst = 0.0
    for w in r["windows"]:
        cells = " ".join(f"{w['realized'][t]:>6.3f} ({w['scheduled'][t]:.3f})" for t in tasks)
        lines.append(f"  {w['start_step']:>5}-{w['end_step']:<6} {cells}")
        worst = max(worst, max(abs(w["realized"][t] - w["scheduled"][t]) for t in tasks))
    lines.append(f"max |realized - scheduled| over windows: {worst:.4f}")
    lines.append(f"fill of the rows read: {r['fill']:.4%}")
    lines.append("packed data (train split): task, documents, rows, tokens read -> packed, fill")
    for task, s in r["packed"].items():
        ok = "ok" if s["tokens_read"] == s["tokens_out"] else "MISMATCH"
        fill = f"{s['fill']:.2%}" if s["fill"] is not None else "-"
        lines.append(
            f"  {task:<10} {s['documents']:>8} {s['rows']:>8} {s['tokens_read']:>12} -> {s['tokens_out']:<12} "
            f"{fill:>8} {ok}"
        )
    lines.append(f"tokens/s (after the first batch): {r['tokens_per_sec']}")
    return "\n".join(lines)


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    if argv:
        raise SystemExit(f"unexpected arguments: {argv}")
    packed = fs.resolve(config.pack.output)
    checks.require(
        fs.exists(fs.join(packed, manifest_lib.FILE_NAME)),
        "pack.output",
        "must be a packed-data directory (python -m mixtures.pack)",
        packed,
    )
    written = {"--json": FLAGS.json, "--plot": FLAGS.plot}
    for flag, path in written.items():  # before reading: never an input, nor a file of a run
        if path:
            outputs.check_file(path, field=flag, overwrite=FLAGS.overwrite, inputs=[packed])
    r = report(config, packed, FLAGS.steps, FLAGS.batch_size, FLAGS.total_steps, FLAGS.window)
    print(format_report(r))
    if FLAGS.json:
        text = json.dumps(r, indent=1) + "\n"
        outputs.write_file(
            fs.resolve(FLAGS.json), lambda path: fs.write_text(path, text), overwrite=FLAGS.overwrite
        )
        print(f"wrote {FLAGS.json}")
    if FLAGS.plot:
        plot(
            FLAGS.plot,
            Schedule.from_config(config, r["config"]["total_steps"]),
            list(r["windows"][0]["scheduled"]),
            r["windows"],
            r["config"]["steps"],
            overwrite=FLAGS.overwrite,
        )
        print(f"wrote {FLAGS.plot}")


def run() -> None:
    cli.run(
        main,
        doc=__doc__,
        default_config=None,
        shortcuts=[cli.Shortcut("packed_dir", "pack.output", "Packed directory (mixtures.pack --output).")],
        required=["pack.output"],
        define_extra_flags=_report_flags,
    )


if __name__ == "__main__":
    run()
