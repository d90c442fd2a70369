"""Held-out quality benchmark for near-dedup and decontamination on real pages.

Built differently from the stage benchmarks (near_dedup_quality.py, decontamination_quality.py)
so that a fix tuned on those cannot pass here by construction:

- Hosts are real web pages from ../shared/data that pass the **default web filters** of
  configs/data/base.py (English, Gopher, C4, FineWeb), i.e. pages the job would keep.
- Near-dup twins of pages with >= 300 words: 0.4-2% of the words substituted, inserted and
  deleted, kept when the word 5-gram Jaccard (reference shingling: lower-cased
  whitespace-split words, independent of the job's own) lies in [0.85, 0.97].
- Decontamination: eval items pasted at a line boundary verbatim and edited (case changed,
  whitespace runs redrawn, punctuation removed or spaced out, numbers with separators
  rewritten: ``1,000`` -> ``1000`` / ``1 , 000``, ``1000`` -> ``1,000``); for GSM8K and MATH
  the question alone is pasted too (a short math question).
- False positives: the untouched filtered pages, decontaminated against every eval set.

Two variants, reported separately:
- ``tuned`` (seed 0): word-level edit generator; GSM8K test, MATH test, MBPP, MMLU test,
  ARC test, HumanEval. The code was fixed while looking at this variant.
- ``heldout`` (seed 1): a different edit generator (edits in runs of 1-3 words, character
  typos as substitutions, word swaps), a different perturbation of eval items (per-sentence
  case, punctuation spaced out rather than dropped), and different eval sets: GSM8K train,
  MATH-500, BBH, OpenBookQA test, MMLU dev, ARC dev. Never looked at while fixing.

    TF_CPP_MIN_LOG_LEVEL=2 python bench/heldout_data_quality.py --variant=tuned
    TF_CPP_MIN_LOG_LEVEL=2 python bench/heldout_data_quality.py --variant=heldout
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from common import fs
from configs.data import base
from data_pipeline.clean.normalize import normalize_record
from data_pipeline.decontamination import decontaminate, eval_sets, matching
from data_pipeline.dedup import near
from data_pipeline.filters.chain import build_chain, run_chain

# ../shared/data next to the checkout; SHARED_DATA overrides (a worktree lives elsewhere).
DATA = os.environ.get("SHARED_DATA") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
)
WEB_FILES = ("web/dolma-cc/*.json*.gz", "web/olmo-c4/*.json*.gz", "web/trafilatura/*.jsonl")

EVAL_SETS = {
    "tuned": {
        "gsm8k": "eval/gsm8k/test.jsonl",
        "math": "eval/math/math_test.jsonl",
        "mbpp": "eval/mbpp/mbpp.jsonl",
        "mmlu": "eval/mmlu/test",
        "arc": "eval/arc/*/*-Test.jsonl",
        "humaneval": "eval/humaneval/HumanEval.jsonl.gz",
    },
    "heldout": {
        "gsm8k_train": "eval/gsm8k/train.jsonl",
        "math500": "eval/math/math500_test.jsonl",
        "bbh": "eval/bbh/data",
        "openbookqa": "eval/openbookqa/test.tsv",
        "mmlu_dev": "eval/mmlu/dev",
        "arc_dev": "eval/arc/*/*-Dev.jsonl",
    },
}
SEEDS = {"tuned": 0, "heldout": 1}
QUESTION_ONLY = {"gsm8k", "math", "gsm8k_train", "math500"}  # short math questions pasted alone too
ALL_EVAL = {**EVAL_SETS["tuned"], **EVAL_SETS["heldout"]}


# ---------------------------------------------------------------- reference similarity


def ref_shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def ref_jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


# ---------------------------------------------------------------- hosts


def filtered_pages() -> list[dict]:
    """Real web pages that the default web filter chain keeps (normalised as the job does)."""

    config = base.get_config()
    chain = build_chain("web", config.filters)
    pages, seen = [], set()
    for doc_id, text in web_texts():
        if not text or text in seen:
            continue
        seen.add(text)
        record = normalize_record(
            {"id": doc_id, "text": text, "source": "web", "domain": "web", "language": ""}
        )
        record, reason = run_chain(chain, record)
        if reason is None:
            pages.append(record)
    return pages


def web_texts():
    """(FILE:LINE, text) of every record of the web samples (WEB_FILES)."""
    import glob

    for pattern in WEB_FILES:
        for path in sorted(glob.glob(os.path.join(DATA, pattern))):
            for i, row in enumerate(fs.read_jsonl(path)):
                yield f"{os.path.basename(path)}:{i}", row.get("text", "")


# ---------------------------------------------------------------- clean documents (false positives)

PROSE_FILES = ("prose/gutenberg-nltk/*.txt", "prose/us-speeches/*/*.txt", "prose/tinyshakespeare/*.txt")
CODE_FILE = "code/code_sample.jsonl"  # clean code: 1,519 files of 10 repositories
TEX_FILES = "math/*/*.tex"  # clean math: two LaTeX books
WIKITEXT_FILES = ("web/wikitext-2/test.txt", "web/wikitext-2/valid.txt")
CHUNK_CHARS = 3000  # prose is cut into pages of about this size (~500 words), at paragraph breaks


def _chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    out, current = [], ""
    for paragraph in re.split(r"\n\s*\n", text):
        current = f"{current}\n\n{paragraph}" if current else paragraph
        if len(current) >= size:
            out.append(current.strip())
            current = ""
    if len(current.strip()) >= size // 4:
        out.append(current.strip())
    return out


def _wikitext_articles(path: str) -> list[str]:
    """Articles of a wikitext-2 split: a `` = Title = `` line starts each one."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [a.strip() for a in re.split(r"\n(?= = [^=].* = \n)", text) if len(a.split()) >= 50]


