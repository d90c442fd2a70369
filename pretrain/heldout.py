"""Periodic held-out loss on each domain's `validation` split during training.

Each task gets its own single-task MixtureStream over the packed validation split (written
by `mixtures.pack` next to the training rows), rewound to its start before every
evaluation, so successive evaluations score the same tokens and their losses are
comparable along the run.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from pretrain import data
from pretrain.train_step import make_loss_fn


def single_task_mixture(mixture: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
    """A mixture config that always draws `task` (same BOS policy and seed as training)."""
    return ml_collections.ConfigDict(
        dict(
            tasks=[task],
            stages=[dict(name="validation", start=0.0, weights={task: 1.0})],
            seq_len=mixture.get("seq_len", 0),
            bos=mixture.get("bos", "document"),
            seed=mixture.get("seed", 0),
        )
    )


class HeldOutLoss:
    """Mean loss per target token on `config.eval.batches` batches of every eval task."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        model,
        mesh: jax.sharding.Mesh,
        rules,
        param_sharding: Any,
        batch_sharding: dict[str, Any],
    ):
        # Imported here: the stream needs Grain and ArrayRecord, which synthetic runs (no
        # held-out loss) do without; bench/gpu_throughput.py runs on GPU machines that lack them.
        from mixtures.stream import MixtureStream

        d = config.data
        self.batches, self.global_batch = config.eval.batches, d.global_batch_size
        self.batch_sharding = batch_sharding
        self.streams = {}
        for task in config.eval.tasks:
            stream = MixtureStream(
                single_task_mixture(config.mixture, task),
                d.packed_dir,
                batch_size=d.global_batch_size,
                total_steps=self.batches,
                seed=config.seed,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                split="validation",
                read_threads=1,
                prefetch=1,
            )
            self.streams[task] = (stream, stream.get_state())
        loss_fn = make_loss_fn(model, 0.0, 1, rules)

        def sums(params, batch):
            _, s = loss_fn(params, {**batch, "task_ids": jnp.zeros_like(batch["task_ids"])}, jnp.float32(1.0))
            return s["loss"], s["task_weight"][0]

        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self._sums = jax.jit(
            sums, in_shardings=(param_sharding, batch_sharding), out_shardings=(replicated, replicated)
        )

    def __call__(self, params: Any) -> dict[str, float]:
        """{task: mean loss per target token} over the same validation batches every time."""
        losses = {}
        for task, (stream, start) in self.streams.items():
            stream.set_state(start)
            total = weight = 0.0
            for _ in range(self.batches):
                batch = data.to_global(next(stream), self.batch_sharding, self.global_batch)
                loss, w = self._sums(params, batch)
                total, weight = total + float(loss), weight + float(w)
            losses[task] = total / max(weight, 1.0)
        return losses


def default_config() -> ml_collections.ConfigDict:
    """`config.eval` defaults: off unless every_steps > 0 (needs real, prepared data)."""
    return ml_collections.ConfigDict(
        dict(
            every_steps=0,
            batches=2,
            tasks=("web", "math", "code"),
        )
    )
