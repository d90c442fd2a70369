"""Train-step time of the CPU bench model under each cross-entropy form.

  python bench/fused_loss.py [--rounds 5] [--remat full] [--forms logits,vocab:16,token:8]

Forms: `logits` (full float32 logits), `vocab:N` (model.vocab_chunks=N: the output layer
recomputed in the backward pass), `token:N` (model.token_chunks=N: gradient built in the
forward pass). One process, one compiled step per form (configs/bench/tiny_gemma_cpu.py
with the form set), run in alternating rounds on the same synthetic batch so that
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
from pretrain.model import cross_entropy
from pretrain.train_setup import build_setup, jitted_train_step

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds; each runs every variant once.")
_REMAT = flags.DEFINE_string("remat", "full", "config.model.remat_policy of every variant.")
_FORMS = flags.DEFINE_list(
    "forms", ["logits", "vocab:16", "token:8"], "Loss forms: logits, vocab:N, token:N."
)


def compiled_step(form: str):
    config = tiny_gemma_cpu.get_config()
    try:
        fields = cross_entropy.form_fields(form)
    except ValueError as e:
        raise app.UsageError(f"--forms: {e}") from None
    config.model.update(dict(**fields, remat_policy=_REMAT.value))
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
    variants = {form: compiled_step(form) for form in _FORMS.value}
    times = {form: [] for form in variants}
    for _ in range(_ROUNDS.value):
        for form, (compiled, state, batch, tokens) in variants.items():
            start = time.perf_counter()
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
            times[form].append(time.perf_counter() - start)
            variants[form] = (compiled, state, batch, tokens)
    first = _FORMS.value[0]
    for form, t in times.items():
        tokens = variants[form][3]
        print(
            f"{form:10s} remat={_REMAT.value}: best {min(t):.3f}s ({tokens / min(t):.0f} tokens/s), "
            f"median {statistics.median(t):.3f}s, all {[round(x, 3) for x in t]}; speed-up over {first}: "
            f"best {min(times[first]) / min(t):.2f}x, median "
            f"{statistics.median(times[first]) / statistics.median(t):.2f}x"
        )


if __name__ == "__main__":
    app.run(main)