def clean_documents(pages: list[dict]) -> list[dict]:
    """Real documents that hold no planted eval item, filtered or not.

    English (`domain` web): the filtered web pages, then every other English page of the web
    samples (filters not applied), wikitext-2 articles, and Gutenberg books, US presidential
    speeches and Shakespeare cut into pages of about CHUNK_CHARS characters; English is the
    job's own language filter (lingua). Then, counted apart, real code files and LaTeX
    sources (`domain` code / math), where eval sets like HumanEval, MBPP and MATH are most
    likely to collide with ordinary text.
    """
    import glob

    from data_pipeline.filters.language import Language

    language = Language()
    language.check()
    docs, seen = [], set()

    def add(source: str, doc_id: str, text: str, domain: str = "web") -> None:
        if text in seen or len(text.split()) < 50:
            return
        seen.add(text)
        record = {"id": f"clean|{source}|{doc_id}", "text": text, "source": source, "domain": domain}
        if domain != "web" or source == "filtered_web" or language.reject(dict(record)) is None:
            docs.append(record)

    filtered = {page["id"] for page in pages}
    for page in pages:
        add("filtered_web", page["id"], page["text"])
    for doc_id, text in web_texts():
        if doc_id not in filtered:  # its filtered text is in
            record = normalize_record({"id": "", "text": text, "source": "web", "domain": "web"})
            add("other_web", doc_id, record["text"])
    for path in WIKITEXT_FILES:
        for i, article in enumerate(_wikitext_articles(os.path.join(DATA, path))):
            add("wikitext", f"{os.path.basename(path)}:{i}", article)
    for pattern in PROSE_FILES:
        source = pattern.split("/")[1]
        for path in sorted(glob.glob(os.path.join(DATA, pattern))):
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            for i, chunk in enumerate(_chunks(text)):
                add(source, f"{os.path.relpath(path, DATA)}:{i}", chunk)  # us-speeches: two folders
    with open(os.path.join(DATA, CODE_FILE), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            add("code", f"{row['repo']}/{row['path']}", row["text"], domain="code")
    for path in sorted(glob.glob(os.path.join(DATA, TEX_FILES))):
        with open(path, encoding="utf-8", errors="replace") as f:
            add("math_tex", os.path.relpath(path, DATA), f.read(), domain="math")
    return docs


# ---------------------------------------------------------------- near-dup twins


def _word_edits(words: list[str], rng: random.Random, fraction: float, pool: list[str]) -> list[str]:
    """tuned: single-word substitutions, insertions and deletions at random places."""
    words = list(words)
    for _ in range(max(1, round(fraction * len(words)))):
        op, pos = rng.choice("sid"), rng.randrange(len(words))
        if op == "s":
            words[pos] = rng.choice(pool)
        elif op == "i":
            words.insert(pos, rng.choice(pool))
        elif len(words) > 1:
            del words[pos]
    return words


def _run_edits(words: list[str], rng: random.Random, fraction: float, pool: list[str]) -> list[str]:
    """heldout: runs of 1-3 words inserted or deleted, character typos, adjacent word swaps."""
    words = list(words)
    budget = max(1, round(fraction * len(words)))
    while budget > 0:
        op, pos = rng.choice(("ins_run", "del_run", "typo", "swap")), rng.randrange(len(words) - 3)
        k = min(budget, rng.randint(1, 3))
        if op == "ins_run":
            words[pos:pos] = [rng.choice(pool) for _ in range(k)]
        elif op == "del_run":
            del words[pos : pos + k]
        elif op == "typo":
            w = words[pos]
            if len(w) > 2:
                c = rng.randrange(len(w))
                words[pos] = w[:c] + rng.choice("aeiourstn") + w[c + 1 :]
            k = 1
        else:
            words[pos], words[pos + 1] = words[pos + 1], words[pos]
            k = 2
        budget -= k
    return words


def make_twins(pages: list[dict], rng: random.Random, variant: str) -> list[tuple[dict, dict, float]]:
    edit = _word_edits if variant == "tuned" else _run_edits
    pool = [w for p in pages[:50] for w in p["text"].split()[:200]]
    twins = []
    for page in pages:
        words = page["text"].split(" ")
        if len(page["text"].split()) < 300:
            continue
        original = ref_shingles(page["text"])
        for _ in range(20):  # redraw until the similarity lands in range
            text = " ".join(edit(words, rng, rng.uniform(0.004, 0.02), pool))
            sim = ref_jaccard(original, ref_shingles(text))
            if 0.85 <= sim <= 0.97:
                twins.append((page, {**page, "id": f"twin:{page['id']}", "text": text}, sim))
                break
    return twins


# ---------------------------------------------------------------- decontamination pastes

_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+|\d{4,}")


def _renumber(text: str, rng: random.Random) -> str:
    def sub(m: re.Match) -> str:
        digits = m.group().replace(",", "")
        if "," in m.group():
            return digits if rng.random() < 0.5 else m.group().replace(",", " , ")
        return f"{int(digits):,}" if len(digits) <= 12 else digits

    return _NUMBER.sub(sub, text)


def perturb_tuned(text: str, rng: random.Random) -> str:
    """Per-word case change, punctuation dropped, whitespace redrawn, numbers rewritten."""
    text = _renumber(text, rng)
    out = []
    for token in text.split():
        token = rng.choice([str.lower, str.upper, str.title, str])(token)
        if rng.random() < 0.5:
            token = "".join(c for c in token if c.isalnum() or c not in ",.;:!?\"'()") or token
        out.append(token)
    return "".join(t + rng.choice([" ", "  ", "\n", "\t", " \n "]) for t in out)


def perturb_heldout(text: str, rng: random.Random) -> str:
    """Per-sentence case, punctuation spaced out, tabs and blank lines, numbers rewritten."""
    text = _renumber(text, rng)
    sentences = re.split(r"(?<=[.?!])\s+", text)
    sentences = [rng.choice([str.upper, str.lower, str.swapcase, str])(s) for s in sentences]
    text = " ".join(sentences)
    text = re.sub(r"([,.;:!?()])", lambda m: f" {m.group()} " if rng.random() < 0.6 else "", text)
    return re.sub(r"\s+", lambda m: rng.choice([" ", "   ", "\t", "\n\n", " \n"]), text)


def paste(host: str, item: str, rng: random.Random) -> str:
    cuts = [i + 1 for i, c in enumerate(host) if c == "\n"] or [len(host)]
    at = rng.choice(cuts)
    return f"{host[:at]}\n{item}\n{host[at:]}"


def question_of(row: dict) -> str | None:
    for field in ("question", "problem"):
        if isinstance(row.get(field), str):
            return row[field]
    return None


def eval_rows(name: str, path: str) -> list[tuple[str, str, str | None]]:
    """(item id, full item text, question alone) of every row, as the job indexes them."""
    config = matching.default_config()
    out = []
    for index, (file, row) in enumerate(eval_sets.named_rows(name, os.path.join(DATA, path))):
        text = eval_sets.item_text(row, config.text_fields)
        if text:
            out.append((eval_sets.item_id(row, config.id_fields, f"{file}:{index}"), text, question_of(row)))
    return out


# ---------------------------------------------------------------- running the stages


def _run(docs: list[dict], transform: beam.PTransform, tag: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        options = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
        with beam.Pipeline(options=options) as p:
            outputs = p | beam.Create(docs, reshuffle=False) | transform
            _ = outputs[tag] | beam.Map(json.dumps) | beam.io.WriteToText(os.path.join(tmp, "out"))
        rows = []
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name)) as f:
                rows += [json.loads(line) for line in f if line.strip()]
        return rows


