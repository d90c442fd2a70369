"""Device mesh with named axes (data, fsdp, tensor) and logical-axis -> mesh-axis rules.

The model names every parameter and activation axis logically ("embed", "mlp",
"activation_batch", ...); these rules decide which mesh axes shard them, so one
model definition runs on 1 CPU, 8 simulated devices or a TPU pod.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common.checks import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

# Batch over data x fsdp (ZeRO-3 style: weights sharded over fsdp on their embed axis),
# heads / MLP hidden / vocabulary over tensor (Megatron style).
DEFAULT_RULES: Rules = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),  # the stacked axis of scan_layers parameters
)


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over all (or the given) devices with axes (data, fsdp, tensor).

    `shape` maps axis names to sizes; absent axes get 1 and one axis may be -1 to take the
    remaining devices. jax.make_mesh orders devices along the physical interconnect.
    """
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
        raise ConfigError(f"config.mesh.{unknown[0]}: unknown mesh axis (known: {MESH_AXES})")
    devices = list(jax.devices() if devices is None else devices)
    sizes = {axis: int(shape.get(axis, 1)) for axis in MESH_AXES}
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise ConfigError(f"config.mesh.{axis}: must be >= 1 or -1, got {size}")
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ConfigError(f"config.mesh.{free[1]}: only one axis may be -1")
    fixed = int(np.prod([s for s in sizes.values() if s != -1]))
    if free:
        if len(devices) % fixed:
            raise ConfigError(f"config.mesh.{free[0]}: {len(devices)} devices not divisible by {fixed}")
        sizes[free[0]] = len(devices) // fixed
    total = int(np.prod(list(sizes.values())))
    if total != len(devices):
        raise ConfigError(f"config.mesh: shape {sizes} needs {total} devices, have {len(devices)}")
    axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(tuple(sizes.values()), MESH_AXES, axis_types, devices=devices)


def logical_rules(config: Any = None) -> Rules:
    """DEFAULT_RULES, with entries replaced/added by `config.sharding.logical_axis_rules`.

    `config` is a training config (or None); its rules are pairs [logical_name, mesh_axes]
    where mesh_axes is None, one mesh axis name or a list of them.
    """
    overrides = ()
    sharding_cfg = config.get("sharding") if config is not None and hasattr(config, "get") else None
    if sharding_cfg is not None and sharding_cfg.get("logical_axis_rules") is not None:
        overrides = sharding_cfg.get("logical_axis_rules")
    rules = dict(DEFAULT_RULES)
    for i, pair in enumerate(overrides):
        where = f"config.sharding.logical_axis_rules[{i}]"
        if len(pair) != 2 or not isinstance(pair[0], str):
            raise ConfigError(f"{where}: expected [logical_name, mesh_axes], got {pair!r}")
        name, axes = pair
        axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
        for axis in axes if isinstance(axes, tuple) else (axes,):
            if axis is not None and axis not in MESH_AXES:
                raise ConfigError(f"{where}: unknown mesh axis {axis!r} (known: {MESH_AXES})")
        rules[name] = axes
    return tuple(rules.items())


def _fit(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Drops mesh axes from dimensions they do not divide (e.g. 1 key/value head over tensor=4)."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        kept = []
        for name in _names(axes):
            if dim % (int(np.prod([mesh.shape[a] for a in kept])) * mesh.shape[name]) == 0:
                kept.append(name)
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*fitted)


def replication_notes(boxed_tree: Any, mesh: Mesh, rules: Rules) -> list[str]:
    """One line per mesh axis that `_fit` dropped from a parameter dimension it does not divide.

    Dropping is correct but costs memory: the parameter, its gradient and its optimiser moments
    are then whole on every device of that axis (Gemma 3 1B's 1152-wide embedding over fsdp=256
    replicated ~16 GiB per chip). The trainer and the AOT report print these lines.
    """
    specs = jax.tree.leaves(nn.logical_to_mesh(logical_specs(boxed_tree), rules), is_leaf=_is_spec)
    shapes = jax.tree.leaves(nn.unbox(boxed_tree))
    dropped: dict[tuple[str, int], list[int]] = {}  # (mesh axis, dimension size) -> leaf byte counts
    for spec, leaf in zip(specs, shapes):
        fitted = _fit(spec, leaf.shape, mesh)
        for dim, wanted, kept in zip(leaf.shape, tuple(spec) + (None,) * leaf.ndim, fitted):
            lost = set(_names(wanted)) - set(_names(kept))
            for axis in sorted(a for a in lost if mesh.shape[a] > 1):
                dropped.setdefault((axis, dim), []).append(leaf.size * leaf.dtype.itemsize)
    return [
        f"mesh axis {axis}={mesh.shape[axis]} does not divide a dimension of size {dim}: "
        f"{len(sizes)} parameter(s), {sum(sizes) / 2**20:,.1f} MiB, are not split over it "
        "(with their gradients and optimiser state)"
        for (axis, dim), sizes in sorted(dropped.items())
    ]


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec)


def _names(axes: Any) -> tuple[str, ...]:
    return () if axes is None else (axes if isinstance(axes, tuple) else (axes,))


def logical_specs(boxed_tree: Any) -> Any:
    """Tree of logical PartitionSpecs from a tree holding nn.Partitioned (e.g. model.init output)."""
    return nn.get_partition_spec(boxed_tree)


def mesh_shardings(boxed_tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for every leaf of a boxed (nn.Partitioned) tree of arrays or shapes.

    Works on the output of jax.eval_shape(model.init, ...), so shardings are known before
    any parameter is allocated; leaves without annotations are replicated.
    """
    specs = nn.logical_to_mesh(logical_specs(boxed_tree), rules)
    shapes = nn.unbox(boxed_tree)
    return jax.tree_util.tree_map(
        lambda spec, x: NamedSharding(mesh, _fit(spec, x.shape, mesh)),
        specs,
        shapes,
        is_leaf=_is_spec,
    )
