"""Training throughput (tokens/s, MFU) of pretrain.train, and of MaxText on the same model.

  python bench/train_throughput.py [--steps 60] [--rounds 3] [--remat full] [--maxtext_python /path/to/py3.12/bin/python]
  python bench/train_throughput.py --families=gemma,gemma3 --rounds 3   # tiny Gemma 3 against Gemma 1

Both trainers run the tiny Gemma-shaped model of configs/bench/tiny_gemma_cpu.py (emb 256,
4 layers, 4 query heads, 1 key/value head, head_dim 64, MLP 1024, vocab 32000, seq 256,
batch 8, bf16 activations, fp32 weights) on synthetic data, one after the other on the
same machine, alternating for --rounds rounds so that other load on the machine falls on
both; the speed-up is the ratio of the medians. Steady-state figures skip the first logged
interval (compilation, warm-up). Both sides run the same rematerialisation policy
(--remat: "full" recomputes each block's forward pass, "none" keeps every activation).
MaxText needs Python >= 3.12, so it runs from its own interpreter (--maxtext_python);
without one only our numbers are reported. `--families` runs our trainer once per model
family of the bench config (`configs/bench/tiny_gemma_cpu.py:FAMILY`: the tiny Gemma 3 has
the Gemma 1 model's parameter count to 0.3%), alternating them in each round.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
_STEPS = flags.DEFINE_integer("steps", 60, "Training steps per run.")
_MAXTEXT_PYTHON = flags.DEFINE_string(
    "maxtext_python", None, "Python >= 3.12 with maxtext installed; skip if unset."
)
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Alternating runs of each trainer; medians are compared.")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")
_FAMILIES = flags.DEFINE_list("families", ["gemma"], "Model families of the bench config our trainer runs.")
_REMAT = flags.DEFINE_enum(
    "remat",
    "full",
    ["full"],
    "Rematerialisation policy of both trainers; "
    "'full' means the same in both (nothing inside a block is saved).",
)


def run_ours(steps: int, workdir: Path, family: str = "gemma") -> dict:
    cmd = [
        sys.executable,
        "-m",
        "pretrain.train",
        f"--config=configs/bench/tiny_gemma_cpu.py:{family}",
        f"--config.workdir={workdir}",
        f"--config.train.total_steps={steps}",
        "--config.train.log_every=10",
        "--config.metrics.tensorboard=False",
        f"--config.model.remat_policy={_REMAT.value}",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall = time.perf_counter() - start
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    steady = records[1:]
    step_time = sum(r["step_time"] for r in steady) / len(steady)
    return {
        "trainer": "pretrain.train" if family == "gemma" else f"pretrain.train[{family}]",
        "steps": steps,
        "wall_seconds": wall,
        "step_time": step_time,
        "tokens_per_sec": 8 * 256 / step_time,
        "mfu": sum(r["mfu"] for r in steady) / len(steady),
        "final_loss": records[-1]["loss"],
    }


MAXTEXT_ARGS = [
    "dataset_type=synthetic",
    "enable_checkpointing=False",
    "hardware=cpu",
    "skip_jax_distributed_system=True",
    "per_device_batch_size=8",
    "max_target_length=256",
    "decoder_block=gemma",
    "base_emb_dim=256",
    "base_num_decoder_layers=4",
    "base_num_query_heads=4",
    "base_num_kv_heads=1",
    "head_dim=64",
    "base_mlp_dim=1024",
    "vocab_size=32000",
    "mlp_activations=['gelu','linear']",
    "dtype=bfloat16",
    "weight_dtype=float32",
    "logits_via_embedding=True",
    "scan_layers=False",
    "attention=dot_product",
    "log_period=10",
]


def run_maxtext(python: str, steps: int, workdir: Path) -> dict:
    base_yml = subprocess.run(
        [
            python,
            "-c",
            "import maxtext, os; print(os.path.join(os.path.dirname(maxtext.__file__),"
            " 'configs', 'base.yml'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    cmd = [
        python,
        "-m",
        "maxtext.trainers.pre_train.train",
        base_yml,
        "run_name=bench",
        f"base_output_directory={workdir}",
        f"steps={steps}",
        *MAXTEXT_ARGS,
        f"remat_policy={_REMAT.value}",
    ]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    wall = time.perf_counter() - start
    log = result.stdout + result.stderr
    (workdir / "maxtext.log").write_text(log)
    if result.returncode:
        raise RuntimeError(f"MaxText failed (rc {result.returncode}); log tail:\n{log[-3000:]}")
    # "completed step: 12, seconds: 0.123, TFLOP/s/device: ..., Tokens/s/device: ..., ..."
    steps_done = re.findall(
        r"completed step: (\d+), seconds: ([\d.]+), TFLOP/s/device: ([\d.]+), "
        r"Tokens/s/device: ([\d.]+).*?loss: ([\d.]+)",
        log,
    )
    steady = [s for s in steps_done if int(s[0]) >= 10]
    step_time = sum(float(s[1]) for s in steady) / len(steady)
    return {
        "trainer": "maxtext",
        "steps": steps,
        "wall_seconds": wall,
        "step_time": step_time,
        "tokens_per_sec": 8 * 256 / step_time,
        "final_loss": float(steps_done[-1][4]),
    }


def main(argv) -> None:
    del argv
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(_ROUNDS.value):
            for family in _FAMILIES.value:
                ours = run_ours(_STEPS.value, Path(tmp) / f"ours{round_}_{family}", family)
                results.append(ours)
                print(json.dumps(ours))
            if _MAXTEXT_PYTHON.value:
                theirs = run_maxtext(_MAXTEXT_PYTHON.value, _STEPS.value, Path(tmp) / f"maxtext{round_}")
                results.append(theirs)
                print(json.dumps(theirs))
    medians = {
        name: statistics.median(r["tokens_per_sec"] for r in results if r["trainer"] == name)
        for name in {r["trainer"] for r in results}
    }
    for name, tps in sorted(medians.items()):
        print(f"{name}: median {tps:.0f} tokens/s over {_ROUNDS.value} run(s)")
    for name in medians:
        if name.startswith("pretrain.train[") and "pretrain.train" in medians:
            print(f"{name}: {medians[name] / medians['pretrain.train']:.2f}x the Gemma 1 model's tokens/s")
    if "maxtext" in medians:
        print(f"speed-up: {medians['pretrain.train'] / medians['maxtext']:.2f}x MaxText")
    if _OUT.value:
        Path(_OUT.value).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
