"""Max |logit difference| between this model and transformers' GemmaForCausalLM after export.

  python bench/hf_parity.py

Random tiny models (MQA and MHA, fp32), 4 rows x 64 tokens unpacked, and one row packing
4 documents compared document by document against HF run on each document alone.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.convert import export  # noqa: E402
from pretrain.model.transformer import Transformer  # noqa: E402
from tests.support import export as fx  # noqa: E402


def main():
    rng = np.random.default_rng(0)
    for kv in (1, 4):
        config = fx.tiny_config(kv)
        params = fx.random_params(config, seed=kv)
        with tempfile.TemporaryDirectory() as out:
            export.export_hf(params, config, None, out, dtype="float32")
            hf = transformers.GemmaForCausalLM.from_pretrained(
                out, dtype=torch.float32, attn_implementation="eager"
            ).eval()
        apply = Transformer(config).apply
        tokens = rng.integers(0, config.vocab_size, (4, 64)).astype(np.int32)
        ours = np.asarray(
            apply({"params": params}, tokens, np.tile(np.arange(64), (4, 1)), np.ones_like(tokens))
        )
        with torch.no_grad():
            ref = hf(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
        unpacked = np.abs(ours - ref).max()
        lengths = [20, 7, 25, 12]
        docs = [rng.integers(0, config.vocab_size, n).astype(np.int32) for n in lengths]
        packed_tokens = np.concatenate(docs)[None]
        positions = np.concatenate([np.arange(n) for n in lengths])[None]
        segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)])[None]
        ours = np.asarray(apply({"params": params}, packed_tokens, positions, segments))[0]
        packed, start = 0.0, 0
        for doc in docs:
            with torch.no_grad():
                ref = hf(torch.tensor(doc[None], dtype=torch.long)).logits.numpy()[0]
            packed = max(packed, float(np.abs(ours[start : start + len(doc)] - ref).max()))
            start += len(doc)
        name = "MQA (1 kv head)" if kv == 1 else "MHA (4 kv heads)"
        print(
            f"{name}: max |diff| unpacked {unpacked:.2e}, packed {packed:.2e} "
            f"(logit scale {np.abs(ours).max():.1f})"
        )


if __name__ == "__main__":
    main()
