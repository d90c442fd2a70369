"""Streaming, seeded, per-domain-weighted sample of tokenizer training text.

SentencePiece holds its whole training set in memory, so the sample must be bounded while
the corpus is not: each domain's documents are streamed once, cut into training sentences
of at most `max_sentence_bytes` (SentencePiece silently drops longer ones), and a reservoir
(Vitter's Algorithm R) keeps a uniform random subset of `weight * max_sentences` of them.
Memory is the sample itself; the same inputs and seed give the same sample.

Inputs (`specs`) are strings, each optionally prefixed by `domain=`:
- a prepared-data directory `PREP_DIR` holding one TFDS dataset per domain (docs/DESIGN.md);
- one prepared TFDS dataset directory (read with `data_pipeline.prepared`, field `text`);
- JSONL files (`.jsonl`, `.jsonl.gz`, `.json.gz`; field `text`), domain = file stem by default;
- any other text file, or a glob of them, each file one document.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence

from absl import logging

from common import fs
from common.checks import ConfigError
from common.text import has_lone_surrogate
from data_pipeline import prepared

_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")


@dataclasses.dataclass(frozen=True)
class Source:
    """One input of one domain; `kind` is `tfds`, `jsonl` or `text`."""

    domain: str
    kind: str
    path: str


def _file_domain(path: str) -> str:
    name = fs.basename(path)
    for suffix in _JSONL_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def _file_kind(path: str) -> str:
    return "jsonl" if path.endswith(_JSONL_SUFFIXES) else "text"


def resolve_inputs(specs: Sequence[str]) -> list[Source]:
    """Turns `[domain=]path` strings into sources; fails naming the spec that matches nothing."""
    sources: list[Source] = []
    for spec in specs:
        domain, sep, raw = spec.partition("=")
        if not sep or "/" in domain:
            domain, raw = "", spec
        path = fs.resolve(raw)
        if fs.isdir(path):
            tfds_dir = prepared.dataset_dir(path)
            if tfds_dir is not None:
                sources.append(Source(domain or fs.basename(path), "tfds", tfds_dir))
                continue
            children = [fs.join(path, name) for name in fs.listdir(path)]
            datasets = [
                (p, t) for p in children if fs.isdir(p) and (t := prepared.dataset_dir(p)) is not None
            ]
            if datasets and not domain:
                sources += [Source(fs.basename(p), "tfds", t) for p, t in datasets]
                continue
            files = fs.walk_files(path)
        else:
            files = [p for p in fs.glob(path) if fs.isfile(p)]
        if not files:
            raise ConfigError(
                f"config.inputs: {spec!r}: no TFDS dataset, prepared-data directory or file found"
            )
        sources += [Source(domain or _file_domain(f), _file_kind(f), f) for f in files]
    return sources


def iter_documents(source: Source, split: str) -> Iterator[str]:
    """Streams the documents' text of one source (`split` applies to TFDS only)."""
    if source.kind == "tfds":
        yield from prepared.texts(source.path, split)
    elif source.kind == "jsonl":
        for record in fs.read_jsonl(source.path):
            text = record.get("text")
            if isinstance(text, str):
                yield text
    else:
        yield fs.read_bytes(source.path).decode("utf-8", errors="replace")


def _utf8_prefix(data: bytes, max_bytes: int) -> int:
    """Largest cut <= max_bytes that does not split a UTF-8 character."""
    cut = max_bytes
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut


def cut_sentences(text: str, max_bytes: int) -> Iterator[str]:
    """Cuts a document at line ends into pieces of at most `max_bytes` UTF-8 bytes.

    Lines are kept whole (with their newline) when they fit, so indentation and line
    breaks reach the trainer; a single longer line is cut at character boundaries.
    """
    chunk: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        data = line.encode("utf-8")
        if size + len(data) > max_bytes and chunk:
            yield "".join(chunk)
            chunk, size = [], 0
        while len(data) > max_bytes:
            cut = _utf8_prefix(data, max_bytes)
            yield data[:cut].decode("utf-8")
            data = data[cut:]
        if data:
            chunk.append(data.decode("utf-8"))
            size += len(data)
    if chunk:
        yield "".join(chunk)


