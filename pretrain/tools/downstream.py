"""Downstream benchmarks of a checkpoint: multiple-choice, gold-text and generative tasks (evals/).

  python -m pretrain.tools.downstream --workdir W [--step N] --tasks arc_easy,mmlu,gsm8k_bpb \
      --eval_dir EVAL [--eval_set NAME=PATH ...] [--fewshot_set NAME=PATH ...] \
      [--task_config TASK.json ...] [--limit 100] [--num_fewshot K] --output DIR [--overwrite]

EVAL holds the eval sets in their original layouts (as configs/data/full.py lays them out:
arc/ARC-e/ARC-Easy-Test.jsonl, mmlu/test/, openbookqa/test.tsv, gsm8k/test.jsonl, ...);
`--eval_set arc_easy=PATH` replaces one set's scored file, `--fewshot_set` its few-shot
file (a train or dev split). Prompts are lm-evaluation-harness's for the tasks of the same
name; requests are tokenized as lm-eval does, with <bos> by the run's mixture policy, with
the run's tokenizer (another is refused), and scored packed on a mesh over every device.
When the run's config names its prepared data (data.prep_dir), each task's items are looked
up in its train split with the decontamination index and the ones found are scored apart.
Generative tasks (gsm8k, math, bbh, humaneval, mbpp: evals.generative) generate on the same
model and score exact match or, for code run in a sandbox, pass@k (--samples).
Prints a table (metric, value, 95% bootstrap interval, chance level) and writes
DIR/items.jsonl (one record per item) and DIR/summary.json; nothing is written when a check fails.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from common import checks, cli, fs
from common.parsers import parse_assignment
from evals import generative, harness, report, results, tasks
from evals.contamination import found_in_training
from evals.engine import Engine
from evals.generate import make_generate_fn
from pretrain import sharding
from pretrain.checkpoint import load_train_config, restore_params, saved_steps
from pretrain.model.transformer import DTYPES, Transformer, TransformerConfig
from pretrain.train_config import check_tokenizer
from pretrain.train_setup import batch_shardings
from tokenizer.vocab import bos_prefix


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "workdir": "",  # training workdir (config.json, checkpoints/)
            "step": -1,  # checkpoint step; -1: the latest
            "tasks": "",  # comma-separated task names (evals.tasks.TASKS, or a --task_config's)
            "eval_dir": "",  # the eval sets in their original layouts
            "eval_sets": [],  # NAME=PATH: a dataset's scored file (replaces EVAL_DIR's)
            "fewshot_sets": [],  # NAME=PATH: a dataset's few-shot file (a train or dev split)
            "task_configs": [],  # JSON files defining user tasks (evals.tasks.user_task)
            "limit": 0,  # score the first N items of each task; 0: all
            "num_fewshot": -1,  # few-shot examples per item; -1: each task's default (lm-eval's)
            "samples": 1,  # generations per item for code tasks (pass@k for k up to it)
            "max_new_tokens": 0,  # generation budget; 0: each task's default
            "seed": 0,  # few-shot sampling and bootstrap intervals
            "output": "",  # folder for items.jsonl and summary.json
            "overwrite": False,  # replace an earlier items.jsonl / summary.json there
            "tokenizer": "",  # tokenizer.model; default: the run's (data.tokenizer); must be the run's
            "dtype": "float32",  # activation dtype
            "row_len": 0,  # tokens per packed row; 0: the model's max_seq_len (lm-eval's max_length)
            "batch_rows": 8,  # rows per forward pass (a multiple of the data-parallel devices)
            "mesh": ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)),
            "contamination": True,  # look the items up in the run's prep_dir train split
        }
    )


def check(config: ml_collections.ConfigDict) -> None:
    checks.non_negative(config.limit, "limit")
    checks.require(
        config.num_fewshot >= -1,
        "num_fewshot",
        "must be >= 0, or -1 for each task's default",
        config.num_fewshot,
    )
    checks.positive(config.samples, "samples")
    checks.non_negative(config.max_new_tokens, "max_new_tokens")
    checks.non_negative(config.row_len, "row_len")
    checks.positive(config.batch_rows, "batch_rows")
    checks.one_of(config.dtype, DTYPES, "dtype")
    results.check_writable(fs.resolve(config.output), config.overwrite)


def _specs(values: list[str], field: str) -> dict[str, str]:
    out = {}
    for spec in values:
        name, path = parse_assignment(spec, field)
        out[name] = fs.resolve(path)
    return out


def _contaminated(leaks: dict[str, list], prep_dir: str) -> dict[str, set[int]]:
    """{task: indices of its items found in PREP_DIR's train split}; `leaks` per task: each
    item's EvalItem (None: no text to look for)."""
    out = {}
    for task, items in leaks.items():
        present = [(i, leak) for i, leak in enumerate(items) if leak is not None]
        found = found_in_training([leak for _, leak in present], prep_dir)
        out[task] = {present[j][0] for j in found}
    return out


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    checks.require(not argv, "tasks", "unexpected positional arguments", argv)
    check(config)
    names = [n.strip() for n in config.tasks.split(",") if n.strip()]
    scored = tasks.resolve(names, [fs.resolve(p) for p in config.task_configs], others=generative.TASKS)
    eval_dir = fs.resolve(config.eval_dir) if config.eval_dir else ""
    eval_set_paths = _specs(config.eval_sets, "eval_set")
    fewshot_paths = _specs(config.fewshot_sets, "fewshot_set")
    data = harness.load_tasks(
        scored,
        eval_dir=eval_dir,
        eval_set_paths=eval_set_paths,
        fewshot_paths=fewshot_paths,
        limit=config.limit,
        num_fewshot=max(config.num_fewshot, 0),
    )
    generated = {}  # task -> (items, few-shot path)
    for name in (n for n in names if n in generative.TASKS):
        test, fewshot = tasks.task_paths(generative.TASKS[name], eval_dir, eval_set_paths, fewshot_paths)
        generated[name] = (generative.load_items(name, test, config.limit), fewshot)
    workdir = fs.resolve(config.workdir)
    run = load_train_config(workdir)
    vocab_path = config.tokenizer or run.data.get("tokenizer", "")
    checks.require(
        bool(vocab_path), "tokenizer", "the run's config names no data.tokenizer; pass --tokenizer"
    )
    vocab = check_tokenizer(run, fs.resolve(vocab_path), "tokenizer")  # the run's, and fits its embedding
    model_cfg = TransformerConfig.from_config_dict({**run.model.to_dict(), "dtype": config.dtype})
    mesh = sharding.make_mesh(config.mesh.to_dict())
    rules = sharding.logical_rules(run)
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    checks.require(
        config.batch_rows % data_parallel == 0,
        "batch_rows",
        f"must be a multiple of the mesh's data x fsdp = {data_parallel} devices",
        config.batch_rows,
    )
    model = Transformer(model_cfg)
    dummy = jnp.zeros((1, 8), jnp.int32)
    boxed = jax.eval_shape(lambda r: model.init(r, dummy, dummy, dummy)["params"], jax.random.PRNGKey(0))
    step = config.step if config.step >= 0 else max(saved_steps(workdir), default=None)
    params, _ = restore_params(workdir, step, sharding.mesh_shardings(boxed, mesh, rules))

    def forward(p, inputs, positions, segment_ids, **decoding):  # decoding: evals.generate.Forward
        with nn.logical_axis_rules(rules):
            return model.apply({"params": p}, inputs, positions, segment_ids, **decoding)

    row_len = config.row_len or model_cfg.max_seq_len
    engine = Engine(
        forward,
        params,
        row_len=row_len,
        batch_rows=config.batch_rows,
        batch_sharding=batch_shardings(mesh, rules)["inputs"],
        vocab_size=vocab.vocab_size,
    )
    contaminated = None
    prep_dir = run.data.get("prep_dir", "")
    if config.contamination and prep_dir and fs.isdir(prep_dir):
        leaks = {d.task.name: [doc.leak for doc in d.docs] for d in data}
        leaks.update({name: [item.leak for item in items] for name, (items, _) in generated.items()})
        contaminated = _contaminated(leaks, prep_dir)
    policy = run.get("mixture", {}).get("bos", "document")
    with jax.set_mesh(mesh):
        records = harness.score(
            data, engine, vocab.encode, bos_prefix(policy), num_fewshot=max(config.num_fewshot, 0),
            seed=config.seed, contaminated=contaminated,
        )  # fmt: skip
        if generated:
            generate_fn = make_generate_fn(
                forward, params, vocab, max_length=row_len, bos=policy, batch_size=config.batch_rows
            )
        for name, (items, fewshot) in generated.items():
            records += generative.evaluate(
                name, items, generate_fn, fewshot_path=fewshot,
                num_fewshot=None if config.num_fewshot < 0 else config.num_fewshot, samples=config.samples,
                seed=config.seed, max_new_tokens=config.max_new_tokens or None,
                contaminated=None if contaminated is None else contaminated[name],
            )  # fmt: skip
    summary = {
        "workdir": workdir,
        "step": step,
        "num_fewshot": config.num_fewshot,
        "limit": config.limit,
        "tasks": harness.summarize(records, config.seed),
    }
    if jax.process_index() == 0:  # every host scored the same items; one writes
        items_path, summary_path = results.write(
            fs.resolve(config.output), records, summary, overwrite=bool(config.overwrite)
        )
        print(report.table(summary["tasks"]))
        print(f"\nper-item records: {items_path}\nsummary: {summary_path}")


def run() -> None:
    """Console-script entry point."""
    cli.run(
        main,
        doc=__doc__,
        default_config=default_config,
        shortcuts=[
            cli.Shortcut("workdir", help="training workdir (config.json, checkpoints/)"),
            cli.Shortcut("step", help="checkpoint step; default: the latest"),
            cli.Shortcut("tasks", help="comma-separated task names"),
            cli.Shortcut("eval_dir", help="the eval sets in their original layouts"),
            cli.Shortcut("eval_set", "eval_sets", "NAME=PATH: a dataset's scored file", multi=True),
            cli.Shortcut("fewshot_set", "fewshot_sets", "NAME=PATH: a dataset's few-shot file", multi=True),
            cli.Shortcut("task_config", "task_configs", "a JSON file defining a task", multi=True),
            cli.Shortcut("limit", help="first N items of each task; 0: all"),
            cli.Shortcut("num_fewshot", help="few-shot examples per item; -1: each task's default"),
            cli.Shortcut("samples", help="generations per item for code tasks (pass@k)"),
            cli.Shortcut("output", help="folder for items.jsonl and summary.json"),
            cli.Shortcut("overwrite", help="replace earlier results in --output"),
            cli.Shortcut("tokenizer", help="tokenizer.model; default: the run's"),
        ],
        required=["workdir", "tasks", "output"],
    )


if __name__ == "__main__":
    run()
