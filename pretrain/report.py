"""What a training run says: progress lines (process 0), the metrics.jsonl record of each
logged step (loss, speed, MFU, goodput, mixture weights, held-out loss), the finiteness
check before anything from a step is saved, and the run's summary over all sessions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from pretrain import flops
from pretrain.loss_plot import FILE as LOSS_PLOT
from pretrain.loss_plot import write_loss_plot
from pretrain.metrics import Goodput, MetricsWriter, goodput_over_sessions, read_metrics
from pretrain.model.transformer import count_params
from pretrain.train_config import differences_from_defaults
from pretrain.train_setup import TrainSetup


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf; nothing from that step on is saved."""


class Reporter:
    """Everything the run says: progress lines to `say` (process 0 only), metrics.jsonl,
    the summary.

    Holds the metrics of the steps run since the last finiteness check, the interval
    timing behind tokens/s and MFU, and the mixture stage last announced.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        setup: TrainSetup,
        workdir: str,
        start: int,
        task_names: list[str],
        goodput: Goodput,
        origin: str,
        say: Callable[[str], None],
    ):
        self.config, self.workdir, self.start = config, workdir, start
        self.task_names, self.goodput, self.schedule = task_names, goodput, setup.schedule
        self.say = say
        self.writer = MetricsWriter(workdir, resume_step=start, tensorboard=config.metrics.tensorboard)
        self.session = 1 + max(
            (r.get("goodput", {}).get("session", 0) for r in self.writer.records()), default=-1
        )
        self.tokens_per_step = config.data.global_batch_size * config.data.seq_len
        self.flops_per_step = self.tokens_per_step * flops.train_flops_per_token(
            flops.shape_of(setup.model_config), config.data.seq_len
        )
        peak, peak_source = (
            (config.metrics.peak_flops, "config")
            if config.metrics.peak_flops
            else flops.peak_flops_per_device(setup.model_config.activation_dtype)
        )
        self.peak_total = peak * jax.device_count()
        self.pending: list[tuple[int, dict]] = []
        self.stage = None
        self.interval_start, self.interval_steps = time.perf_counter(), 0
        self.overhead_at_interval_start = self._overhead()
        self.say(origin)
        self.say(
            f"mesh {dict(setup.mesh.shape)} on {jax.device_count()} "
            f"{jax.devices()[0].device_kind} device(s) in {jax.process_count()} "
            f"process(es); peak {peak / 1e12:.3g} TFLOP/s per device ({peak_source}); "
            f"{self.flops_per_step / 1e9:.3g} GFLOP per step; {self.tokens_per_step} "
            "tokens per step"
        )
        for note in setup.replication_notes:
            self.say(f"note: {note}")
        total_steps = config.train.total_steps
        self.say(
            f"model {count_params(setup.model_config) / 1e6:.2f}M parameters; {total_steps} steps, "
            f"{total_steps * self.tokens_per_step:,} tokens to train ({(total_steps - start) * self.tokens_per_step:,} "
            "in this session)"
        )
        self.say(
            "config, where it differs from configs/train/base.py: "
            + ", ".join(differences_from_defaults(config))
        )

    def mixture_at(self, step: int) -> dict[str, float] | None:
        """The mixture weights in effect at `step`; announces each stage as it begins."""
        if self.schedule is None or self.config.data.synthetic:
            return None
        weights = self.schedule.weights_at(step)
        stage = self.schedule.stage_at(step)
        if stage != self.stage:
            word = "mixture stage" if self.stage is None else "mixture stage switch ->"
            self.say(
                f"step {step}: {word} {stage}: " + ", ".join(f"{k}={v:.3f}" for k, v in weights.items() if v)
            )
            self.stage = stage
        return weights

    def collect(self, done: int, metrics: dict) -> None:
        self.pending.append((done, metrics))
        self.interval_steps += 1

    def log_due(self, done: int) -> bool:
        return done % self.config.train.log_every == 0 or done == self.config.train.total_steps

    def check_finite(self, manager) -> None:
        """Raises NonFiniteLossError at the first step whose loss or gradient is NaN/inf."""
        for step, metrics in self.pending:
            if not bool(metrics["finite"]):
                last = manager.latest_step()
                raise NonFiniteLossError(
                    f"loss {float(metrics['loss'])} / grad_norm {float(metrics['grad_norm'])} at "
                    f"step {step} is not finite; stopping without saving. Last good checkpoint: "
                    f"{'none' if last is None else f'step {last}'}. Lower config.optim.peak_lr or "
                    "inspect the data near this step."
                )
        self.pending.clear()

    def log(
        self,
        done: int,
        metrics: dict,
        weights: dict[str, float] | None,
        eval_loss: dict[str, float] | None,
        downstream: dict[str, Any] | None = None,
    ) -> None:
        """Writes the metrics.jsonl record of step `done` and says its line."""
        elapsed = (
            time.perf_counter() - self.interval_start - (self._overhead() - self.overhead_at_interval_start)
        )
        record = log_record(
            jax.device_get(metrics),
            self.task_names,
            weights,
            elapsed / max(self.interval_steps, 1),
            self.tokens_per_step,
            self.flops_per_step,
            self.peak_total,
        )
        if eval_loss is not None:
            record["eval_loss"] = eval_loss
            self.say(
                f"step {done}: validation loss " + ", ".join(f"{k} {v:.4f}" for k, v in eval_loss.items())
            )
        if downstream is not None:
            record["downstream"] = downstream
            self.say(
                f"step {done}: downstream "
                + "; ".join(
                    f"{task} " + " ".join(f"{k} {v:.4g}" for k, v in m.items())
                    for task, m in downstream.items()
                    if task != "seconds"
                )
                + f" ({downstream['seconds']:.1f}s)"
            )
        record["goodput"] = {"session": self.session, **self.goodput.snapshot()}
        self.writer.write(done, record)
        remaining_s = (self.config.train.total_steps - done) * record["step_time"]
        self.say(
            f"step {done}/{self.config.train.total_steps}: loss {record['loss']:.4f} "
            f"lr {record['lr']:.3g} grad_norm {record['grad_norm']:.3g} "
            f"{record['tokens_per_sec']:.0f} tok/s mfu {record['mfu']:.2%} "
            f"tokens {done * self.tokens_per_step:,} eta {_duration(remaining_s)}"
        )
        self.interval_start, self.interval_steps = time.perf_counter(), 0
        self.overhead_at_interval_start = self._overhead()

    def _overhead(self) -> float:
        """Seconds spent compiling, evaluating and checkpointing so far: not step time."""
        lost = self.goodput.lost
        return lost["compile"] + lost["eval"] + lost["checkpoint"]

    def close(self) -> None:
        self.writer.close()

    def finish(self, total_steps: int) -> dict[str, Any]:
        """The run's summary (all sessions, from metrics.jsonl), said by process 0."""
        records = read_metrics(self.workdir) if jax.process_index() == 0 else []
        s = summarize(
            self.workdir, records, self.start, total_steps, time.perf_counter() - self.goodput.started
        )
        plot = write_loss_plot(self.workdir, records, self.schedule) if records else None
        self.say("=" * 72)
        self.say(
            f"training done: {s['total_steps']} steps ({s['steps_this_session']} this "
            f"session, resumed from {s['resumed_from']}) in {s['wall_seconds']:.1f}s"
        )
        if s["first_loss"] is not None:
            self.say(
                f"loss {s['first_loss']:.4f} -> {s['final_loss']:.4f} (min "
                f"{s['min_loss']:.4f}); {s['mean_tokens_per_sec']:.0f} tok/s, MFU "
                f"{s['mean_mfu']:.2%}"
            )
            self.say("loss curve: " + "  ".join(f"{step}:{loss}" for step, loss in s["loss_curve"]))
        g = s.get("goodput")
        if g:
            self.say(
                f"goodput {g['goodput']:.1%} over {g['sessions']} session(s): "
                f"{g['productive_s']:.1f}s training of {g['wall_s']:.1f}s; lost "
                + ", ".join(
                    f"{k.removesuffix('_s')} {g[k]:.1f}s"
                    for k in ("restart_s", "compile_s", "data_wait_s", "checkpoint_s", "eval_s")
                )
            )
        memory = jax.local_devices()[0].memory_stats() or {}  # None on CPU
        if "peak_bytes_in_use" in memory:
            s["peak_device_memory_bytes"] = memory["peak_bytes_in_use"]
            self.say(
                f"peak device memory {memory['peak_bytes_in_use'] / 2**30:.1f} GiB of "
                f"{memory.get('bytes_limit', 0) / 2**30:.1f} GiB (device 0)"
            )
        loss_png = f",{LOSS_PLOT}" if plot else ""
        self.say(f"outputs: {s['workdir']}/{{checkpoints,metrics.jsonl{loss_png},tensorboard,config.json}}")
        return s


