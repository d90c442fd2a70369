"""Rotary position embedding (RoPE) in the split-half layout used by Gemma."""

import jax
import jax.numpy as jnp


def apply_rope(
    inputs: jax.Array, positions: jax.Array, max_wavelength: float = 10_000.0, scale_factor: float = 1.0
) -> jax.Array:
    """Rotates `inputs` [B, L, N, H] by `positions` [B, L].

    Pairs are (i, i + H/2) rather than adjacent channels, matching the reference
    and Hugging Face's `rotate_half`, so exported weights need no permutation.
    `scale_factor` > 1 is linear position scaling (positions / factor: Gemma 3's global
    layers, Hugging Face's rope_type "linear").
    """
    head_dim = inputs.shape[-1]
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    fraction = 2 * jnp.arange(0, head_dim // 2, dtype=jnp.float32) / head_dim
    timescale = max_wavelength**fraction
    positions = positions.astype(jnp.float32)
    if scale_factor != 1.0:
        positions = positions / scale_factor
    sinusoid = positions[..., None] / timescale  # [B, L, H/2]
    sinusoid = sinusoid[..., None, :]  # broadcast over heads
    sin, cos = jnp.sin(sinusoid), jnp.cos(sinusoid)
    first, second = jnp.split(inputs.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(inputs.dtype)