def bench_near_dedup(pages: list[dict], rng: random.Random, variant: str) -> dict:
    twins = make_twins(pages, rng, variant)
    docs = pages + [t for _, t, _ in twins]
    start = time.time()
    rejected = {r["id"] for r in _run(docs, near.NearDedup(base.get_config().near_dedup), 1)}
    seconds = time.time() - start
    caught = [p["id"] in rejected or t["id"] in rejected for p, t, _ in twins]
    misses = [(p["id"], round(s, 3)) for (p, _, s), ok in zip(twins, caught) if not ok]
    planted = {t["id"] for _, t, _ in twins} | {p["id"] for p, _, _ in twins}
    # A rejection is correct when the document has a planted twin, or a real near-duplicate
    # already in the sample (reference Jaccard >= 0.8 with some other document).
    shingles = {d["id"]: ref_shingles(d["text"]) for d in docs}
    wrong = [
        d
        for d in rejected - planted
        if not any(ref_jaccard(shingles[d], shingles[o]) >= 0.8 for o in shingles if o != d)
    ]
    return {
        "docs": len(docs),
        "pairs": len(twins),
        "recall": sum(caught) / max(1, len(twins)),
        "rejected": len(rejected),
        "precision": 1 - len(wrong) / max(1, len(rejected)),
        "misses": misses[:10],
        "wrong": wrong[:10],
        "seconds": round(seconds, 1),
    }


