"""Imports a Hugging Face Gemma directory (e.g. a released Gemma) into Flax params or a
training checkpoint, so it can be evaluated or continued with pretrain.train.

  python -m pretrain.convert.hf_import --hf_dir DIR --config=configs/train/X.py --workdir W

The training config's `model` must describe the HF model (its vocab_size may be larger:
256128 rows for the released 256000-piece Gemma; extra rows are zero). Writes
W/config.json and a step-0 checkpoint W/checkpoints/0 (imported params, fresh optimiser
state) into a new or empty W (it starts a run; another run's folder is refused before the
weights are read); running pretrain.train with the same config then continues from those weights.
"""

from typing import Any

import jax
import ml_collections
import numpy as np

from common import checks, cli, fs, run_lock
from pretrain import checkpoint, sharding
from pretrain.convert import hf_mapping, safetensors_stream
from pretrain.model.transformer import DTYPES, TransformerConfig, stack_layers
from pretrain.train_config import write_config
from pretrain.train_setup import build_setup


def _tensor_files(hf_dir: str) -> dict[str, str]:
    """Tensor name -> safetensors file, from the index JSON or the single model file."""
    index = fs.join(hf_dir, "model.safetensors.index.json")
    if fs.exists(index):
        weight_map = fs.read_json_state(index, "restore the Hugging Face folder")["weight_map"]
        return {name: fs.join(hf_dir, file) for name, file in weight_map.items()}
    single = fs.join(hf_dir, "model.safetensors")
    if not fs.exists(single):
        raise FileNotFoundError(f"{hf_dir}: neither model.safetensors nor its index JSON")
    with safetensors_stream.Reader(single) as f:
        return {name: single for name in f.keys()}


def import_hf(
    hf_dir: fs.PathLike, vocab_size: int | None = None, param_dtype: str = "float32", **model_overrides
) -> tuple[dict, TransformerConfig]:
    """(params as numpy arrays, TransformerConfig) of an HF Gemma directory.

    `vocab_size` pads the embedding with zero rows (e.g. 256000 -> 256128, the reference's
    row count); tensors are read one parameter at a time.
    """
    hf_dir = fs.resolve(hf_dir)
    hf_config = fs.read_json_state(fs.join(hf_dir, "config.json"), "restore the Hugging Face folder")
    config = hf_mapping.model_config_from_hf(
        hf_config, vocab_size, param_dtype=param_dtype, **model_overrides
    )
    files = _tensor_files(hf_dir)
    if "lm_head.weight" in files and not hf_config.get("tie_word_embeddings", True):
        raise ValueError(f"{hf_dir}: untied lm_head.weight; Gemma ties the output layer to the embedding")
    dtype = np.dtype(DTYPES[param_dtype])
    params: dict[str, Any] = {}
    handles: dict[str, safetensors_stream.Reader] = {}
    try:
        for rule in hf_mapping.rules(config, hf_config["vocab_size"]):
            missing = [n for n in rule.hf_names if n not in files]
            if missing:
                raise KeyError(f"{hf_dir}: tensor {missing[0]} not found")
            tensors = []
            for name in rule.hf_names:
                if files[name] not in handles:
                    handles[files[name]] = safetensors_stream.Reader(files[name])
                tensors.append(handles[files[name]][name])
            node = params
            for key in rule.flax_path[:-1]:
                node = node.setdefault(key, {})
            node[rule.flax_path[-1]] = np.ascontiguousarray(rule.from_hf(tensors)).astype(dtype)
    finally:
        for handle in handles.values():
            handle.close()
    return params, config


