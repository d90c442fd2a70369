"""The benches' study corpus: web, math and code documents from declared files of ../shared/data.

A study's verdict means something only for the text it trained on, and a corpus built from
whatever a venv has installed moves with the venv. The benches (bench/anneal_study.py,
bench/mixture_search_study.py) therefore build theirs from fixed files of the shared data
folder, read in a fixed order:

- web:  Common Crawl pages (dolma-cc; not the file the web probes come from), C4 pages,
        the English pages trafilatura extracted, Wikipedia articles (wikitext-2's test split;
        its validation split is the quality classifier's reference text);
- math: the LaTeX sources of the HoTT book and the Stacks project, cut at sections;
- code: the source files of code/code_sample.jsonl, taken in turn from each repository.

The eval sets are never read (the probes and downstream items come from eval/; the preps
are decontaminated against them besides). Each domain interleaves its sources and stops at
`max_chars` characters. DIR/corpus.json records the SHA-256 of every file read; `verify`
re-hashes them, so a study resumed on a changed shared file is refused naming the file.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Callable, Iterator

from common import checks, fs
from data_pipeline import demo_corpus

MANIFEST = "corpus.json"
MIN_CHARS, MAX_DOC_CHARS = 200, 30_000  # as the demo corpus: long files would crowd out the rest
Reader = Callable[[str], Iterator[tuple[str, str]]]  # file -> (origin, text)


def _text_field(path: str) -> Iterator[tuple[str, str]]:
    for i, row in enumerate(fs.read_jsonl(path)):
        yield f"{fs.basename(path)}:{i}", row["text"]


def _english_trafilatura(path: str) -> Iterator[tuple[str, str]]:
    for row in fs.read_jsonl(path):
        if row.get("html_lang") == "en":
            yield row["id"], row["text"]


def wikitext_articles(path: str) -> list[str]:
    """A wikitext-2 split cut into articles at its ` = Title = ` lines (over 500 characters)."""
    articles, current = [], []
    for line in io.StringIO(fs.read_text(path)):  # lines as a text file gives them
        stripped = line.strip()
        if stripped.startswith("= ") and not stripped.startswith("= =") and current:
            articles.append("".join(current).strip())
            current = []
        current.append(line)
    if current:
        articles.append("".join(current).strip())
    return [a for a in articles if len(a) > 500]


def _wikitext(path: str) -> Iterator[tuple[str, str]]:
    for i, article in enumerate(wikitext_articles(path)):
        yield f"wikitext-2/{fs.basename(path)}:{i}", article


_SECTION = re.compile(r"(?=\\section\*?\{)")


def _latex_sections(path: str) -> Iterator[tuple[str, str]]:
    """A LaTeX file cut before each \\section, pieces over MAX_DOC_CHARS cut again."""
    text = fs.read_text(path)
    for i, section in enumerate(_SECTION.split(text)):
        for j in range(0, len(section), MAX_DOC_CHARS):
            yield f"{fs.basename(path)}:{i}.{j // MAX_DOC_CHARS}", section[j : j + MAX_DOC_CHARS]


def _code_by_repository(path: str) -> Iterator[tuple[str, str]]:
    """The files of code_sample.jsonl, one of each repository in turn (every language, no one repo first)."""
    repos: dict[str, list[dict]] = {}
    for row in fs.read_jsonl(path):
        repos.setdefault(row["repo"], []).append(row)
    for row in _interleave([iter(rows) for rows in repos.values()]):
        yield f"{row['repo']}/{row['path']}", row["text"]


# domain -> [(file or folder under SHARED, reader)], read in this order, interleaved.
SOURCES: dict[str, list[tuple[str, Reader]]] = {
    "web": [
        ("web/dolma-cc/multiple_files__cc_en_head-0091.jsonl.gz", _text_field),
        ("web/dolma-cc/multiple_files__cc_en_head-0174.jsonl.gz", _text_field),
        ("web/dolma-cc/provided__documents__000.json.gz", _text_field),
        ("web/olmo-c4/c4-sample.01.json.gz", _text_field),
        ("web/olmo-c4/c4-sample.02.json.gz", _text_field),
        ("web/olmo-c4/c4-sample.03.json.gz", _text_field),
        ("web/olmo-c4/c4_100_domains_5_www.theguardian.com_00000000.jsonl.gz", _text_field),
        ("web/trafilatura/trafilatura_tests_extracted.jsonl", _english_trafilatura),
        ("web/wikitext-2/test.txt", _wikitext),
    ],
    "math": [("math/hott-book", _latex_sections), ("math/stacks-project", _latex_sections)],
    "code": [("code/code_sample.jsonl", _code_by_repository)],
}


def _interleave(iterators: list[Iterator]) -> Iterator:
    """One item of each iterator in turn until all are spent."""
    sentinel = object()
    for group in itertools.zip_longest(*iterators, fillvalue=sentinel):
        yield from (item for item in group if item is not sentinel)


def source_files(shared: str, source: str) -> list[str]:
    """The files a declared source names (a folder: its .tex files, in name order), under `shared`."""
    path = fs.join(shared, source)
    if fs.isdir(path):
        return [fs.join(path, n) for n in fs.listdir(path) if n.endswith(".tex")]
    checks.require(fs.isfile(path), "shared_data", f"the study corpus needs {path}, which is absent")
    return [path]


def build(shared: str, output_dir: str, max_chars: int = 2_000_000) -> dict[str, int]:
    """Writes DIR/{web,math,code}.jsonl (id, text, origin) and DIR/corpus.json; returns documents per domain."""
    shared = fs.resolve(shared)
    files = {
        domain: [(f, reader) for source, reader in sources for f in source_files(shared, source)]
        for domain, sources in SOURCES.items()
    }
    inputs = {
        f[len(shared.rstrip("/")) + 1 :]: demo_corpus.file_sha256(f)
        for pairs in files.values()
        for f, _ in pairs
    }
    output_dir = fs.makedirs(output_dir)
    counts, written = {}, {}
    for domain, readers in files.items():
        seen, records, chars = set(), [], 0
        for origin, text in _interleave([reader(f) for f, reader in readers]):
            if text in seen or not MIN_CHARS <= len(text) <= MAX_DOC_CHARS:
                continue
            seen.add(text)
            records.append({"id": f"{domain}-{len(records):05d}", "text": text, "origin": origin})
            chars += len(text)
            if chars >= max_chars:
                break
        path = fs.join(output_dir, f"{domain}.jsonl")
        fs.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        counts[domain], written[f"{domain}.jsonl"] = len(records), demo_corpus.file_sha256(path)
    manifest = {
        "sha256": demo_corpus.corpus_sha256(written),
        "files": written,
        "documents": counts,
        "shared_data": shared,
        "inputs": inputs,
        "settings": {"max_chars": max_chars, "sources": {d: [s for s, _ in v] for d, v in SOURCES.items()}},
    }
    fs.write_text(fs.join(output_dir, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return counts


def declared_source(name: str) -> str:
    """The entry of SOURCES a shared file (relative name) belongs to."""
    return next(
        s for sources in SOURCES.values() for s, _ in sources if name == s or name.startswith(s + "/")
    )


def verify(corpus_dir: str) -> dict[str, str]:
    """{"source/<declared source>": sha256 of its files} for the shared files a corpus was
    built from, re-hashed now; one line naming the first file that is gone or hashes
    otherwise than at the build. A corpus without recorded inputs (the demo corpus) gives {}."""
    path = fs.join(corpus_dir, MANIFEST)
    manifest = json.loads(fs.read_text(path)) if fs.exists(path) else {}
    by_source: dict[str, dict[str, str]] = {}
    for name, recorded in sorted(manifest.get("inputs", {}).items()):
        file = fs.join(manifest["shared_data"], name)
        now = demo_corpus.file_sha256(file) if fs.isfile(file) else "absent"
        checks.require(
            now == recorded,
            "corpus_dir",
            f"{corpus_dir} was built from {file} (sha256 {recorded[:12]}), which now is {now[:12]}: "
            "rebuild the corpus in a new work dir",
        )
        by_source.setdefault(declared_source(name), {})[name] = now
    return {f"source/{s}": demo_corpus.corpus_sha256(files) for s, files in by_source.items()}
