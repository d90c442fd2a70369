"""Parameterised Einsum and Gemma's RMSNorm, with logical axis names on every weight."""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LogicalAxes = Sequence[str | None]


def einsum(
    eqn: str, x: jax.Array, w: jax.Array, dtype: jnp.dtype, out_dtype: jnp.dtype | None = None
) -> jax.Array:
    """`jnp.einsum` of `x` and `w` cast to `dtype`, accumulated in float32 forward and backward.

    The result is in `out_dtype` (default `dtype`); the gradient arriving from it is taken
    in `dtype`, the activation gradients' dtype, and each gradient is returned in its
    operand's own dtype, so a float32 master weight gets a float32-accumulated gradient.
    Why not plain `jnp.einsum`: on CPU, XLA's bf16 x bf16 -> bf16 dot and the float32
    dots that autodiff makes of a bf16 -> f32 one run at about half the speed of
    bf16 x bf16 -> f32 (bench/RESULTS.md, Trainer). With `dtype` float32 this is exactly
    `jnp.einsum`. Every index of one operand must appear in the other or in the output.
    """
    _check_einsum(eqn)
    return _einsum(eqn, x, w, jnp.dtype(dtype), jnp.dtype(out_dtype or dtype))


def _check_einsum(eqn: str) -> tuple[str, str, str]:
    """(x_axes, w_axes, out_axes) of an equation whose gradients are einsums of the same kind."""
    inputs, out = eqn.replace(" ", "").split("->")
    x_axes, w_axes = inputs.split(",")
    for axes, other in ((x_axes, w_axes), (w_axes, x_axes)):
        if set(axes) - set(other) - set(out) or len(set(axes)) != len(axes):
            raise ValueError(
                f"einsum {eqn!r}: every index of an operand must appear once in it and "
                "also in the other operand or the output"
            )
    return x_axes, w_axes, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4))
def _einsum(eqn, x, w, dtype, out_dtype):
    product = jnp.einsum(eqn, x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)
    return product.astype(out_dtype)


def _einsum_fwd(eqn, x, w, dtype, out_dtype):
    return _einsum(eqn, x, w, dtype, out_dtype), (x, w)


def _einsum_bwd(eqn, dtype, out_dtype, residuals, grad):
    del out_dtype
    x, w = residuals
    x_axes, w_axes, out = _check_einsum(eqn)
    grad, f32 = grad.astype(dtype), jnp.float32
    grad_x = jnp.einsum(f"{out},{w_axes}->{x_axes}", grad, w.astype(dtype), preferred_element_type=f32)
    grad_w = jnp.einsum(f"{x_axes},{out}->{w_axes}", x.astype(dtype), grad, preferred_element_type=f32)
    return grad_x.astype(x.dtype), grad_w.astype(w.dtype)


_einsum.defvjp(_einsum_fwd, _einsum_bwd)


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
        return einsum(eqn, x, w, self.dtype)


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
