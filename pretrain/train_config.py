"""The trainer's config at the command boundary: the checks every field gets before any
compute (`validate`), whether a resume may continue WORKDIR's run (`check_resume`), local
paths made absolute (`resolve_paths`), what a launch changed from the defaults
(`differences_from_defaults`), and WORKDIR/config.json (`write_config`).

Every check raises common.checks.ConfigError naming the field; common.cli.run turns it
into one line and exit status 2, before the run writes anything.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections

from common import checks, fs
from common.parsers import comma_list
from configs.train import base as train_defaults
from mixtures import manifest as manifest_lib
from mixtures.schedule import mixture_schedule
from pretrain import checkpoint, optim
from pretrain.model.transformer import TransformerConfig
from pretrain.model.transformer import defaults as model_defaults
from tokenizer.model_file import model_sha256


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every field the trainer reads, so a bad value fails before any compute."""
    require, get = checks.require, checks.get
    require(bool(config.workdir), "workdir", "must be set (--workdir=DIR)")
    for field in (
        "train.total_steps",
        "train.log_every",
        "train.grad_accum_steps",
        "data.global_batch_size",
        "eval.batches",
    ):
        require(get(config, field) >= 1, field, "must be >= 1", get(config, field))
    checks.non_negative(config.train.z_loss, "train.z_loss")
    checks.non_negative(config.data.synthetic_document_tokens, "data.synthetic_document_tokens")
    require(config.data.seq_len >= 2, "data.seq_len", "must be >= 2", config.data.seq_len)
    require(
        config.data.global_batch_size % config.train.grad_accum_steps == 0,
        "data.global_batch_size",
        f"must be divisible by train.grad_accum_steps={config.train.grad_accum_steps}",
        config.data.global_batch_size,
    )
    checks.non_negative(config.eval.every_steps, "eval.every_steps")
    require(
        config.eval.every_steps % config.train.log_every == 0,
        "eval.every_steps",
        f"must be a multiple of train.log_every={config.train.log_every}",
        config.eval.every_steps,
    )
    if config.init_from.workdir:
        require(
            fs.isfile(fs.join(config.init_from.workdir, "config.json")),
            "init_from.workdir",
            "must be a pretrain.train workdir (config.json, checkpoints/)",
            config.init_from.workdir,
        )
    optim.validate(config.optim, config.train.total_steps)
    checkpoint.validate(config.checkpoint)
    model = TransformerConfig.from_config_dict(config.model)
    if model.token_chunks:
        require(
            config.data.seq_len % model.token_chunks == 0,
            "model.token_chunks",
            f"must divide data.seq_len={config.data.seq_len}",
            model.token_chunks,
        )
    mixture_schedule(config)
    validate_downstream(config)
    if not config.data.synthetic:
        validate_data(config)


def validate_downstream(config: ml_collections.ConfigDict) -> None:
    """`config.downstream`'s own fields (its task files are read when the scorer is built)."""
    d = config.get("downstream")
    if d is None:  # a config.json from before the section existed (e.g. an anneal arm's base)
        return
    checks.non_negative(d.every_steps, "downstream.every_steps")
    checks.require(
        d.every_steps % config.train.log_every == 0,
        "downstream.every_steps",
        f"must be a multiple of train.log_every={config.train.log_every}",
        d.every_steps,
    )
    checks.non_negative(d.limit, "downstream.limit")
    checks.non_negative(d.num_fewshot, "downstream.num_fewshot")
    if comma_list(d.tasks):
        checks.require(
            bool(config.data.tokenizer),
            "data.tokenizer",
            "downstream.tasks needs the run's tokenizer.model",
            config.data.tokenizer,
        )


