"""The sharded train step gives the 1-device losses on 8 simulated CPU devices.

The 8-device runs happen in a subprocess (XLA_FLAGS must be set before jax starts) so
every other test keeps one device.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from pretrain import train as train_lib
from pretrain.metrics import read_metrics
from tests.support.devices import run_on_devices
from tests.support.train import tiny_config

REPO = Path(__file__).resolve().parents[2]
STEPS = 8  # the tiny config's default: the 1-device run reuses compiled programs
# (data, fsdp, tensor) meshes and gradient-accumulation micro-steps.
CASES = [((8, 1, 1), 1), ((2, 2, 2), 2), ((1, 8, 1), 1), ((1, 2, 4), 1)]

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import jax
    assert jax.device_count() == 8, jax.devices()
    from pretrain import train
    from pretrain.metrics import read_metrics
    from tests.support.train import tiny_config

    out = {{}}
    for (data, fsdp, tensor), accum in {cases!r}:
        name = f"{{data}}x{{fsdp}}x{{tensor}}_accum{{accum}}"
        config = tiny_config({workdir!r} + "/" + name, total_steps={steps},
                             grad_accum_steps=accum)
        config.mesh.update(dict(data=data, fsdp=fsdp, tensor=tensor))
        train.train(config)
        out[name] = [r["loss"] for r in read_metrics(config.workdir)]
    print("LOSSES=" + json.dumps(out))
""")


def test_meshes_of_8_devices_match_one_device(tmp_path):
    config = tiny_config(tmp_path / "one_device", total_steps=STEPS)
    train_lib.train(config)
    reference = [r["loss"] for r in read_metrics(config.workdir)]

    script = SCRIPT.format(tests=str(REPO), cases=CASES, workdir=str(tmp_path), steps=STEPS)
    line = next(l for l in run_on_devices(script).splitlines() if l.startswith("LOSSES="))
    losses = json.loads(line.removeprefix("LOSSES="))
    assert len(losses) == len(CASES)
    for name, values in losses.items():
        np.testing.assert_allclose(values, reference, rtol=2e-5, atol=2e-5, err_msg=name)
