"""Orbax checkpoints of a training run: WORKDIR/checkpoints/<step>/{state,data}.

`state` holds params, optimiser state, step and RNG (a pytree, saved asynchronously so
training continues while it is written); `data` holds the mixture stream's JSON state so
a resumed run sees exactly the batches an uninterrupted one would. Orbax writes each step
into a temporary directory and renames it only when complete, so a run killed in the
middle of a save restores from the previous finished step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from common import checks, fs
from common.checks import ConfigError

ITEMS = ("state", "data")


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Fails fast on bad `config.checkpoint` values, naming the field."""
    checks.require(
        cfg.every_steps >= 0, "checkpoint.every_steps", "must be >= 0 (0 saves none)", cfg.every_steps
    )
    checks.require(cfg.keep_last >= 1, "checkpoint.keep_last", "must be >= 1", cfg.keep_last)
    checks.require(
        cfg.keep_every >= 0, "checkpoint.keep_every", "must be >= 0 (0 keeps none extra)", cfg.keep_every
    )


def _checkpoints_dir(workdir: fs.PathLike) -> epath.Path:
    """WORKDIR/checkpoints as Orbax wants it: absolute when local, a URI left as is."""
    return fs.as_path(fs.join(workdir, "checkpoints"))


def make_manager(workdir: fs.PathLike, cfg: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    """A manager saving every `every_steps`, keeping the last `keep_last` and every `keep_every`-th."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=cfg.every_steps or 1,
        max_to_keep=cfg.keep_last,
        keep_period=cfg.keep_every or None,
        enable_async_checkpointing=cfg.async_save,
        cleanup_tmp_directories=True,
        create=True,
    )
    return ocp.CheckpointManager(_checkpoints_dir(workdir), options=options, item_names=ITEMS)


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: dict[str, Any],
    data_state: dict[str, Any] | None,
    force: bool = False,
) -> bool:
    """Starts an (async) save if `step` is due, or always with `force`; True if started."""
    return manager.save(
        step,
        force=force,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state or {})),
    )


SET_ASIDE = "unrestorable_checkpoints"  # WORKDIR/<this>/<step>: checkpoints that did not restore


def saved_steps(workdir: fs.PathLike) -> list[int]:
    """Steps of WORKDIR's finished checkpoints, read without creating anything."""
    directory = _checkpoints_dir(workdir)
    if not directory.exists():
        return []
    with ocp.CheckpointManager(
        directory, item_names=ITEMS, options=ocp.CheckpointManagerOptions(read_only=True)
    ) as manager:
        return sorted(manager.all_steps())


def restore_latest(
    manager: ocp.CheckpointManager, abstract_state: dict[str, Any], say: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(state, data_state) of the newest checkpoint that restores, placed as `abstract_state` says.

    A checkpoint newer than that one (a blob truncated or deleted, its metadata gone) is
    moved whole to WORKDIR/unrestorable_checkpoints/<step>, for inspection, and named with
    the error in one line to `say`: left in place, Orbax would count it as the latest step
    and never save that step again. When no checkpoint restores, the newest one's error is
    raised and nothing is moved (the config, not the files, is then the likely cause).
    """
    failed: list[tuple[int, Exception]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # Orbax, tensorstore and the filesystem each raise their own
            failed.append((step, e))
            continue
        for bad, error in failed:
            where = _set_aside(manager, bad)
            say(
                f"checkpoint step {bad} does not restore ({_root_cause(error)}); "
                f"resuming from step {step} instead; the damaged checkpoint is kept at {where}"
            )
        return restored.state, dict(restored.data or {})
    if failed:
        causes = "; ".join(f"step {step}: {_root_cause(error)}" for step, error in failed)
        raise UnrestorableCheckpoint(
            f"no checkpoint in {manager.directory} restores ({causes}); nothing was moved: restore "
            "them, or train in a new workdir (config.init_from can start from another run)"
        ) from None
    return None


def _set_aside(manager: ocp.CheckpointManager, step: int) -> str:
    """Moves checkpoint `step` out of the manager's directory (process 0), on every process."""
    source = fs.join(str(manager.directory), str(step))
    target = fs.join(
        fs.dirname(str(manager.directory)), SET_ASIDE, f"{step}-{time.strftime('%Y%m%dT%H%M%S')}"
    )
    if jax.process_index() == 0:
        fs.move(source, target)
    ocp.multihost.sync_global_processes(f"set_aside_checkpoint_{step}")
    manager.reload()
    return target


def load_train_config(workdir: fs.PathLike) -> ml_collections.ConfigDict:
    """WORKDIR/config.json, written by pretrain.train at start."""
    path = fs.join(workdir, "config.json")
    if not fs.exists(path):
        raise MissingCheckpoint(f"{path} not found: is {workdir} a pretrain.train workdir?")
    return ml_collections.ConfigDict(
        fs.read_json_state(path, "restore the run's config.json (export, evaluate and resumes read it)")
    )


def restore_params(
    workdir: fs.PathLike, step: int | None = None, sharding: jax.sharding.Sharding | Any | None = None
) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
    """(params, training config) of checkpoint `step` (default: latest), without optimiser state.

    Only the `params` subtree is read, so export and evaluation of a large model need one
    copy of the weights, not three. The arrays are laid out for the current process set,
    whatever mesh wrote them (Orbax reads each target shard's slice of the saved arrays):
    `sharding` is one Sharding for every leaf or a tree of them matching the params (e.g.
    pretrain.train's state shardings on this process set's mesh); by default each leaf is
    whole on this process's first local device, so one CPU host can export a checkpoint
    written by a pod.
    """
    config = load_train_config(workdir)
    directory = _checkpoints_dir(workdir)
    handlers = {"state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
    with ocp.CheckpointManager(
        directory, item_handlers=handlers, options=ocp.CheckpointManagerOptions(read_only=True)
    ) as manager:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise MissingCheckpoint(
                f"no checkpoint for step {step} in {directory} (have {sorted(manager.all_steps())})"
            )
        try:
            params = _read_params(manager, step, sharding)
        except Exception as e:  # Orbax, tensorstore and the filesystem each raise their own
            others = [s for s in sorted(manager.all_steps()) if s != step]
            readable = [s for s in others if _metadata_reads(manager, s)]
            damaged = (
                f"; damaged too: {sorted(set(others) - set(readable))}" if len(readable) < len(others) else ""
            )
            raise UnrestorableCheckpoint(
                f"checkpoint step {step} in {directory} does not restore ({_root_cause(e)}); "
                f"choose another step (the run holds {readable or 'no other'}{damaged})"
            ) from None
    return params, config


def _read_params(
    manager: ocp.CheckpointManager, step: int, sharding: jax.sharding.Sharding | Any | None
) -> dict[str, Any]:
    metadata = manager.item_metadata(step).state
    if metadata is None:
        raise FileNotFoundError("its tree metadata (state/_METADATA) is missing")
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if isinstance(sharding, jax.sharding.Sharding):
        sharding = jax.tree.map(lambda _: sharding, metadata["params"])
    abstract = jax.tree.map(
        lambda m, s: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=s), metadata["params"], sharding
    )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": abstract},
                restore_args=ocp.checkpoint_utils.construct_restore_args({"params": abstract}),
                partial_restore=True,
            )
        ),
    )
    return restored.state["params"]