def validate_data(config: ml_collections.ConfigDict) -> None:
    """The packed rows and the tokenizer: present, and made for each other and the model."""
    require, d = checks.require, config.data
    require(
        fs.exists(fs.join(d.packed_dir or ".", "manifest.json")),
        "data.packed_dir",
        "must be a packed-data directory (python -m mixtures.pack)",
        d.packed_dir,
    )
    require(
        fs.isfile(d.tokenizer),
        "data.tokenizer",
        "must be a tokenizer.model file (python -m tokenizer.train)",
        d.tokenizer,
    )
    require(bool(config.mixture.get("stages")), "mixture", "must be a mixture config with stages")
    # Imported here: SeqIO and TensorFlow, only for real data; the GPU machines that
    # bench/gpu_throughput.py trains on synthetic data with have neither.
    from tokenizer.vocab import load_vocabulary

    manifest = manifest_lib.read(d.packed_dir)
    require(
        d.seq_len == manifest["seq_len"],
        "data.seq_len",
        f"must equal the packed rows' length {manifest['seq_len']} ({d.packed_dir}); re-pack with "
        f"--config.seq_len={d.seq_len} or train at the packed length",
        d.seq_len,
    )
    packed_with, given = manifest["vocab"]["sha256"], model_sha256(d.tokenizer)
    require(
        given == packed_with,
        "data.tokenizer",
        f"is not the tokenizer the rows in {d.packed_dir} were packed with (sha256 {given}, the "
        f"manifest's {packed_with}, from {manifest['vocab']['path']}); train with that tokenizer",
        d.tokenizer,
    )
    tokens = load_vocabulary(d.tokenizer).vocab_size
    require(
        config.model.vocab_size >= tokens,
        "model.vocab_size",
        f"must cover the tokenizer's {tokens} tokens",
        config.model.vocab_size,
    )


# What a resumed run shares with the run that wrote its checkpoints: the model (the
# checkpoints' shapes) and what fixes the data stream's batches.
RESUME_FIXED = ("model", "seed", "data.global_batch_size", "data.seq_len")
# Model fields that choose how the same maths runs (no effect on the weights' values or
# layout): a resume may change them, e.g. to fit another GPU.
RESUME_EXECUTION = (
    "model.attention",
    "model.remat_policy",
    "model.vocab_chunks",
    "model.token_chunks",
    "model.max_documents",
)
# What changes the optimisation of the steps to come: allowed at a resume only when
# config.resume_accept names the field.
RESUME_OPTIMISER = ("optim", "train.z_loss")


def check_resume(workdir: str, config: ml_collections.ConfigDict) -> list[str] | None:
    """Compares `config` with WORKDIR/config.json when WORKDIR holds checkpoints.

    Returns None for a fresh workdir, else the optimiser changes `config.resume_accept`
    names ("config.optim.peak_lr: 0.003 -> 0.3"). Refuses (ConfigError) a changed model,
    seed, batch size or seq_len, and optimiser changes it does not name, listing each field
    with its old and new value. config.json is never rewritten under checkpoints.
    """
    if not checkpoint.saved_steps(workdir):
        return None
    recorded, now = _recorded_and_now(workdir, config)
    fixed = _changes(recorded, now, RESUME_FIXED)
    if fixed:
        raise checks.ConfigError(
            f"{'; '.join(fixed)}: {workdir} holds checkpoints of the run its config.json records; "
            "a resume keeps the model, seed, batch size and seq_len: use a new workdir "
            "(config.init_from starts from its weights)"
        )
    accept = {f.strip() for f in str(config.get("resume_accept", "")).split(",") if f.strip()}
    changed = _changes(recorded, now, RESUME_OPTIMISER)
    refused = [c for c in changed if c.split(":")[0].removeprefix("config.") not in accept]
    if refused:
        names = ",".join(c.split(":")[0].removeprefix("config.") for c in refused)
        raise checks.ConfigError(
            f"{'; '.join(refused)}: changed since the checkpoints in {workdir}; "
            f"if intended, resume with --config.resume_accept={names}"
        )
    return changed


def changes_since(workdir: str, config: ml_collections.ConfigDict, prefixes: tuple[str, ...]) -> list[str]:
    """ "config.FIELD: OLD -> NEW" for each field under `prefixes` that differs between
    WORKDIR/config.json and `config`; the model's execution-only fields do not count."""
    return _changes(*_recorded_and_now(workdir, config), prefixes)


def _recorded_and_now(
    workdir: str, config: ml_collections.ConfigDict
) -> tuple[dict[str, Any], dict[str, Any]]:
    """WORKDIR/config.json and `config` as flat {"a.b": value} dicts (JSON values), model defaults filled."""
    recorded = _with_model_defaults(_flat(json.loads(checkpoint.load_train_config(workdir).to_json())))
    return recorded, _with_model_defaults(_flat(json.loads(config.to_json_best_effort())))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} of a nested dict (JSON values, so recorded and current compare alike)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def _with_model_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """A model field a config leaves out reads as its default: a config.json written before
    a preset listed every field (or before a field existed) compares equal to today's."""
    return {**{f"model.{k}": v for k, v in model_defaults().items()}, **flat}


