"""How much device memory the compiled train step needs, and the remat policy that makes it fit.

The trainer (`model.remat_policy="auto"`) and the TPU compile check (pretrain.tools.aot) ask
the same question of the same program: the step `pretrain.train_setup` builds, lowered with
abstract state and batch, compiled for the given devices and measured by XLA's own
memory_analysis(). Compiling is the measurement, so the answer follows the batch, sequence
length, mesh, model and devices of the config instead of a formula.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from common import checks
from pretrain import sharding
from pretrain.train_setup import build_setup, jitted_train_step
from pretrain.train_step import BATCH_KEYS

GIB = 2**30

# Remat policies (pretrain.model.transformer.REMAT_POLICIES), least recomputation first: what
# `remat_policy="auto"` tries in order (choose_remat_policy).
FASTEST_FIRST = ("none", "matmul_outputs", "matmul_outputs_but_mlp_inputs", "full")


class DoesNotFit(RuntimeError):
    """The compiler itself refused the step: it needs more device memory than a chip has."""


def live_peak(argument: int, output: int, alias: int, temp: int, code: int) -> int:
    """Live device memory at a program's peak: inputs, plus outputs not aliased to inputs,
    plus scratch and code (the fields of XLA's memory_analysis())."""
    return argument + output - alias + temp + code


def compile_step(config: ml_collections.ConfigDict, devices: list) -> tuple[Any, dict]:
    """(compiled step, facts) for `config` on `devices`, built exactly as pretrain.train builds it."""
    setup = build_setup(config, sharding.make_mesh(dict(config.mesh), devices=devices))
    rows, length = config.data.global_batch_size, config.data.seq_len
    dtypes = {"loss_weights": jnp.float32}
    batch = {
        key: jax.ShapeDtypeStruct(
            (rows,) if key == "task_ids" else (rows, length),
            dtypes.get(key, jnp.int32),
            sharding=setup.batch_sharding[key],
        )
        for key in BATCH_KEYS
    }
    num_tasks = max(1, len(config.mixture.get("tasks", ()) or ()))
    step = jitted_train_step(setup, num_tasks)
    start = time.perf_counter()
    with jax.set_mesh(setup.mesh):
        lowered = step.lower(setup.abstract, batch)
        try:
            compiled = lowered.compile()
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            raise DoesNotFit(str(e).strip().splitlines()[0][:2000]) from None
    params = sum(x.size for x in jax.tree.leaves(setup.abstract["params"]))
    return compiled, {
        "mesh": dict(setup.mesh.shape),
        "compile_seconds": time.perf_counter() - start,
        "param_count": int(params),
        "model": setup.model_config,
        "replication_notes": setup.replication_notes,
    }


def needed_bytes(config: ml_collections.ConfigDict, devices: list | None) -> float:
    """Per-device bytes the compiled step needs at its peak (inf: the compiler refused it)."""
    try:
        m = compile_step(config, devices)[0].memory_analysis()
    except DoesNotFit:
        return math.inf
    return live_peak(
        m.argument_size_in_bytes,
        m.output_size_in_bytes,
        m.alias_size_in_bytes,
        m.temp_size_in_bytes,
        m.generated_code_size_in_bytes,
    )


def choose_remat_policy(
    config: ml_collections.ConfigDict,
    devices: list | None,
    budget_bytes: float,
    say: Callable[[str], None] = print,
) -> str:
    """The first policy of FASTEST_FIRST whose compiled step needs at most `budget_bytes` per device.

    Each candidate is the real step compiled for `devices` (this machine's, or a TPU slice
    described by libtpu) and measured by the compiler's memory_analysis(), so the choice
    follows the batch, sequence length, mesh and model of `config`.
    """
    for policy in FASTEST_FIRST:
        candidate = copy.deepcopy(config)
        candidate.model.remat_policy = policy
        need = needed_bytes(candidate, devices)
        fits = need <= budget_bytes
        needs = f"{need / GIB:.2f} GiB" if math.isfinite(need) else "more than the device has (compiler)"
        say(
            f"remat_policy {policy}: {needs} per device of {budget_bytes / GIB:.2f} GiB"
            + (" -> chosen" if fits else "")
        )
        if fits:
            return policy
    raise checks.ConfigError(
        f"config.model.remat_policy: 'auto' found no policy whose step fits in {budget_bytes / GIB:.2f} GiB "
        "per device; lower data.global_batch_size (raise train.grad_accum_steps to keep the tokens "
        "per step) or add devices"
    )


def resolve_remat_policy(config: ml_collections.ConfigDict, say: Callable[[str], None]) -> None:
    """`model.remat_policy="auto"`: the least recomputation whose step fits in
    `aot.max_hbm_fraction` of device 0's memory, by the compiler's own figures.

    Without a memory limit (CPU) that is the first candidate, "none". config.json records
    the resolved policy; a resume with "auto" chooses again (train_config.RESUME_EXECUTION allows it).
    """
    if config.model.remat_policy != "auto":
        return
    limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    if not limit:
        config.model.remat_policy = FASTEST_FIRST[0]
        say(f"remat_policy auto -> {config.model.remat_policy} (no device memory limit to fit)")
        return
    config.model.remat_policy = choose_remat_policy(
        config, jax.devices(), config.aot.max_hbm_fraction * limit, say
    )


def dry_run(config: ml_collections.ConfigDict, say: Callable[[str], None]) -> dict[str, Any]:
    """`--dry_run`: compiles the train step for this machine's devices and says what it needs
    per device, before a long run is launched; writes nothing (not even config.json)."""
    compiled, facts = compile_step(config, jax.devices())
    m = compiled.memory_analysis()
    peak = live_peak(
        m.argument_size_in_bytes,
        m.output_size_in_bytes,
        m.alias_size_in_bytes,
        m.temp_size_in_bytes,
        m.generated_code_size_in_bytes,
    )
    limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")  # None on CPU
    say(
        f"dry run: mesh {facts['mesh']} on {jax.device_count()} {jax.devices()[0].device_kind} device(s); "
        f"{facts['param_count']:,} parameters; step compiled in {facts['compile_seconds']:.1f}s"
    )
    say(
        f"memory per device: {peak / GIB:.3f} GiB at the peak (arguments {m.argument_size_in_bytes / GIB:.3f}, "
        f"temporaries {m.temp_size_in_bytes / GIB:.3f}, outputs {m.output_size_in_bytes / GIB:.3f} GiB)"
        + (f" of {limit / GIB:.1f} GiB" if limit else "")
    )
    return {
        "dry_run": True,
        "peak_bytes_per_device": peak,
        **{k: v for k, v in facts.items() if k != "model"},
    }
