"""Downstream evaluation inside the training loop (`config.downstream`).

Every `every_steps` steps, and at the run's last step when `at_end` (the end of the
annealing stage: a schedule's last stage ends with the run), the first `limit` items of
each task in `tasks` are scored by the evals engine with the parameters being trained, on
the training mesh: no checkpoint round trip, and one compile for the whole run (the rows
have one shape: the model's max_seq_len by the global batch size). The eval files are read
and checked when the run starts, before anything is written. Each task's metrics go to the
step's metrics.jsonl record and TensorBoard as `downstream/<task>/<metric>`, with the
seconds they took (`downstream/seconds`), so every run measures what the evaluation costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from common import fs
from common.parsers import comma_list
from data_pipeline.decontamination import eval_sets
from evals import harness
from evals import tasks as tasks_lib
from evals.engine import Engine
from tokenizer.special_ids import bos_prefix
from tokenizer.vocab import load_vocabulary

Scores = dict[str, Any]


def make_downstream(config: ml_collections.ConfigDict, setup: Any) -> Callable[[int, Any], Scores | None]:
    """`downstream(step, params)`: {task: {metric: value}, "seconds": s} when due, else None."""
    d = config.get("downstream")
    total = config.train.total_steps
    if d is None or not comma_list(d.tasks) or not (d.every_steps or d.at_end):
        return lambda step, params: None
    score = DownstreamScorer(config, setup)

    def downstream(step: int, params: Any) -> Scores | None:
        due = (d.every_steps and step % d.every_steps == 0) or (d.at_end and step == total)
        return score(params) if due else None

    return downstream


class DownstreamScorer:
    """The configured tasks' items, read and tokenized once, scored on the training mesh."""

    def __init__(self, config: ml_collections.ConfigDict, setup: Any):
        d = config.downstream
        self.mesh, self.seed, self.num_fewshot = setup.mesh, config.seed, d.num_fewshot
        self.data = harness.load_tasks(
            tasks_lib.resolve(comma_list(d.tasks), [fs.resolve(p) for p in comma_list(d.user_tasks)]),
            eval_dir=d.eval_dir,
            eval_set_paths=eval_sets.parse_specs(comma_list(d.eval_sets)),
            fewshot_paths=eval_sets.parse_specs(comma_list(d.fewshot_sets)),
            limit=d.limit,
            num_fewshot=d.num_fewshot,
        )
        vocab = load_vocabulary(config.data.tokenizer)
        self.encode = vocab.encode
        self.bos = bos_prefix(config.mixture.get("bos", "document"))
        model, rules = setup.model, setup.rules

        def forward(params, inputs, positions, segment_ids):
            with nn.logical_axis_rules(rules):
                return model.apply({"params": params}, inputs, positions, segment_ids)

        self.engine = Engine(
            forward,
            None,
            row_len=setup.model_config.max_seq_len,
            batch_rows=config.data.global_batch_size,
            batch_sharding=setup.batch_sharding["inputs"],
            vocab_size=vocab.vocab_size,  # as the exported model (and lm-eval) has it
        )

    def __call__(self, params: Any) -> Scores:
        start = time.perf_counter()
        self.engine.params = params
        with jax.set_mesh(self.mesh):
            records = harness.score(
                self.data, self.engine, self.encode, self.bos, num_fewshot=self.num_fewshot, seed=self.seed
            )
        summary = harness.summarize(records, seed=self.seed)
        scores: Scores = {
            task: {name: m["value"] for name, m in entry["metrics"].items()}
            for task, entry in summary.items()
        }
        scores["seconds"] = time.perf_counter() - start
        return scores
