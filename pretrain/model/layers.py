"""Parameterised Einsum and Gemma's RMSNorm, with logical axis names on every weight."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LogicalAxes = Sequence[str | None]


class Einsum(nn.Module):
  """A weight `w` of a fixed shape applied with any einsum equation.

  One weight tensor per projection (heads kept as their own axis) keeps the
  reference's parameter layout, so checkpoints map one to one.
  """

  shape: tuple[int, ...]
  axes: LogicalAxes
  w_init: nn.initializers.Initializer
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, eqn: str, x: jax.Array) -> jax.Array:
    w = self.param(
        "w",
        nn.with_logical_partitioning(self.w_init, tuple(self.axes)),
        self.shape,
        self.param_dtype,
    )
    return jnp.einsum(eqn, x.astype(self.dtype), w.astype(self.dtype))


class RMSNorm(nn.Module):
  """RMSNorm with Gemma's `x * (1 + scale)` convention (scale starts at zero), eps 1e-6."""

  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param(
        "scale",
        nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
        (x.shape[-1],),
        self.param_dtype,
    )
    # The statistics are taken in float32 so bf16 activations do not lose the mean square.
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = x32 * jax.lax.rsqrt(var + self.epsilon)
    return (normed * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)
