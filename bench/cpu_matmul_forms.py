"""GFLOP/s of the three ways a bf16 matmul can be compiled, at the tiny bench model's shapes.

  python bench/cpu_matmul_forms.py [--repeats 20]

Why `pretrain.model.layers.einsum` exists: on a CPU, XLA runs bf16 x bf16 -> f32 much
faster than bf16 x bf16 -> bf16 or the upcast float32 dots that autodiff derives from it.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags

_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per form, after one warm-up.")

SHAPES = {"MLP in": (2048, 256, 1024), "MLP out": (2048, 1024, 256), "logits": (2048, 256, 32000)}
FORMS = {
    "bf16 x bf16 -> f32": lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32),
    "bf16 x bf16 -> bf16": lambda a, b: jnp.dot(a, b),
    "upcast, f32 x f32": lambda a, b: jnp.dot(a.astype(jnp.float32), b.astype(jnp.float32)),
}


def gflops(form, a: jax.Array, b: jax.Array, repeats: int) -> float:
    fn = jax.jit(form)
    fn(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(a, b)
    out.block_until_ready()
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] * repeats / (time.perf_counter() - start) / 1e9


def main(argv) -> None:
    del argv
    key = jax.random.key(0)
    print("| product | " + " | ".join(FORMS) + " |")
    print("|---|" + "---|" * len(FORMS))
    for name, (m, k, n) in SHAPES.items():
        a = jax.random.normal(key, (m, k), jnp.bfloat16)
        b = jax.random.normal(key, (k, n), jnp.bfloat16)
        rates = [f"{gflops(form, a, b, _REPEATS.value):.0f} GFLOP/s" for form in FORMS.values()]
        print(f"| [{m},{k}]x[{k},{n}] ({name}) | " + " | ".join(rates) + " |")


if __name__ == "__main__":
    app.run(main)
