"""Exports a training checkpoint as a Hugging Face Gemma directory or params-only Orbax.

  python -m pretrain.convert.export --workdir W [--step N] --format hf --output DIR [--dtype bfloat16] [--overwrite]
  python -m pretrain.convert.export --workdir W --format orbax-params --output DIR --dtype float32

W and DIR may be local (relative or absolute) or gs:// paths.
The HF directory loads with `transformers.GemmaForCausalLM.from_pretrained(DIR)`; its
tokenizer (tokenizer.model, the same ids as tokenizer.json, <bos> as the run's `mixture.bos`)
with `AutoTokenizer.from_pretrained(DIR)` (pretrain.convert.hf_tokenizer). Tensors are
converted and written one at a time (pretrain.convert.safetensors_stream), each parameter's
device buffer is freed once written, so the host never holds a second full copy.

DIR must not exist, be empty, or (with --overwrite) hold an earlier export (its
OUTPUTS.json), of which only the files that export wrote are replaced (a NOTES.md or an
eval_results/ folder put beside them stays); anything else is refused before anything is
written. The export is written to DIR/_staging-<run id>/ and committed when complete
(common/outputs.py): a failed export leaves DIR as it was, a killed commit is finished by
the next run into DIR.
"""

import json
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import sentencepiece as spm
from absl import logging

from common import checks, cli, fs, outputs
from pretrain import checkpoint
from pretrain.convert import hf_mapping, hf_tokenizer, model_card, safetensors_stream
from pretrain.model.transformer import DTYPES as MODEL_DTYPES
from pretrain.model.transformer import TransformerConfig, unstack_layers
from pretrain.train_config import check_tokenizer
from tokenizer.model_file import model_file

# The model's dtype table, as numpy dtypes; HF checkpoints are bfloat16 or float32.
DTYPES = {name: np.dtype(MODEL_DTYPES[name]) for name in ("bfloat16", "float32")}
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # the HF hub convention: shard above 5 GB
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return getattr(tree, "value", tree)  # tolerate nn.Partitioned boxes


def _pop(tree: Any, path: tuple[str, ...]) -> None:
    """Drops a leaf so its (device) buffer can be freed once exported."""
    for key in path[:-1]:
        tree = tree[key]
    leaf = tree[path[-1]]
    tree[path[-1]] = None
    leaf = getattr(leaf, "value", leaf)
    if isinstance(leaf, jax.Array) and not leaf.is_deleted():
        leaf.delete()


def _write_tokenizer(tokenizer_path: str, output: str, model_max_length: int, bos: str) -> int:
    model = fs.read_bytes(tokenizer_path)
    fs.write_bytes(fs.join(output, "tokenizer.model"), model)
    for name, text in hf_tokenizer.tokenizer_files(model, bos, model_max_length).items():
        fs.write_text(fs.join(output, name), text)
    return spm.SentencePieceProcessor(model_proto=model).get_piece_size()


