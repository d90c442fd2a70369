"""Compile the real sharded train step for a TPU slice on this (CPU) machine: does the launch fit?

  python -m pretrain.tools.aot --config=configs/train/tpu_v5e_2b.py [--topology=v5e:16x16]

`jax.experimental.topologies.get_topology_desc` describes the slice's devices without
having them (it needs `libtpu`: `pip install 'libtpu==0.0.42.*'`, the version `jax[tpu]`
0.10.2 pins, or `pip install -e '.[test]'`). The step built by the trainer's own setup is
lowered with abstract state and batch and compiled for those devices (`pretrain.step_memory`,
which the trainer's `remat_policy="auto"` uses too); the compiler then reports, per chip, what the
program needs in HBM and how many FLOPs and bytes one step costs. From those a roofline
gives a step time and MFU (compute, HBM and ICI bounds, assuming perfect overlap), next to
the 6ND-style model FLOPs of `pretrain.flops`. Exits 1 when the step does not fit in
`config.aot.max_hbm_fraction` of the chip's HBM (as the TPU would, with
RESOURCE_EXHAUSTED, minutes into a paid launch). Approach after MaxText's train_compile.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import sys

import jax.numpy as jnp
import ml_collections

from common import checks, cli
from pretrain import flops
from pretrain.step_memory import GIB, DoesNotFit, choose_remat_policy, compile_step, live_peak

INSTALL_HINT = (
    "pip install 'libtpu==0.0.42.*'  (the libtpu jax[tpu]==0.10.2 pins; also in the "
    "test extra: pip install -e '.[test]')"
)


@dataclasses.dataclass(frozen=True)
class Chip:
    """Per-chip figures of a TPU generation, from Google's published system specs."""

    hbm_bytes: float  # what a program may use (the runtime's limit), not the data-sheet size
    peak_flops: float  # dense bf16 FLOP/s
    hbm_bandwidth: float  # bytes/s
    ici_bandwidth: float  # bytes/s, all links of one chip together
    source: str


CHIPS = {
    # https://cloud.google.com/tpu/docs/v5e : 16 GiB HBM2 at 819 GB/s, 197 TFLOP/s bf16,
    # ICI 1,600 Gbit/s per chip. The runtime leaves 15.75 GiB to programs (bytes_limit),
    # so that is the capacity used here; the data-sheet 16 GiB would be 1.6% more generous.
    "TPU v5 lite": Chip(15.75 * GIB, 197e12, 819e9, 1600e9 / 8, "cloud.google.com/tpu/docs/v5e"),
    # https://cloud.google.com/tpu/docs/v5p : 95 GB HBM2e at 2,765 GB/s, 459 TFLOP/s bf16,
    # ICI 4,800 Gbit/s per chip.
    "TPU v5": Chip(95e9, 459e12, 2765e9, 4800e9 / 8, "cloud.google.com/tpu/docs/v5p"),
}


@dataclasses.dataclass(frozen=True)
class Report:
    """What the compiler says about one train step on one chip, and the roofline from it."""

    topology: str
    chips: int
    device_kind: str
    mesh: dict[str, int]
    compile_seconds: float
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int
    hbm_bytes: float
    max_fraction: float
    compiler_flops: float  # per chip, as XLA's cost analysis counts them (loop bodies once)
    compiler_bytes: float  # HBM bytes accessed per chip, ditto
    model_flops: float  # per chip: pretrain.flops (6 N D + attention), what MFU counts
    executed_flops: float  # per chip: model FLOPs + rematerialisation + loss recomputation
    ici_bytes: float  # per chip, FSDP all-gathers and reduce-scatters (estimate)
    peak_flops: float
    hbm_bandwidth: float
    ici_bandwidth: float
    tokens_per_step: int
    replication_notes: list[str]  # parameters a mesh axis does not split (sharding.replication_notes)

    @property
    def peak_bytes(self) -> int:
        return live_peak(
            self.argument_bytes, self.output_bytes, self.alias_bytes, self.temp_bytes, self.code_bytes
        )

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.max_fraction * self.hbm_bytes

    @property
    def bounds(self) -> dict[str, float]:
        """Lower bounds on the step time (s) from each resource alone.

        Compute takes the larger of the compiler's count and the executed-FLOPs estimate:
        the compiler counts each loop body once (scanned layers) and Pallas kernels as 0.
        """
        return {
            "compute": max(self.compiler_flops, self.executed_flops) / self.peak_flops,
            "hbm": self.compiler_bytes / self.hbm_bandwidth,
            "ici": self.ici_bytes / self.ici_bandwidth,
        }

    @property
    def step_seconds(self) -> float:
        return max(self.bounds.values())

    @property
    def mfu(self) -> float:
        return self.model_flops / (self.step_seconds * self.peak_flops)


