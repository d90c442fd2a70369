"""Peak host memory and speed of the HF export: streamed writer vs safetensors.save_file.

  python bench/export_memory.py [--layers 8] [--dtype float32]

Builds a random ~150M-parameter Gemma-shaped model in memory, then exports it in a fresh
subprocess per method, reporting the peak resident set size (VmHWM, reset right before the
export) above the resident size with the weights loaded.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, os, sys, time
import jax, jax.numpy as jnp, numpy as np
from pretrain.convert import export, hf_mapping
from pretrain.model.transformer import TransformerConfig
method, out, layers, dtype = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
config = TransformerConfig(vocab_size=32000, num_layers=layers, embed_dim=1024, num_heads=8,
                           num_kv_heads=1, head_dim=128, hidden_dim=4096)
from pretrain.model.transformer import abstract_variables
import flax.linen as nn
shapes = nn.unbox(abstract_variables(config)["params"])
rng = np.random.default_rng(0)
params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32)), shapes)
jax.block_until_ready(params)
weights = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))

def rss(field):
  for line in open("/proc/self/status"):
    if line.startswith(field):
      return int(line.split()[1]) * 1024

base = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
  f.write("5")  # reset VmHWM (peak RSS) to the current RSS
start = time.perf_counter()
if method == "stream":
  summary = export.export_hf(params, config, None, out, dtype=dtype)
else:  # every converted tensor in one dict, then safetensors.numpy.save_file
  from safetensors.numpy import save_file
  target = export.DTYPES[dtype]
  tensors = {}
  for rule in hf_mapping.rules(config, config.vocab_size):
    leaf = params
    for k in rule.flax_path:
      leaf = leaf[k]
    host = np.asarray(leaf).astype(target)
    tensors.update({n: np.ascontiguousarray(t) for n, t in zip(rule.hf_names, rule.to_hf(host))})
  save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
seconds = time.perf_counter() - start
written = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".safetensors"))
print(json.dumps(dict(method=method, params=sum(x.size for x in jax.tree_util.tree_leaves(params)),
                      weights_mib=weights / 2**20, base_rss_mib=base / 2**20,
                      peak_above_base_mib=(rss("VmHWM:") - base) / 2**20, seconds=seconds,
                      written_mib=written / 2**20, mib_per_s=written / 2**20 / seconds)))
"""


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    for method in ("stream", "save_file"):
        with tempfile.TemporaryDirectory() as out:
            print(f"running {method} ...", flush=True)
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, method, out, str(args.layers), args.dtype],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"{r['method']:>9}: {r['params']:,} params, weights {r['weights_mib']:.0f} MiB, "
                f"peak RSS above loaded weights {r['peak_above_base_mib']:.0f} MiB, "
                f"{r['written_mib']:.0f} MiB written in {r['seconds']:.1f}s ({r['mib_per_s']:.0f} MiB/s)"
            )


if __name__ == "__main__":
    main()
