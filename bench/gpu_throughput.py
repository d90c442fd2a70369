"""Gemma 2B at 8192 tokens on one NVIDIA GPU: pretrain.train against a transformers peer.

  XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 python bench/gpu_throughput.py --out DIR [--parts matmul,attention,peer,train]

Parts, each in its own process with its own timeout, results appended to DIR/results.jsonl
as they finish and a table printed last:
- matmul: one 8192^3 bf16 matmul in JAX (random operands), the ceiling the step's GEMMs meet;
- attention: forward + backward of one layer's attention core (4 x 8192 tokens, 8 query
  heads, 1 key/value head of 256), today's dense-mask cuDNN call against the packed layout,
  on rows packed with ~1.2k-token documents and on one document per row; and the packed
  call's agreement with the float32 XLA reference (values and gradients);
- loss: forward + backward of the training objective through the tied output layer alone
  (4 x 8192 hidden states of 2048, Gemma's 256,128-entry vocabulary, z-loss on) in each
  cross-entropy form: full float32 logits, `vocab_chunks` (the output layer recomputed in
  the backward pass), `token_chunks` (gradient built in the forward pass); time and the
  compiler's temporary memory of each;
- peer: transformers' GemmaForCausalLM at the same shape (random init, fp32 weights, bf16
  autocast, SDPA, gradient checkpointing, fused AdamW), one document per row;
- train: `python -m pretrain.train --config=configs/bench/gpu_2b_synthetic.py` (the shipped
  configs/train/gpu_2b.py on synthetic rows), as shipped and with each --variant's config
  overrides; tokens/s and MFU
  from its metrics.jsonl (the first logged interval, compilation, skipped) and its peak
  device memory.
MFU counts FLOPs as pretrain/flops.py does (PaLM's count, causal attention over the whole
row) against 989 TFLOP/s (H100/H200 dense bf16) and against the measured matmul rate.
Needs no data, TensorFlow, Grain or network: the GPU machines it was written for have none.
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
DATASHEET_PEAK = 989e12
SEQ, DOC_TOKENS = 8192, 1200  # DOC_TOKENS as configs/bench/gpu_2b_synthetic.py

_OUT = flags.DEFINE_string("out", "gpu_bench", "Folder for results.jsonl and logs.txt.")
_PARTS = flags.DEFINE_list(
    "parts", ["matmul", "attention", "loss", "peer", "train"], "Parts to run, in order."
)
_LOSS_SHAPE = flags.DEFINE_list(
    "loss_shape", ["4", "8192", "2048", "256128"], "rows, tokens, width, vocabulary of the loss part."
)
_LOSS_FORMS = flags.DEFINE_list(
    "loss_forms",
    ["logits", "vocab:8", "vocab:32", "token:8", "token:16", "token:32"],
    "Cross-entropy forms the loss part times: logits, vocab:N, token:N.",
)
_STEPS = flags.DEFINE_integer("steps", 10, "Training steps per pretrain.train run (logged every 2).")
_DEADLINE = flags.DEFINE_integer("deadline_s", 560, "Skip what would start after this many seconds.")
_TIMEOUT = flags.DEFINE_integer("timeout_s", 200, "Per-run limit in seconds.")
_VARIANTS = flags.DEFINE_multi_string(
    "variant",
    [
        "one_document_per_row=data.synthetic_document_tokens=0",
        "token_chunks_16=model.vocab_chunks=0,model.token_chunks=16",
    ],
    "NAME=FIELD=VALUE[,FIELD=VALUE...]: a pretrain.train run with these overrides of the shipped config.",
)
_TRAIN_CONFIG = flags.DEFINE_string(
    "train_config",
    "configs/bench/gpu_2b_synthetic.py",
    "The shipped config the train part runs (CPU smoke tests: another).",
)
_WORKER = flags.DEFINE_string("worker", None, "Internal: run one part in this process.")
_START = time.perf_counter()


def main(argv):
    del argv
    if _WORKER.value:
        result = WORKERS[_WORKER.value]()
        print("RESULT " + json.dumps(result), flush=True)
        return
    out = Path(_OUT.value).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for part in _PARTS.value:
        jobs = train_jobs() if part == "train" else [(part, worker_command(part), {})]
        for name, cmd, extra in jobs:
            if time.perf_counter() - _START > _DEADLINE.value:
                results.append({"part": part, "name": name, "error": "skipped: past --deadline_s"})
                continue
            results.append({"part": part, "name": name, **run_job(cmd, out / "logs.txt", extra)})
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(results[-1]) + "\n")
            print(json.dumps(results[-1]), flush=True)
    print(table(results))


def worker_command(part: str) -> list[str]:
    loss_flags = [
        f"--loss_shape={','.join(_LOSS_SHAPE.value)}",
        f"--loss_forms={','.join(_LOSS_FORMS.value)}",
    ]
    return [sys.executable, str(Path(__file__).resolve()), f"--worker={part}", *loss_flags]


def train_jobs() -> list[tuple[str, list[str], dict]]:
    """The shipped config, then each --variant, as pretrain.train commands."""
    jobs = [("gpu_2b", [])]
    for spec in _VARIANTS.value:
        name, overrides = spec.split("=", 1)
        jobs.append((name, [f"--config.{o}" for o in overrides.split(",")]))
    steps = _STEPS.value
    commands = []
    for name, overrides in jobs:
        workdir = Path(tempfile.mkdtemp(prefix=f"gpu-bench-{name}-"))
        cmd = [
            sys.executable,
            "-m",
            "pretrain.train",
            f"--config={_TRAIN_CONFIG.value}",
            f"--workdir={workdir}",
            f"--config.train.total_steps={steps}",
            *overrides,
        ]
        commands.append((name, cmd, {"workdir": str(workdir), "overrides": overrides}))
    return commands


def run_job(cmd: list[str], log: Path, extra: dict) -> dict:
    """Runs one part or training run under the per-run timeout; its result, or the error."""
    start = time.perf_counter()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=_TIMEOUT.value)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output, code = f"{e.stdout or ''}{e.stderr or ''}\nTIMEOUT after {_TIMEOUT.value}s", -1
    if not isinstance(output, str):
        output = output.decode(errors="replace")
    with open(log, "a") as f:
        f.write(f"\n===== {' '.join(cmd)}\n{output}")
    result = {"wall_s": round(time.perf_counter() - start, 1), **extra}
    found = re.findall(r"^RESULT (.*)$", output, re.M)
    if found:
        result.update(json.loads(found[-1]))
    elif "workdir" in extra and code == 0:
        result.update(train_result(Path(extra["workdir"]), output))
    else:
        result["error"] = f"exit {code}: " + " | ".join(output.strip().splitlines()[-3:])[-600:]
    return result


def train_result(workdir: Path, output: str) -> dict:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steady = records[1:] or records
    peak = re.findall(r"peak device memory ([\d.]+) GiB", output)
    return {
        "tokens_per_s": statistics.median(r["tokens_per_sec"] for r in steady),
        "mfu": statistics.median(r["mfu"] for r in steady),
        "step_s": statistics.median(r["step_time"] for r in steady),
        "loss": [round(r["loss"], 3) for r in records],
        "peak_gib": float(peak[-1]) if peak else None,
    }


# ----------------------------------------------------------------------------- workers


def timed(fn, *args, repeats: int = 10) -> float:
    """Median seconds of `fn(*args)` after two warm-up calls, synchronised on the result."""
    import jax

    for _ in range(2):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_worker() -> dict:
    import jax
    import jax.numpy as jnp

    n = 8192
    a, b = (jax.random.normal(k, (n, n), jnp.bfloat16) for k in jax.random.split(jax.random.key(0)))
    seconds = timed(jax.jit(lambda x, y: x @ y), a, b)
    return {
        "tflops": 2 * n**3 / seconds / 1e12,
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
    }


def packed_segments(rows: int, length: int, seed: int = 0):
    """Segment ids of rows packed with geometric-length documents of mean DOC_TOKENS."""
    from pretrain.data import SyntheticBatches

    batch = next(SyntheticBatches(seed, rows, length, 100, document_tokens=DOC_TOKENS))
    return batch["segment_ids"]


def attention_worker() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from pretrain.model import attention

    result: dict = {}
    # Agreement with the float32 reference on fresh random inputs, 2 rows of 2048 tokens.
    keys = jax.random.split(jax.random.key(1), 4)
    shape, kv_shape = (2, 2048, 8, 256), (2, 2048, 1, 256)
    q, k, v, probe = (
        jax.random.normal(keys[0], shape, jnp.bfloat16) / 16,
        jax.random.normal(keys[1], kv_shape, jnp.bfloat16),
        jax.random.normal(keys[2], kv_shape, jnp.bfloat16),
        jax.random.normal(keys[3], shape, jnp.float32),
    )
    seg = jnp.asarray(packed_segments(2, 2048, seed=1))

    def loss_and_grads(fn, *xs):
        return jax.jit(
            jax.value_and_grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * probe), argnums=(0, 1, 2))
        )(*xs)

    want = loss_and_grads(
        lambda a, b, c: attention.xla_attention(a, b, c, seg, jnp.float32),
        *(x.astype(jnp.float32) for x in (q, k, v)),
    )
    for name, max_documents in (("packed", 16), ("dense_fallback", 2)):
        try:
            got = loss_and_grads(
                lambda a, b, c, m=max_documents: attention.cudnn_attention(a, b, c, seg, m), q, k, v
            )
            result[f"rel_error_{name}"] = max(
                float(
                    np.linalg.norm(np.asarray(g, np.float64) - np.asarray(w, np.float64)) / np.linalg.norm(w)
                )
                for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want))
            )
        except Exception as e:  # noqa: BLE001 - report it, go on to the timings
            result[f"rel_error_{name}"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
    # Speed at the training shape: 4 rows of 8192.
    shape, kv_shape = (4, SEQ, 8, 256), (4, SEQ, 1, 256)
    q = jax.random.normal(keys[0], shape, jnp.bfloat16) / 16
    k = jax.random.normal(keys[1], kv_shape, jnp.bfloat16)
    v = jax.random.normal(keys[2], kv_shape, jnp.bfloat16)
    layouts = {"packed_docs": jnp.asarray(packed_segments(4, SEQ)), "one_doc": jnp.ones((4, SEQ), jnp.int32)}
    cores = {
        "dense_mask": lambda a, b, c, s: attention.dense_mask_attention(a, b, c, s),
        "cudnn_packed": lambda a, b, c, s: attention.cudnn_attention(a, b, c, s, 16),
        "cudnn_packed_m64": lambda a, b, c, s: attention.cudnn_attention(a, b, c, s, 64),
        "pallas_triton": pallas_triton_attention,
    }
    for layout, s in layouts.items():
        for name, core in cores.items():
            step = jax.jit(
                jax.grad(
                    lambda a, b, c, s, core=core: jnp.sum(core(a, b, c, s).astype(jnp.float32)), (0, 1, 2)
                )
            )
            try:
                result[f"ms_{name}_{layout}"] = 1e3 * timed(step, q, k, v, s)
            except Exception as e:  # noqa: BLE001 - report the failing core, time the others
                result[f"ms_{name}_{layout}"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
    return result


def pallas_triton_attention(q, k, v, segment_ids):
    """Pallas's Triton flash attention (segment ids, causal), key/value heads repeated to N."""
    import jax.numpy as jnp
    from jax.experimental.pallas.ops.gpu import attention as pallas_attention

    repeat = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, repeat, axis=2), jnp.repeat(v, repeat, axis=2)
    sizes = pallas_attention.BlockSizes(
        block_q=64, block_k=64, block_q_dkv=64, block_kv_dkv=64, block_q_dq=64, block_kv_dq=64
    )
    return pallas_attention.mha(q, k, v, segment_ids, sm_scale=1.0, causal=True, block_sizes=sizes)