def _changes(old: dict[str, Any], new: dict[str, Any], prefixes: tuple[str, ...]) -> list[str]:
    """ "config.FIELD: OLD -> NEW" for each field under `prefixes` whose value differs, the
    model's execution-only fields (RESUME_EXECUTION) aside."""
    fields = sorted(
        k
        for k in old.keys() | new.keys()
        if any(k == p or k.startswith(p + ".") for p in prefixes) and k not in RESUME_EXECUTION
    )
    return [f"config.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in fields if old.get(k) != new.get(k)]


def differences_from_defaults(config: ml_collections.ConfigDict) -> list[str]:
    """ "FIELD=VALUE" for each field outside model and mixture (printed apart, as the parameter
    count and the schedule) whose value differs from configs/train/base.py: what this launch
    set, as a run's first lines show it."""
    defaults = _flat(json.loads(train_defaults.get_config().to_json_best_effort()))
    now = _flat(json.loads(config.to_json_best_effort()))
    return [
        f"{k}={now[k]!r}"
        for k in sorted(now)
        if not k.startswith(("model.", "mixture.")) and now[k] != defaults.get(k)
    ]


def record_tokenizer(config: ml_collections.ConfigDict) -> None:
    """config.data.tokenizer_sha256 of the run's tokenizer, for config.json: export and
    evaluate refuse any other tokenizer (`check_tokenizer`)."""
    if config.data.tokenizer and fs.isfile(config.data.tokenizer):
        with config.unlocked():
            config.data.tokenizer_sha256 = model_sha256(config.data.tokenizer)


def check_tokenizer(run_config: ml_collections.ConfigDict, path: str, field: str) -> Any:
    """The vocabulary at `path`, if it is the tokenizer the run of `run_config` (its
    config.json) trained with and fits its embedding; ConfigError naming `field` otherwise.

    The run's SHA-256 is the one its config.json records (data.tokenizer_sha256), or for a
    run that predates that record the packed manifest's, when the packed rows are there.
    Another tokenizer of the same size would give an export or a perplexity that is
    silently wrong; a larger one, token ids past the embedding.
    """
    # SeqIO/TensorFlow, ~3.7 s measured: only readers of a real tokenizer need it
    from tokenizer.vocab import load_vocabulary

    checks.require(fs.isfile(path), field, "no such tokenizer.model file", path)
    data = run_config.get("data", {})
    recorded, where = data.get("tokenizer_sha256"), "its config.json"
    packed_dir = data.get("packed_dir")
    if not recorded and packed_dir and fs.exists(fs.join(packed_dir, manifest_lib.FILE_NAME)):
        recorded, where = manifest_lib.read(packed_dir)["vocab"]["sha256"], f"the manifest of {packed_dir}"
    given = model_sha256(path)
    checks.require(
        not recorded or given == recorded,
        field,
        f"is not the tokenizer the run trained with (sha256 {given}; the run's, in {where}: "
        f"{recorded}); pass the run's tokenizer",
        path,
    )
    vocab = load_vocabulary(path)
    rows = run_config.model.vocab_size
    checks.require(
        vocab.vocab_size <= rows,
        field,
        f"has {vocab.vocab_size} pieces, more than the model's {rows} embedding rows: not this run's tokenizer",
        path,
    )
    return vocab


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    if jax.process_index() == 0:
        fs.makedirs(workdir)
        # Atomic: a kill mid-write must not leave half a config.json for export, evaluate or a resume.
        fs.write_text_atomic(fs.join(workdir, "config.json"), config.to_json_best_effort(indent=2) + "\n")


PATH_FIELDS = (
    "workdir",
    "data.packed_dir",
    "data.tokenizer",
    "train.compilation_cache_dir",
    "init_from.workdir",
    "downstream.eval_dir",
)


def resolve_paths(config: ml_collections.ConfigDict) -> None:
    """Local relative paths made absolute at the command boundary, so config.json (read by
    export, evaluate and resumes) works from any directory; gs:// URIs are left as given."""
    for field in PATH_FIELDS:
        *parents, leaf = field.split(".")
        node = checks.get(config, ".".join(parents)) if parents else config
        if node.get(leaf):
            node[leaf] = fs.resolve(node[leaf])