def _metadata_reads(manager: ocp.CheckpointManager, step: int) -> bool:
    """Whether checkpoint `step`'s tree metadata reads: the cheap part of a restore, so a
    reader offers no step whose metadata is as damaged as the one it could not read."""
    try:
        metadata = manager.item_metadata(step).state
        return metadata is not None and "params" in metadata
    except Exception:  # what a damaged _METADATA raises depends on how it is damaged
        return False


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost cause: tensorstore's names the file and what is wrong."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: " + (str(error).strip().splitlines() or [""])[0][:300]


class MissingCheckpoint(ConfigError, FileNotFoundError):
    """A reader asked for a workdir or step that is not there: one line, exit 2."""


class UnrestorableCheckpoint(ConfigError):
    """The checkpoint a reader asked for is damaged, or none of a resuming run's restores:
    one line naming it (and the other steps), exit 2 (rerunning cannot help); readers never
    move or delete a run's files."""


def restore_state(
    workdir: fs.PathLike, abstract_state: dict[str, Any], step: int | None = None
) -> tuple[dict[str, Any], int]:
    """(state, step) of another run's checkpoint `step` (default: latest), read-only.

    The arrays land as `abstract_state`'s shardings say, whatever mesh wrote them: Orbax
    reads each device's slice of the saved (tensorstore) arrays, so a state written by
    256 chips restores on 8, or on one CPU. Used by `config.init_from`.
    """
    directory = _checkpoints_dir(workdir)
    with ocp.CheckpointManager(
        directory, item_names=ITEMS, options=ocp.CheckpointManagerOptions(read_only=True)
    ) as manager:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise MissingCheckpoint(
                f"config.init_from: no checkpoint for step {step} in "
                f"{directory} (have {sorted(manager.all_steps())})"
            )
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        )
    return restored.state, step
