"""Generated tokens/s of batched greedy generation: the KV cache against the full recompute.

  python bench/generate_speed.py [--family gemma] [--prompts 8] [--prompt_len 200] [--new_tokens 128]
      [--rounds 3] [--out FILE.json]

The model is the CPU demo's (configs/train/demo_tiny_cpu.py, `--family` gemma, gemma2 or
gemma3), freshly initialised (speed does not depend on the weights). `--prompts` random
prompts of `--prompt_len` tokens generate `--new_tokens` tokens each in one batch
(evals.generate.generate_ids: width the next multiple of 128, no stop at <eos>, so both
sides do the same work), with `KVCacheDecoder` and `RecomputeDecoder`. Each side's compile
is timed apart in a warm-up round; then the two alternate for `--rounds` rounds so that
other load on the machine falls on both. Prints each round, the medians with their
min-max spread, the speed-up (ratio of medians), the load average before and after, and
checks that both sides generated the same ids.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs.train import demo_tiny_cpu  # noqa: E402
from evals import generate  # noqa: E402
from pretrain.model.transformer import Transformer, TransformerConfig  # noqa: E402

flags.DEFINE_enum("family", "gemma", ["gemma", "gemma2", "gemma3"], "the demo model's family")
flags.DEFINE_integer("prompts", 8, "prompts, generated as one batch")
flags.DEFINE_integer("prompt_len", 200, "tokens per prompt")
flags.DEFINE_integer("new_tokens", 128, "tokens generated per prompt")
flags.DEFINE_integer("rounds", 3, "alternating timed rounds per side")
flags.DEFINE_string("out", "", "also write the figures to this JSON file")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    load_before = os.getloadavg()
    config = TransformerConfig.from_config_dict(demo_tiny_cpu.get_config(FLAGS.family).model)
    model = Transformer(config)
    tokens = jnp.zeros((1, 8), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens, tokens, tokens)["params"])

    def forward(params, tokens, positions, segment_ids, **decoding):
        return model.apply({"params": params}, tokens, positions, segment_ids, **decoding)

    rng = np.random.default_rng(0)
    prompts = [
        [2] + rng.integers(4, config.vocab_size, FLAGS.prompt_len - 1).tolist() for _ in range(FLAGS.prompts)
    ]
    decoders = {
        "kv_cache": generate.KVCacheDecoder(forward, config.vocab_size),
        "recompute": generate.RecomputeDecoder(forward, config.vocab_size),
    }

    def run(name):
        start = time.perf_counter()
        ids = generate.generate_ids(
            decoders[name],
            params,
            prompts,
            FLAGS.new_tokens,
            max_length=config.max_seq_len,
            batch_size=FLAGS.prompts,
            eos_id=-1,  # never stops early: the same work on both sides
        )
        return time.perf_counter() - start, ids

    warmup = {name: run(name) for name in decoders}
    assert warmup["kv_cache"][1] == warmup["recompute"][1], "the decoders generated different ids"
    generated = sum(map(len, warmup["kv_cache"][1]))
    width = -(-(FLAGS.prompt_len + FLAGS.new_tokens) // 128) * 128
    print(
        f"{FLAGS.family}: {FLAGS.prompts} prompts x {FLAGS.prompt_len} tokens, {FLAGS.new_tokens} new, width {width}"
    )
    print(
        f"first call (compile + run): kv_cache {warmup['kv_cache'][0]:.1f} s, recompute {warmup['recompute'][0]:.1f} s"
    )
    rates = {name: [] for name in decoders}
    for r in range(FLAGS.rounds):
        order = list(decoders) if r % 2 == 0 else list(reversed(decoders))
        for name in order:
            seconds, _ = run(name)
            rates[name].append(generated / seconds)
        print(
            f"round {r} ({' then '.join(order)}): "
            + ", ".join(f"{n} {rates[n][-1]:.0f} tok/s" for n in decoders)
        )
    medians = {name: statistics.median(v) for name, v in rates.items()}
    for name, values in rates.items():
        print(f"{name}: median {medians[name]:.0f} tok/s (min {min(values):.0f}, max {max(values):.0f})")
    speedup = medians["kv_cache"] / medians["recompute"]
    load_after = os.getloadavg()
    print(
        f"speed-up (ratio of medians): {speedup:.2f}x; load average before {load_before[0]:.1f}, after {load_after[0]:.1f}"
    )
    if FLAGS.out:
        figures = dict(
            family=FLAGS.family,
            prompts=FLAGS.prompts,
            prompt_len=FLAGS.prompt_len,
            new_tokens=FLAGS.new_tokens,
            width=width,
            tokens_per_s=rates,
            medians=medians,
            speedup=speedup,
            load_average=[load_before[0], load_after[0]],
        )
        Path(FLAGS.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