def _duration(seconds: float) -> str:
    """12s, 7m05s, 3h02m: an ETA at the precision it has."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def log_record(
    m: dict[str, Any],
    task_names: list[str],
    weights: dict[str, float] | None,
    step_time: float,
    tokens_per_step: int,
    flops_per_step: float,
    peak_total: float,
) -> dict[str, Any]:
    """The metrics.jsonl object for one logged step."""
    record = {
        "loss": float(m["loss"]),
        "z_loss": float(m["z_loss"]),
        "lr": float(m["lr"]),
        "grad_norm": float(m["grad_norm"]),
        "step_time": step_time,
        "tokens_per_sec": tokens_per_step / step_time,
        "mfu": flops_per_step / step_time / peak_total,
        "loss_per_source": {
            name: float(m["task_loss"][i]) for i, name in enumerate(task_names) if m["task_weight"][i] > 0
        },
    }
    if weights is not None:
        record["mixture_weights"] = dict(weights)
    return record


def summarize(workdir: str, records: list[dict], start: int, total_steps: int, wall: float) -> dict[str, Any]:
    """Loss curve, speed and goodput over the whole run (all sessions), from metrics.jsonl's records."""
    losses = [r["loss"] for r in records]
    # Skip the first logged interval when averaging speed: it includes warm-up.
    steady = records[1:] or records
    return {
        "workdir": str(workdir),
        "steps_this_session": total_steps - start,
        "resumed_from": start,
        "total_steps": total_steps,
        "wall_seconds": wall,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "min_loss": min(losses) if losses else None,
        "loss_curve": [(r["step"], round(r["loss"], 4)) for r in records[:: max(1, len(records) // 10)]]
        if records
        else [],
        "mean_tokens_per_sec": float(np.mean([r["tokens_per_sec"] for r in steady])) if steady else None,
        "mean_mfu": float(np.mean([r["mfu"] for r in steady])) if steady else None,
        "goodput": goodput_over_sessions(records) if records else None,
    }
