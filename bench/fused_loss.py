"""Train-step time of the CPU bench model with and without the fused, chunked cross-entropy.

  python bench/fused_loss.py [--rounds 5] [--remat full] [--chunks 0,16]

One process, one compiled step per variant (configs/bench/tiny_gemma_cpu.py with
`model.vocab_chunks` set), run in alternating rounds on the same synthetic batch so that
load from other jobs falls on every variant; each variant's best and median step times are
reported. The output layer is ~2/3 of this model's FLOPs, so this isolates the loss path
from the rest of the trainer (bench/train_throughput.py compares whole runs with MaxText).
"""

from __future__ import annotations

import statistics
import time

import jax
from absl import app, flags

from configs.bench import tiny_gemma_cpu
from pretrain import data, sharding
from pretrain.train_setup import build_setup, jitted_train_step

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds; each runs every variant once.")
_REMAT = flags.DEFINE_string("remat", "full", "config.model.remat_policy of every variant.")
_CHUNKS = flags.DEFINE_list("chunks", ["0", "16"], "config.model.vocab_chunks values (0: full logits).")


def compiled_step(chunks: int):
    config = tiny_gemma_cpu.get_config()
    config.model.update(dict(vocab_chunks=chunks, remat_policy=_REMAT.value))
    setup = build_setup(config, sharding.make_mesh(dict(config.mesh)))
    step = jitted_train_step(setup, num_tasks=1)  # the trainer's own step (grad_accum 1, z_loss 0 here)
    source = data.SyntheticBatches(
        0, config.data.global_batch_size, config.data.seq_len, config.model.vocab_size, 0, 1
    )
    batch = data.to_global(next(source), setup.batch_sharding, config.data.global_batch_size)
    state = setup.init(jax.random.PRNGKey(0))
    with jax.set_mesh(setup.mesh):
        compiled = step.lower(state, batch).compile()
    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    return compiled, state, batch, config.data.global_batch_size * config.data.seq_len


def main(argv) -> None:
    del argv
    variants = {int(c): compiled_step(int(c)) for c in _CHUNKS.value}
    times = {c: [] for c in variants}
    for _ in range(_ROUNDS.value):
        for chunks, (compiled, state, batch, tokens) in variants.items():
            start = time.perf_counter()
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
            times[chunks].append(time.perf_counter() - start)
            variants[chunks] = (compiled, state, batch, tokens)
    for chunks, t in times.items():
        tokens = variants[chunks][3]
        print(
            f"vocab_chunks={chunks:3d} remat={_REMAT.value}: best {min(t):.3f}s "
            f"({tokens / min(t):.0f} tokens/s), median {statistics.median(t):.3f}s, "
            f"all {[round(x, 3) for x in t]}"
        )
    base = min(times[min(times)])
    for chunks, t in times.items():
        print(
            f"speed-up of vocab_chunks={chunks} over vocab_chunks={min(times)}: "
            f"best {base / min(t):.2f}x, median {statistics.median(times[min(times)]) / statistics.median(t):.2f}x"
        )


if __name__ == "__main__":
    app.run(main)
