"""Prints a model's exact parameter count from shapes only (jax.eval_shape, nothing allocated).

python -m pretrain.tools.model_info --config=configs/models/gemma_2b.py
python -m pretrain.tools.model_info --config=configs/train/demo_tiny_cpu.py   # uses config.model
"""

import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from common import checks, cli
from pretrain.model.transformer import TransformerConfig, abstract_variables


def model_config_from(cfg: ml_collections.ConfigDict) -> TransformerConfig:
    """The TransformerConfig of a model config or of a training config's `model` section."""
    if "model" in cfg:
        return TransformerConfig.from_config_dict(cfg.model, where="config.model")
    return TransformerConfig.from_config_dict(cfg, where="config")


def parameter_table(config: TransformerConfig) -> dict[str, int]:
    """Parameter counts grouped by kind (embedding, attention, mlp, norms)."""
    shapes = nn.unbox(abstract_variables(config)["params"])
    groups: dict[str, int] = collections.defaultdict(int)
    for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
        names = [getattr(k, "key", str(k)) for k in path]
        kind = (
            "embedding"
            if names[0] == "embedder"
            else "norms"
            if names[-1] == "scale"
            else "attention"
            if "attn" in names
            else "mlp"
        )
        groups[kind] += int(leaf.size)
    return dict(groups)


def main(cfg: ml_collections.ConfigDict, argv: list[str]) -> None:
    checks.require(not argv, "config", "unexpected positional arguments", argv)
    config = model_config_from(cfg)
    table = parameter_table(config)
    total = sum(table.values())
    print(
        f"model: {config.num_layers} layers, d_model {config.embed_dim}, {config.num_heads} heads, "
        f"{config.num_kv_heads} kv heads, head_dim {config.head_dim}, hidden {config.hidden_dim}, "
        f"vocab {config.vocab_size}"
    )
    for kind in ("embedding", "attention", "mlp", "norms"):
        print(f"  {kind:<10} {table.get(kind, 0):>16,}")
    print(
        f"parameters: {total:,} (non-embedding {total - table.get('embedding', 0):,}; "
        f"{total * jnp.dtype(config.weight_dtype).itemsize / 2**30:.2f} GiB in {config.param_dtype})"
    )


def run() -> None:
    """Console entry point: `--config` (a model config, or a training config) is required."""
    cli.run(main, doc=__doc__, default_config=None)


if __name__ == "__main__":
    run()
