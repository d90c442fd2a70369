"""The KV cache of batched decoding over a fixed [B, S] token buffer (evals.generate).

`Transformer(tokens, positions, segment_ids, cache=KVCache.start(positions, segment_ids))`
is the prefill: the ordinary forward over the whole buffer (any attention core), which
also returns every layer's keys and values. A call with a filled cache and `column` is a
step: its T tokens are the buffer's columns [column, column + T); each layer writes their
keys and values there and attends to the cache under `attention.cache_mask` (causal by
column, same segment, the local layers' window in positions), with the training core's
maths (`attention.masked_attention`). Columns past the prompts hold keys of placeholder
tokens after the prefill; causality keeps them unread until a step has overwritten them.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax

LayerKV = tuple[jax.Array, jax.Array]  # one layer's keys and values [B, S, K, H]


@flax.struct.dataclass
class KVCache:
    """Every layer's keys and values [B, S, K, H] in the activation dtype, named as the params
    are ("layer_{i}"; with scan_layers "layers" holds each pattern block's, stacked
    [R, B, S, K, H]), and the buffer's positions and segment ids [B, S]. `layers` is None
    until the prefill has filled it."""

    layers: dict[str, Any] | None
    positions: jax.Array
    segment_ids: jax.Array

    @classmethod
    def start(cls, positions: jax.Array, segment_ids: jax.Array) -> KVCache:
        """The empty cache of a buffer: passed to the model, it makes the call the prefill."""
        return cls(None, positions, segment_ids)


@flax.struct.dataclass
class Decoding:
    """What each layer of a decoding call reads besides its inputs and its own cached keys
    and values: the buffer's positions and segment ids, and the column of the call's first
    token (0 in the prefill)."""

    positions: jax.Array
    segment_ids: jax.Array
    column: jax.Array