def parse_topology(name: str) -> int:
    """Chips in a "v5e:16x16"-style name (what get_topology_desc takes)."""
    try:
        generation, dims = name.split(":")
        return math.prod(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise checks.ConfigError(f"config.aot.topology: expected e.g. 'v5e:16x16', got {name!r}") from None


def topology_devices(name: str) -> list:
    """The devices of a TPU slice, described by libtpu without any TPU attached."""
    if importlib.util.find_spec("libtpu") is None:
        raise SystemExit(f"pretrain.tools.aot needs libtpu to compile for TPU: {INSTALL_HINT}")
    from jax.experimental import topologies

    parse_topology(name)
    # Any JAX process on this machine that loaded libtpu holds its lockfile; describing a
    # topology attaches to no chip, so sharing the library is safe.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    return list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)


def fsdp_ici_bytes(
    param_count: int, compute_bytes: int, grad_bytes: int, fsdp: int, gathers: int, micro_steps: int
) -> float:
    """Bytes each chip moves over ICI per step for ZeRO-3 FSDP over `fsdp` chips (ring algorithms).

    Every micro-batch all-gathers the weights in the compute dtype `gathers` times (forward,
    and again in the backward pass when the blocks are rematerialised), and the gradients
    are reduce-scattered once per step; a ring moves (n - 1) / n of the array per chip.
    """
    if fsdp == 1:
        return 0.0
    ring = (fsdp - 1) / fsdp
    return ring * param_count * (gathers * micro_steps * compute_bytes + grad_bytes)


def analyse(config: ml_collections.ConfigDict, topology: str) -> Report:
    """Compiles the step for `topology` and reads the compiler's memory and cost analyses."""
    devices = topology_devices(topology)
    kind = devices[0].device_kind
    checks.require(
        kind in CHIPS, "aot.topology", f"no chip figures for {kind!r} (known: {sorted(CHIPS)})", topology
    )
    chip = CHIPS[kind]
    compiled, facts = compile_step(config, devices)
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    model_cfg, chips = facts["model"], len(devices)
    tokens = config.data.global_batch_size * config.data.seq_len
    shape, length = flops.shape_of(model_cfg), config.data.seq_len
    model_flops = tokens * flops.train_flops_per_token(shape, length)
    executed = tokens * flops.executed_train_flops_per_token(
        shape, length, model_cfg.remat_policy, model_cfg.vocab_chunks
    )
    remat = model_cfg.remat_policy != "none"
    ici = fsdp_ici_bytes(
        facts["param_count"],
        jnp.dtype(model_cfg.activation_dtype).itemsize,
        jnp.dtype(model_cfg.weight_dtype).itemsize,
        facts["mesh"]["fsdp"],
        2 if remat else 1,
        config.train.grad_accum_steps,
    )
    return Report(
        topology=topology,
        chips=chips,
        device_kind=kind,
        mesh=facts["mesh"],
        compile_seconds=facts["compile_seconds"],
        argument_bytes=memory.argument_size_in_bytes,
        output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes,
        temp_bytes=memory.temp_size_in_bytes,
        code_bytes=memory.generated_code_size_in_bytes,
        hbm_bytes=chip.hbm_bytes,
        max_fraction=config.aot.max_hbm_fraction,
        compiler_flops=float(cost.get("flops", 0.0)),
        compiler_bytes=float(cost.get("bytes accessed", 0.0)),
        model_flops=model_flops / chips,
        executed_flops=executed / chips,
        ici_bytes=ici,
        peak_flops=chip.peak_flops,
        hbm_bandwidth=chip.hbm_bandwidth,
        ici_bandwidth=chip.ici_bandwidth,
        tokens_per_step=tokens,
        replication_notes=facts["replication_notes"],
    )


def format_report(r: Report) -> str:
    def gib(b: float) -> str:
        return f"{b / GIB:7.2f} GiB" if b >= GIB / 10 else f"{b / 2**20:7.2f} MiB"

    bounds = r.bounds
    lines = [
        f"{r.topology}: {r.chips} x {r.device_kind}, mesh {r.mesh}; compiled in {r.compile_seconds:.0f}s",
        "per-chip HBM (compiler memory_analysis):",
        f"  arguments     {gib(r.argument_bytes)}   (state + batch shards)",
        f"  outputs       {gib(r.output_bytes)}",
        f"  aliased       {gib(r.alias_bytes)}   (donated state reused for the new state)",
        f"  temporaries   {gib(r.temp_bytes)}",
        f"  code          {gib(r.code_bytes)}",
        f"  peak          {gib(r.peak_bytes)} of {gib(r.hbm_bytes)} usable "
        f"= {r.peak_bytes / r.hbm_bytes:.1%} (limit {r.max_fraction:.0%})",
        f"FLOPs per chip per step: model (6ND + attention) {r.model_flops:.4g}; executed "
        f"(+ remat, loss recompute) {r.executed_flops:.4g}; compiler cost_analysis "
        f"{r.compiler_flops:.4g} (loop bodies counted once, Pallas kernels as 0)",
        f"roofline per step: compute {bounds['compute']:.3f}s, HBM {bounds['hbm']:.3f}s "
        f"({r.compiler_bytes / 1e9:.1f} GB), ICI {bounds['ici']:.3f}s ({r.ici_bytes / 1e9:.1f} GB, "
        f"FSDP estimate) -> {r.step_seconds:.3f}s, {r.tokens_per_step / r.step_seconds:,.0f} tokens/s, "
        f"MFU {r.mfu:.1%} (peak {r.peak_flops / 1e12:.0f} TFLOP/s, perfect overlap assumed)",
    ]
    lines += [f"note: {note}" for note in r.replication_notes]
    return "\n".join(lines)


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    del argv
    topology = config.aot.topology
    checks.require(bool(topology), "aot.topology", "required (--topology=v5e:16x16)", topology)
    chips = parse_topology(topology)
    advice = (
        "Lower data.global_batch_size per chip (raise train.grad_accum_steps to keep the "
        "tokens per step), set model.remat_policy, model.vocab_chunks, model.attention='splash'."
    )
    if config.model.remat_policy == "auto":
        chip = CHIPS.get(topology_devices(topology)[0].device_kind)
        checks.require(
            chip is not None, "aot.topology", f"no chip figures (known: {sorted(CHIPS)})", topology
        )
        budget = config.aot.max_hbm_fraction * chip.hbm_bytes
        config.model.remat_policy = choose_remat_policy(config, topology_devices(topology), budget)
    try:
        report = analyse(config, topology)
    except DoesNotFit as e:
        print(f"DOES NOT FIT on {topology}: the TPU compiler ran out of HBM: {e}\n{advice}", file=sys.stderr)
        sys.exit(1)
    print(format_report(report))
    if not report.fits:
        print(
            f"DOES NOT FIT: {report.peak_bytes / GIB:.2f} GiB per chip > "
            f"{report.max_fraction:.0%} of {report.hbm_bytes / GIB:.2f} GiB on {chips} chips. " + advice,
            file=sys.stderr,
        )
        sys.exit(1)
    print("fits")


def run() -> None:
    cli.run(
        main,
        doc=__doc__,
        default_config="train/tpu_v5e_2b.py",
        shortcuts=[cli.Shortcut("topology", "aot.topology", "TPU slice, e.g. v5e:16x16")],
    )


if __name__ == "__main__":
    run()
