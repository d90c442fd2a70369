"""What a study ran on, by content: a SHA-256 per input, recorded in its plan and checked on resume.

A study's numbers mean something only for the inputs it read. Two studies that name the same
paths may still have read other bytes (a corpus rebuilt on another machine, a re-pack, a
retrained tokenizer), so the study records a content hash of each input in its plan.json
and report, and a resume or a merge into a study whose inputs now hash differently is
refused with one line naming what changed. Inputs:

- `corpus`: the `*.jsonl` files of `config.corpus_dir` (when set; the demo corpus records
  the same digest in its corpus.json), and `source/<file>`: each shared-data file a bench's
  study corpus was built from (`studies.study_corpus`), re-hashed: a changed one is refused;
- `prepared/<domain>`: the records of PREP/<domain> per split (the TFDS dataset the held-out
  documents and the packs come from), as a set: Beam's workers write the same records to
  the shards in an order that differs from run to run, and the packer orders them itself;
- `packed` (and `packed[<arm>]` for an arm with its own `packed_dir`): the packed manifest
  (every packed file's SHA-256 and the settings) less where its tokenizer lay (the tokenizer's
  SHA-256 stays): two work folders holding the same rows hash the same;
- `tokenizer`: the tokenizer.model's SHA-256 (the packed manifest's when the study names none);
- `heldout`: the held-out documents and probe items the arms are scored on (set, id, text);
- `base_run`: the config.json of `from_workdir` (the run the arms branch from);
- anything a caller adds (e.g. the downstream eval items), as {name: sha256}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from common import checks, fs
from data_pipeline import demo_corpus, prepared
from mixtures import manifest
from studies import study_corpus
from tokenizer.model_file import model_sha256


def tree_sha256(root: str, suffix: str = "") -> str:
    """One digest of the files under `root` (ending in `suffix`): their SHA-256s by relative path."""
    base = fs.resolve(root)
    files = {
        f[len(base) + 1 :]: demo_corpus.file_sha256(f) for f in fs.walk_files(base) if f.endswith(suffix)
    }
    checks.require(bool(files), "inputs", f"no input files under {root}")
    return demo_corpus.corpus_sha256(files)


def records_sha256(dataset_dir: str) -> str:
    """One digest of a prepared dataset's records per split, whatever their order in the shards."""
    builder = prepared.open_prepared(dataset_dir)
    splits = {
        split: sorted(manifest.canonical_hash(_jsonable(r)) for r in prepared.examples(dataset_dir, split))
        for split in sorted(builder.info.splits)
    }
    return manifest.canonical_hash(splits)


def _jsonable(record: Mapping[str, Any]) -> dict[str, Any]:
    """TFDS's bytes and NumPy scalars as JSON values."""
    return {
        k: v.decode("utf-8", "backslashreplace")
        if isinstance(v, bytes)
        else v.item()
        if isinstance(v, np.generic)
        else v
        for k, v in record.items()
    }


def packed_sha256(packed_dir: str) -> str:
    """The packed manifest's digest without the tokenizer's path (see the module docstring)."""
    body = {k: v for k, v in manifest.read(packed_dir).items() if k != "fingerprint"}
    body["vocab"] = {k: v for k, v in body.get("vocab", {}).items() if k != "path"}
    return manifest.canonical_hash(body)


def items_sha256(items: list[Mapping[str, Any]]) -> str:
    """One digest of a list of items (dicts), in order."""
    return manifest.canonical_hash([dict(item) for item in items])


def input_hashes(
    config: ml_collections.ConfigDict, heldout: list[Mapping[str, Any]], extra: Mapping[str, str] = ()
) -> dict[str, str]:
    """{input: sha256} of everything the study reads (see the module docstring)."""
    out: dict[str, str] = {}
    if config.get("corpus_dir"):
        out["corpus"] = tree_sha256(config.corpus_dir, ".jsonl")
        out.update(study_corpus.verify(config.corpus_dir))
    for domain in prepared.domains(config.prep_dir):
        out[f"prepared/{domain}"] = records_sha256(prepared.domain_dir(config.prep_dir, domain))
    packed = config.train.data.packed_dir
    if packed:
        out["packed"] = packed_sha256(packed)
    for arm in config.arms:
        if arm.get("packed_dir") and fs.resolve(arm["packed_dir"]) != packed:
            out[f"packed[{arm['name']}]"] = packed_sha256(fs.resolve(arm["packed_dir"]))
    if config.train.data.tokenizer:
        out["tokenizer"] = model_sha256(config.train.data.tokenizer)
    elif packed:
        out["tokenizer"] = manifest.read(packed)["vocab"]["sha256"]
    out["heldout"] = items_sha256(heldout)
    if config.from_workdir:
        out["base_run"] = demo_corpus.file_sha256(fs.join(config.from_workdir, "config.json"))
    out.update(extra)
    return out


def check_same(recorded: Mapping[str, str], now: Mapping[str, str], output_dir: str) -> None:
    """Refuses (one line) to resume or merge into a study planned on other inputs."""
    changed = [
        f"{k} {recorded.get(k, 'absent')[:12]} -> {now.get(k, 'absent')[:12]}"
        for k in sorted(set(recorded) | set(now))
        if recorded.get(k) != now.get(k)
    ]
    if changed:
        raise checks.ConfigError(
            f"config.output_dir: {output_dir} was planned on other inputs ({'; '.join(changed)}); "
            "restore them or use a new --output"
        )


def read_recorded(plan_path: str) -> dict[str, str] | None:
    """The inputs recorded in a plan.json (None when there is no plan yet)."""
    return json.loads(fs.read_text(plan_path)).get("inputs", {}) if fs.exists(plan_path) else None