def bench_decontamination(pages: list[dict], rng: random.Random, variant: str, per_set: int) -> dict:
    perturb = perturb_tuned if variant == "tuned" else perturb_heldout
    config = matching.default_config()
    specs = {name: os.path.join(DATA, path) for name, path in ALL_EVAL.items()}
    docs, expected = [], {}
    for name, path in EVAL_SETS[variant].items():
        rows = eval_rows(name, path)
        for k, (item_id, text, question) in enumerate(rng.sample(rows, min(per_set, len(rows)))):
            pastes = {"verbatim": text, "edited": perturb(text, rng)}
            if name in QUESTION_ONLY and question:
                pastes["question"] = perturb(question, rng)
            for kind, item in pastes.items():
                if kind == "question" and len(matching.normalized_chars(question)[0]) < config.min_chars:
                    kind = "question_short"  # fewer letters+digits than config.min_chars: never matched by design
                doc_id = f"{kind}|{name}|{k}"
                docs.append(
                    {**rng.choice(pages), "id": doc_id, "text": paste(rng.choice(pages)["text"], item, rng)}
                )
                expected[doc_id] = (name, item_id)
    clean = clean_documents(pages)
    docs += clean
    start = time.time()
    hits = _run(docs, decontaminate.Decontaminate(config, specs), 2)
    seconds = time.time() - start
    found, matched = defaultdict(set), defaultdict(set)
    for h in hits:
        found[h["id"]].add(h["eval_set"])
        matched[h["id"]].add((h["eval_set"], h["eval_item_id"]))
    per = Counter()
    missed = []
    for doc_id, (name, _) in expected.items():
        kind = doc_id.split("|")[0]
        ok = name in found[doc_id]
        per[kind, name, ok] += 1
        if not ok and (len(missed) < 8 or not doc_id.startswith("question_short")):
            missed.append(doc_id)
    recall = {
        f"{kind}/{name}": round(per[kind, name, True] / (per[kind, name, True] + per[kind, name, False]), 4)
        for kind, name, _ in sorted(per)
    }
    flagged = [d["id"] for d in clean if found[d["id"]]]
    by_id = {d["id"]: d["text"] for d in clean}
    sources = Counter(d["source"] for d in clean)
    english = [d for d in clean if d["domain"] == "web"]
    flagged_english = [d["id"] for d in english if found[d["id"]]]
    return {
        "docs": len(docs),
        "pasted": len(expected),
        "recall": recall,
        "clean_docs": len(clean),
        "clean_english_docs": len(english),
        "clean_by_source": dict(sources),
        "false_positives": len(flagged),
        "flagged_english": len(flagged_english),
        "flagged_english_rate": len(flagged_english) / len(english),
        "flagged_code_math": len(flagged) - len(flagged_english),
        "false_positives_by_source": dict(Counter(d.split("|")[1] for d in flagged)),
        "flagged_clean": {d: shared_text(by_id[d], matched[d], specs) for d in flagged},
        "missed": missed,
        "seconds": round(seconds, 1),
    }


