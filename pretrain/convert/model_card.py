"""The export's model card (README.md) and export_info.json, read from the run that made it.

Someone handed an exported directory should learn from it alone what it is: the
architecture and its size, the checkpoint step and the tokens behind it, the mixture and its
schedule, the tokenizer's SHA-256, the losses and downstream scores the run logged up to
that step, and how to evaluate it. export_info.json holds the same facts for programs.
Everything comes from the run's config.json and metrics.jsonl: nothing is measured here.
"""

from __future__ import annotations

import json
import time
from typing import Any

import ml_collections

from common import fs
from mixtures.schedule import mixture_schedule
from pretrain.convert import hf_mapping
from pretrain.metrics import read_metrics
from pretrain.model.transformer import TransformerConfig, count_params

INFO_FILE, CARD_FILE = "export_info.json", "README.md"


def _last(records: list[dict[str, Any]], field: str) -> dict[str, Any] | None:
    return next((r for r in reversed(records) if field in r), None)


def export_info(
    workdir: str, train_config: ml_collections.ConfigDict, model: TransformerConfig, step: int, fmt: str
) -> dict[str, Any]:
    """The facts of the export of `workdir`'s checkpoint `step` (JSON values)."""
    logged = read_metrics(workdir) if fs.exists(fs.join(workdir, "metrics.jsonl")) else []  # hf_import: none
    records = [r for r in logged if r.get("step", 0) <= step]
    data = train_config.data
    train, evals, downstream = (_last(records, f) for f in ("loss", "eval_loss", "downstream"))
    schedule = mixture_schedule(train_config)
    return {
        "format": fmt,
        "hf_model_type": hf_mapping.hf_family(model) if fmt == "hf" else None,
        "parameters": count_params(model),
        "model": model.to_dict(),
        "step": step,
        "tokens": step * data.global_batch_size * data.seq_len,
        "sequence_length": data.seq_len,
        "mixture": schedule.table() if schedule else None,
        "bos": train_config.get("mixture", {}).get("bos", "document"),
        "tokenizer_sha256": data.get("tokenizer_sha256") or None,
        "train_loss": {"step": train["step"], "loss": train["loss"]} if train else None,
        "validation_loss": {"step": evals["step"], **evals["eval_loss"]} if evals else None,
        "downstream": {"step": downstream["step"], **downstream["downstream"]} if downstream else None,
        "workdir": workdir,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def model_card(info: dict[str, Any]) -> str:
    """README.md of the export, from `export_info`'s facts."""
    m = info["model"]
    lines = [
        f"# {info['hf_model_type'] or 'Gemma'} model, step {info['step']} of its run",
        "",
        "Trained with gemma-pretrain (`python -m pretrain.train`) and exported by "
        "`python -m pretrain.convert.export`; every figure below was logged by that run.",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {info['parameters']:,} |",
        f"| layers, model width, heads (KV heads), head width | {m['num_layers']}, {m['embed_dim']}, "
        f"{m['num_heads']} ({m['num_kv_heads']}), {m['head_dim']} |",
        f"| attention pattern | {m.get('attention_pattern', 'global')} (window {m.get('sliding_window', 0)}) |",
        f"| vocabulary | {m['vocab_size']:,} (tokenizer sha256 `{info['tokenizer_sha256']}`) |",
        f"| training | {info['step']} steps, {info['tokens']:,} tokens, rows of {info['sequence_length']}, "
        f"<bos> policy `{info['bos']}` |",
    ]
    if info["train_loss"]:
        lines.append(f"| train loss | {info['train_loss']['loss']:.4f} (step {info['train_loss']['step']}) |")
    if info["validation_loss"]:
        v = {k: val for k, val in info["validation_loss"].items() if k != "step"}
        text = ", ".join(f"{k} {val:.4f}" for k, val in v.items())
        lines.append(f"| validation loss | {text} (step {info['validation_loss']['step']}) |")
    if info["mixture"]:
        lines += ["", "## Mixture schedule", "", "| stage | steps | weights |", "|---|---|---|"]
        for stage in info["mixture"]:
            weights = ", ".join(f"{t}={w:g}" for t, w in stage["weights"].items() if w)
            lines.append(f"| {stage['name']} | {stage['start_step']}-{stage['end_step']} | {weights} |")
    if info["downstream"]:
        lines += ["", f"## Downstream scores logged in the loop (step {info['downstream']['step']})", ""]
        for task, metrics in info["downstream"].items():
            if isinstance(metrics, dict):
                lines.append(f"- {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    lines += [
        "",
        "## Using and evaluating it",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("THIS_DIR")',
        'tokenizer = AutoTokenizer.from_pretrained("THIS_DIR")',
        "```",
        "",
        "Downstream benchmarks on the checkpoint itself: `python -m pretrain.tools.downstream "
        f"--workdir {info['workdir']} --step {info['step']} --tasks arc_easy,mmlu --eval_dir EVAL "
        "--output DIR`; on this directory with lm-evaluation-harness: "
        "`lm_eval --model hf --model_args pretrained=THIS_DIR,dtype=float32 --tasks arc_easy`.",
        "",
    ]
    return "\n".join(lines)


def write(directory: str, info: dict[str, Any]) -> None:
    """export_info.json and, for a Hugging Face export, README.md into `directory`."""
    fs.write_text(fs.join(directory, INFO_FILE), json.dumps(info, indent=2) + "\n")
    if info["format"] == "hf":
        fs.write_text(fs.join(directory, CARD_FILE), model_card(info))