def _domain_seed(seed: int, domain: str) -> int:
    """A per-domain seed independent of PYTHONHASHSEED."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{domain}".encode()).digest()[:8], "little")


@dataclasses.dataclass
class DomainSample:
    """What was read from one domain and what was kept."""

    domain: str
    weight: float
    quota: int
    sources: list[str]
    documents_read: int = 0
    documents_skipped: int = 0  # holding a lone surrogate: not UTF-8 text (common/text.py)
    sentences_seen: int = 0
    sentences: list[str] = dataclasses.field(default_factory=list)

    def describe(self) -> dict:
        return {
            "weight": self.weight,
            "quota": self.quota,
            "sources": self.sources,
            "documents_read": self.documents_read,
            "documents_skipped_lone_surrogate": self.documents_skipped,
            "sentences_seen": self.sentences_seen,
            "sentences_kept": len(self.sentences),
            "bytes_kept": sum(len(s.encode("utf-8")) for s in self.sentences),
        }


def reservoir(sample: DomainSample, sentences: Iterator[str], rng: random.Random) -> None:
    """Algorithm R: after n items, each is in the reservoir with probability quota / n."""
    for sentence in sentences:
        n = sample.sentences_seen
        sample.sentences_seen += 1
        if len(sample.sentences) < sample.quota:
            sample.sentences.append(sentence)
        else:
            j = rng.randrange(n + 1)
            if j < sample.quota:
                sample.sentences[j] = sentence


def weights_for(domain_weights: Mapping[str, float], domains: Sequence[str]) -> Mapping[str, float]:
    """The configured weights, or equal ones when no input domain has a configured weight
    (`tokenizer.train --input corpus.jsonl`: the domain is the file's name). An input
    domain without a weight next to weighted ones stays an error (in `quotas`): its share
    would be a guess."""
    return domain_weights if set(domains) & set(domain_weights) else {d: 1.0 for d in domains}


def quotas(domain_weights: Mapping[str, float], domains: Sequence[str], max_sentences: int) -> dict[str, int]:
    """Splits `max_sentences` over the domains present, by their normalised weights."""
    missing = sorted(set(domains) - set(domain_weights))
    if missing:
        raise ConfigError(f"config.sample.domain_weights: no weight for input domain(s) {missing}")
    total = sum(domain_weights[d] for d in domains)
    if total <= 0:
        raise ConfigError(
            f"config.sample.domain_weights: weights of the input domains {sorted(domains)} sum to 0"
        )
    return {d: round(max_sentences * domain_weights[d] / total) for d in domains}


def sample_sentences(
    sources: Sequence[Source],
    domain_weights: Mapping[str, float],
    max_sentences: int,
    max_sentence_bytes: int,
    seed: int,
    split: str = "train",
    max_documents_per_domain: int = 0,
    log: Callable[[str], None] = logging.info,
) -> tuple[list[str], dict]:
    """Returns the training sentences (domains in sorted order) and a JSON description."""
    domains = sorted({s.domain for s in sources})
    domain_weights = weights_for(domain_weights, domains)
    domain_quotas = quotas(domain_weights, domains, max_sentences)
    samples: list[DomainSample] = []
    for domain in domains:
        own = [s for s in sources if s.domain == domain]
        sample = DomainSample(
            domain, float(domain_weights[domain]), domain_quotas[domain], [s.path for s in own]
        )
        rng = random.Random(_domain_seed(seed, domain))
        for source in own:
            for text in iter_documents(source, split):
                if max_documents_per_domain and sample.documents_read >= max_documents_per_domain:
                    break
                sample.documents_read += 1
                if has_lone_surrogate(text):
                    sample.documents_skipped += 1
                    continue
                reservoir(sample, cut_sentences(text, max_sentence_bytes), rng)
        skipped = (
            f", skipped {sample.documents_skipped} holding a lone surrogate"
            if sample.documents_skipped
            else ""
        )
        log(
            f"sample: {domain}: {sample.documents_read} documents{skipped}, {sample.sentences_seen} sentences "
            f"seen, kept {len(sample.sentences)} (quota {sample.quota})"
        )
        samples.append(sample)
    sentences = [s for sample in samples for s in sample.sentences]
    description = {
        "seed": seed,
        "split": split,
        "max_sentences": max_sentences,
        "max_sentence_bytes": max_sentence_bytes,
        "max_documents_per_domain": max_documents_per_domain,
        "sentences": len(sentences),
        "bytes": sum(d.describe()["bytes_kept"] for d in samples),
        "sha256": hashlib.sha256("\0".join(sentences).encode("utf-8")).hexdigest(),
        "domains": {d.domain: d.describe() for d in samples},
    }
    return sentences, description