def shared_text(text: str, items: set[tuple[str, str]], specs: dict[str, str]) -> list[str]:
    """For a flagged clean document: each matched item and the longest stretch it shares with
    the document (letters and digits compared, the document's own text shown), to judge by eye
    whether it is a genuine overlap (a quotation the eval item contains) or a false match."""
    import difflib

    index = matching.load_index(matching.default_config(), specs)  # the run's, cached
    by_key = {(item.eval_set, item.item_id): item for item in index.items}
    codes, offsets = matching.normalized_chars(text)
    doc = "".join(map(chr, codes.tolist()))
    out = []
    for key in sorted(items):
        item = "".join(map(chr, matching.normalized_chars(by_key[key].text)[0].tolist()))
        m = difflib.SequenceMatcher(None, doc, item, autojunk=False).find_longest_match(
            0, len(doc), 0, len(item)
        )
        span = text[offsets[m.a] : offsets[m.a + m.size - 1] + 1] if m.size else ""
        out.append(f"{key[0]}:{key[1]} shares {m.size} letters+digits: {' '.join(span.split())!r}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", choices=sorted(EVAL_SETS), default="tuned")
    parser.add_argument("--items_per_set", type=int, default=200)
    parser.add_argument("--only", choices=("near_dedup", "decontamination"), default=None)
    args = parser.parse_args()
    if not os.path.isdir(DATA):
        print(f"skipped: {DATA} is absent (real sample data is needed for this measurement)")
        return
    start = time.time()
    pages = filtered_pages()
    print(f"{len(pages)} pages pass the default web filters ({time.time() - start:.0f}s)", flush=True)
    results = {"variant": args.variant, "seed": SEEDS[args.variant], "clean_pages": len(pages)}
    if args.only in (None, "near_dedup"):
        results["near_dedup"] = bench_near_dedup(pages, random.Random(SEEDS[args.variant]), args.variant)
        print(json.dumps(results["near_dedup"]), flush=True)
    if args.only in (None, "decontamination"):
        results["decontamination"] = bench_decontamination(
            pages, random.Random(SEEDS[args.variant] + 100), args.variant, args.items_per_set
        )
        print(json.dumps(results["decontamination"]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