def loss_worker() -> dict:
    """Seconds and temporary memory of the objective's value and gradients in each loss form."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from pretrain.model import cross_entropy

    rows, length, width, vocab = (int(x) for x in _LOSS_SHAPE.value)
    keys = jax.random.split(jax.random.key(2), 3)
    hidden = jax.random.normal(keys[0], (rows, length, width), jnp.bfloat16)
    embedding = jax.random.normal(keys[1], (vocab, width), jnp.float32) / width**0.5
    targets = jax.random.randint(keys[2], (rows, length), 0, vocab)
    weights = jnp.full((rows, length), 1.0 / (rows * length), jnp.float32)
    z_loss, dtype = 1e-4, jnp.bfloat16

    def objective(form: str):
        fields = cross_entropy.form_fields(form)
        if any(fields.values()):
            return lambda h, e: cross_entropy.fused_objective(
                h, e, targets, weights, z_loss, dtype, **fields
            )[0]

        def full_logits(h, e):
            logits = jnp.einsum("BTD,VD->BTV", h, e.astype(dtype), preferred_element_type=jnp.float32)
            ce, log_z = cross_entropy.token_losses(logits, targets)
            return cross_entropy.weighted_objective(ce, log_z, weights, z_loss)

        return full_logits

    result: dict = {"shape": [rows, length, width, vocab]}
    first = None  # the first form's value and gradients: every other form is compared with it
    for form in _LOSS_FORMS.value:
        step = jax.jit(jax.value_and_grad(objective(form), argnums=(0, 1)))
        try:
            memory = step.lower(hidden, embedding).compile().memory_analysis()
            result[f"ms_{form}"] = 1e3 * timed(step, hidden, embedding)
            result[f"temp_gib_{form}"] = memory.temp_size_in_bytes / 2**30
            leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(step(hidden, embedding))]
        except Exception as e:  # noqa: BLE001 - e.g. full logits out of memory: time the others
            result[f"ms_{form}"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
            continue
        if first is None:
            first = leaves
        result[f"rel_error_{form}"] = max(
            float(np.linalg.norm(g - w) / np.linalg.norm(w)) for g, w in zip(leaves, first)
        )
    return result


def peer_worker(rows: int = 2, steps: int = 6) -> dict:
    """transformers GemmaForCausalLM, the way a plain PyTorch loop trains it."""
    import torch
    import transformers

    from pretrain import flops

    config = transformers.GemmaConfig(
        vocab_size=256_128,
        hidden_size=2048,
        intermediate_size=16_384,
        num_hidden_layers=18,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=256,
        max_position_embeddings=SEQ,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = transformers.GemmaForCausalLM(config).cuda()
    model.gradient_checkpointing_enable()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    tokens = torch.randint(4, config.vocab_size, (rows, SEQ + 1), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=tokens[:, :-1], labels=tokens[:, 1:]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    shape = flops.Shape(18, 2048, 16_384, 8, 1, 256, 256_128)
    return {
        "tokens_per_s": rows * SEQ / seconds,
        "mfu": rows * SEQ * flops.train_flops_per_token(shape, SEQ) / seconds / DATASHEET_PEAK,
        "step_s": seconds,
        "loss": float(loss),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "rows": rows,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


WORKERS = {"matmul": matmul_worker, "attention": attention_worker, "loss": loss_worker, "peer": peer_worker}


def table(results: list[dict]) -> str:
    """Markdown table: tokens/s, MFU vs the data sheet and vs the measured matmul, memory."""
    matmul = next((r.get("tflops") for r in results if r["part"] == "matmul"), None)
    lines = [
        "| run | tokens/s | MFU (989) | MFU (matmul) | step s | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["part"] == "matmul" and "tflops" in r:
            lines.append(
                f"| 8192^3 bf16 matmul | {r['tflops']:.0f} TFLOP/s ({r['device']}, jax {r['jax']}) |||||"
            )
        elif "tokens_per_s" in r:
            vs_matmul = f"{r['mfu'] * DATASHEET_PEAK / (matmul * 1e12):.1%}" if matmul else "-"
            peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") else "-"
            lines.append(
                f"| {r['part']}:{r['name']} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {vs_matmul} "
                f"| {r['step_s']:.3f} | {peak} |"
            )
        elif r["part"] in ("attention", "loss") and "error" not in r:
            lines.append(
                f"| {r['part']} | " + json.dumps({k: v for k, v in r.items() if k != "part"}) + " |||||"
            )
        else:
            lines.append(f"| {r['part']}:{r['name']} | {r.get('error', '')} |||||")
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main)
