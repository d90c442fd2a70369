"""The tiny model the evals tests score with: built once per session (its init compiles once)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pretrain.model.transformer import Transformer, TransformerConfig
from tests.support.train import tiny_config


@pytest.fixture(scope="session")
def tiny_model():
    """(model, params): tests.support.train's tiny shape (vocab 256), random weights, seed 0."""
    model = Transformer(TransformerConfig.from_config_dict(tiny_config("").model))
    tokens = np.zeros((1, 8), np.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, tokens, tokens + 1)["params"]
    return model, params