def export_hf(
    params: dict,
    model_config: TransformerConfig,
    tokenizer_path: fs.PathLike | None,
    output_dir: fs.PathLike,
    *,
    dtype: str = "bfloat16",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    consume: bool = False,
    bos: str = "document",
) -> dict[str, Any]:
    """Writes an HF GemmaForCausalLM directory from a Flax params tree.

    The embedding is sliced to the tokenizer's size (all rows without a tokenizer); the
    tokenizer files add <bos> by `bos`, the run's `mixture.bos` policy. With
    `consume`, each parameter is removed from `params` (and its buffer freed) once written.
    Returns a summary: files, bytes, tensor count, vocabulary rows.
    """
    if dtype not in DTYPES:
        raise ValueError(f"--dtype: must be one of {sorted(DTYPES)}, got {dtype!r}")
    if max_shard_bytes < 1:
        raise ValueError(f"--max_shard_bytes: must be >= 1, got {max_shard_bytes}")
    output = fs.makedirs(output_dir)
    target = DTYPES[dtype]
    vocab = model_config.vocab_size
    if tokenizer_path is not None:
        vocab = _write_tokenizer(model_file(tokenizer_path), output, model_config.max_seq_len, bos)

    # a scan_layers tree -> layer_{i}
    params = unstack_layers(params, model_config.num_layers, len(model_config.pattern))
    rules = hf_mapping.rules(model_config, vocab)
    entries, rule_of = [], {}
    for index, rule in enumerate(rules):
        leaf = _get(params, rule.flax_path)
        shapes = jax.eval_shape(rule.to_hf, jax.ShapeDtypeStruct(leaf.shape, target))
        for name, shape in zip(rule.hf_names, shapes):
            entries.append((name, tuple(shape.shape), target))
            rule_of[name] = index

    cache: dict[str, Any] = {"rule": None, "tensors": {}}

    def produce(name: str) -> np.ndarray:
        index = rule_of[name]
        if cache["rule"] != index:  # convert one parameter; free the previous one
            if consume and cache["rule"] is not None:
                _pop(params, rules[cache["rule"]].flax_path)
            rule = rules[index]
            host = np.asarray(jax.device_get(_get(params, rule.flax_path))).astype(target)
            cache.update(rule=index, tensors=dict(zip(rule.hf_names, rule.to_hf(host))))
        return cache["tensors"].pop(name)

    shards = safetensors_stream.plan_shards(entries, max_shard_bytes)
    names = (
        [SINGLE_FILE]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    total = 0
    weight_map = {}
    for file_name, shard in zip(names, shards):
        total += safetensors_stream.write_file(fs.join(output, file_name), shard, produce)
        weight_map.update({name: file_name for name, _, _ in shard})
        logging.info("wrote %s (%d tensors)", fs.join(output, file_name), len(shard))
    if consume and cache["rule"] is not None:
        _pop(params, rules[cache["rule"]].flax_path)
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        fs.write_text(fs.join(output, INDEX_FILE), json.dumps(index, indent=2) + "\n")
    config = hf_mapping.hf_config(model_config, vocab, dtype)
    fs.write_text(fs.join(output, "config.json"), json.dumps(config, indent=2) + "\n")
    fs.write_text(
        fs.join(output, "generation_config.json"),
        json.dumps({"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}, indent=2) + "\n",
    )
    return {"files": names, "bytes": total, "tensors": len(entries), "vocab_size": vocab}


def export_orbax_params(
    params: dict,
    model_config: TransformerConfig,
    output_dir: fs.PathLike,
    *,
    dtype: str = "bfloat16",
    tokenizer_path: fs.PathLike | None = None,
) -> dict[str, Any]:
    """Writes OUTPUT/params (Orbax, parameters only) and OUTPUT/config.json ({"model": ...}).

    Leaves are cast one at a time and the source buffers freed, so peak memory stays at
    one copy plus one parameter.
    """
    import orbax.checkpoint as ocp

    if dtype not in DTYPES:
        raise ValueError(f"--dtype: must be one of {sorted(DTYPES)}, got {dtype!r}")
    output = fs.makedirs(output_dir)
    flat, treedef = jax.tree_util.tree_flatten(params)
    cast = []
    for i, leaf in enumerate(flat):
        cast.append(jax.numpy.asarray(getattr(leaf, "value", leaf)).astype(DTYPES[dtype]))
        if isinstance(flat[i], jax.Array) and flat[i] is not cast[-1]:
            flat[i].delete()
        flat[i] = None
    params = jax.tree_util.tree_unflatten(treedef, cast)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(fs.as_path(fs.join(output, "params")), params, force=True)
    fs.write_text(
        fs.join(output, "config.json"), json.dumps({"model": model_config.to_dict()}, indent=2) + "\n"
    )
    if tokenizer_path is not None:
        fs.copy(model_file(tokenizer_path), fs.join(output, "tokenizer.model"))
    nbytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
    return {"files": ["params", "config.json"], "bytes": nbytes, "tensors": len(cast)}


def load_orbax_params(directory: fs.PathLike) -> tuple[dict, TransformerConfig]:
    """(params, model config) of an `--format orbax-params` export."""
    import orbax.checkpoint as ocp

    config = fs.read_json_state(fs.join(directory, "config.json"), "export again")["model"]
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(fs.as_path(fs.join(directory, "params")))
    return params, TransformerConfig.from_config_dict(config, where="config.json:model")


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "workdir": "",  # pretrain.train workdir (config.json, checkpoints/)
            "step": -1,  # checkpoint step; -1: the latest
            "format": "hf",  # hf | orbax-params
            "output": "",  # output directory
            "dtype": "bfloat16",  # stored weight dtype
            "tokenizer": "",  # tokenizer.model (or its directory); default: config.data.tokenizer
            "max_shard_bytes": DEFAULT_MAX_SHARD_BYTES,  # split model.safetensors above this size
            "overwrite": False,  # replace an earlier export in `output`
        }
    )


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    checks.require(not argv, "workdir", "unexpected positional arguments", argv)
    checks.one_of(config.format, ("hf", "orbax-params"), "format")
    checks.one_of(config.dtype, DTYPES, "dtype")
    checks.positive(config.max_shard_bytes, "max_shard_bytes")
    checks.require(bool(config.output), "output", "required (--output=DIR)")
    workdir, output = fs.resolve(config.workdir), fs.resolve(config.output)
    tokenizer = _run_tokenizer(config, workdir)  # checked before anything is written
    start = time.time()
    with outputs.writing(
        output, command="pretrain.export", field="config.output", overwrite=bool(config.overwrite)
    ) as staged:
        summary = _export(config, workdir, tokenizer, staged.path)
        staged.commit(last=["config.json"])  # loaders look for config.json: it comes once the rest is in
    print(
        f"exported {summary['tensors']} tensors, {summary['bytes'] / 2**20:.1f} MiB in "
        f"{len(summary['files'])} file(s) to {output} in {time.time() - start:.1f}s"
    )


def _run_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    """The tokenizer.model to export beside the weights (--tokenizer, else the run's), refused
    unless it is the one the run trained with; None for a run without one (synthetic data)."""
    train_config = checkpoint.load_train_config(workdir)
    tokenizer = config.tokenizer or train_config.get("data", {}).get("tokenizer") or None
    if tokenizer is None:
        print("no tokenizer in config.data.tokenizer (synthetic data?): exporting without tokenizer files")
        return None
    tokenizer = model_file(tokenizer)
    check_tokenizer(train_config, tokenizer, "tokenizer")
    return tokenizer


def _export(
    config: ml_collections.ConfigDict, workdir: str, tokenizer: str | None, staging: str
) -> dict[str, Any]:
    """Restores the checkpoint and writes the export into `staging`; returns its summary."""
    saved = checkpoint.saved_steps(workdir)
    step = config.step if config.step >= 0 or not saved else saved[-1]
    print(f"restoring params from {workdir} (step {step}) ...", flush=True)
    params, train_config = checkpoint.restore_params(workdir, None if step < 0 else step)
    model_config = TransformerConfig.from_config_dict(train_config.model, where="config.model")
    print(f"writing {config.format} ({config.dtype}) to {fs.resolve(config.output)} ...", flush=True)
    model_card.write(
        staging, model_card.export_info(workdir, train_config, model_config, step, config.format)
    )
    if config.format == "hf":
        return export_hf(
            params,
            model_config,
            tokenizer,
            staging,
            dtype=config.dtype,
            max_shard_bytes=config.max_shard_bytes,
            consume=True,
            bos=train_config.get("mixture", {}).get("bos", "document"),
        )
    return export_orbax_params(params, model_config, staging, dtype=config.dtype, tokenizer_path=tokenizer)


def run() -> None:
    """Console entry point."""
    cli.run(
        main,
        doc=__doc__,
        default_config=default_config,
        shortcuts=[
            cli.Shortcut("workdir", help="pretrain.train workdir (config.json, checkpoints/)"),
            cli.Shortcut("step", help="checkpoint step; default: the latest"),
            cli.Shortcut("format", help="hf or orbax-params"),
            cli.Shortcut("output", help="output directory"),
            cli.Shortcut("dtype", help="stored weight dtype: bfloat16 or float32"),
            cli.Shortcut(
                "tokenizer",
                help="tokenizer.model or its directory; default: the training config's data.tokenizer",
            ),
            cli.Shortcut("max_shard_bytes", help="split model.safetensors above this size"),
            cli.Shortcut("overwrite", help="replace an earlier export in --output (nothing else)"),
        ],
        required=["workdir", "output"],
    )


if __name__ == "__main__":
    run()