def write_training_checkpoint(params: dict, train_config: ml_collections.ConfigDict) -> str:
    """Writes config.json and a step-0 checkpoint (params + fresh optimiser state) to
    train_config.workdir, in the layout pretrain.train restores.

    The state is built by pretrain.train's own setup (mesh, shardings, optimiser), so the
    checkpoint is exactly what a fresh run would have written; its data state is empty,
    which pretrain.train reads as "start of the stream".
    """
    workdir = fs.resolve(train_config.workdir)
    check_new_workdir(workdir)
    with run_lock.held(
        workdir, run_lock.new_run_id(), field="config.workdir", command="pretrain.convert.hf_import"
    ):
        write_config(workdir, train_config)
        setup = build_setup(train_config, sharding.make_mesh(dict(train_config.mesh)))
        if train_config.model.get("scan_layers"):  # the layout nn.scan over the blocks expects
            model = TransformerConfig.from_config_dict(train_config.model, where="config.model")
            params = stack_layers(params, model.num_layers, len(model.pattern))
        params = jax.device_put(params, setup.sharding["params"])
        state = setup.from_params(params, jax.random.PRNGKey(train_config.seed))
        manager = checkpoint.make_manager(workdir, train_config.checkpoint)
        checkpoint.save(manager, 0, state, None, force=True)
        manager.wait_until_finished()
        manager.close()
    return fs.join(workdir, "checkpoints", "0")


def check_new_workdir(workdir: str) -> None:
    """The import starts a run: it never writes its config.json and step 0 over another run's."""
    checks.require(
        not fs.exists(workdir) or not fs.listdir(workdir),
        "workdir",
        "exists and is not empty; pretrain.convert.hf_import starts a new run and never writes into another: "
        "choose a new or empty folder",
        workdir,
    )


ARCHITECTURE_FIELDS = (
    "num_layers",
    "embed_dim",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "hidden_dim",
    "rope_base",
    # Gemma 2 / 3
    "attention_pattern",
    "sliding_window",
    "attn_logit_softcap",
    "final_logit_softcap",
    "qk_norm",
    "post_norms",
    "query_pre_attn_scalar",
    "local_rope_base",
    "rope_scale_factor",
)


def check_matches(train_model: TransformerConfig, imported: TransformerConfig, hf_vocab: int) -> None:
    """The training config must describe the imported model, so pretrain.train restores it."""
    for field in ARCHITECTURE_FIELDS:
        want, got = getattr(imported, field), getattr(train_model, field)
        if want != got:
            raise checks.ConfigError(
                f"config.model.{field}: {got!r} in the training config but {want!r} in the HF model"
            )
    if train_model.vocab_size < hf_vocab:
        raise checks.ConfigError(
            f"config.model.vocab_size: {train_model.vocab_size} is below the HF vocabulary ({hf_vocab})"
        )


def main(train_config: ml_collections.ConfigDict, argv: list[str]) -> None:
    del argv
    with train_config.unlocked():  # the input, not part of the training config it writes
        hf_dir = fs.resolve(train_config.hf_dir)
        del train_config["hf_dir"]
        train_config.workdir = fs.resolve(train_config.workdir)
    check_new_workdir(train_config.workdir)  # before the slow read of the weights
    train_model = TransformerConfig.from_config_dict(train_config.model, where="config.model")
    hf_config = fs.read_json_state(fs.join(hf_dir, "config.json"), "restore the Hugging Face folder")
    hf_vocab = hf_config["vocab_size"]
    check_matches(train_model, hf_mapping.model_config_from_hf(hf_config), hf_vocab)
    print(f"reading {hf_dir} ...", flush=True)
    params, imported = import_hf(hf_dir, train_model.vocab_size, train_model.param_dtype)
    count = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(
        f"imported {count:,} parameters ({imported.num_layers} layers, {hf_vocab} HF vocabulary "
        f"rows padded to {train_model.vocab_size})"
    )
    path = write_training_checkpoint(params, train_config)
    print(
        f"wrote {path}; continue training by re-running pretrain.train with the same --config "
        f"and --workdir={train_config.workdir}"
    )


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.run(
        main,
        doc=__doc__,
        default_config=None,
        shortcuts=[
            cli.Shortcut("hf_dir", help="Hugging Face Gemma directory (config.json, *.safetensors)"),
            cli.Shortcut("workdir", help="training workdir to write"),
        ],
        required=["hf_dir", "workdir"],
        argv=argv,
    )


if __name__ == "__main__":
    run()
