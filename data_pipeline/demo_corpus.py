"""The embedded default corpus: real text that the installed packages already carry.

Nothing is downloaded and no third-party text is stored in the repository. The corpus is
rebuilt on the user's machine from:

- web:  the long descriptions (README bodies) of installed Python distributions and the
        reStructuredText/Markdown documents shipped inside them: prose with links,
        lists and headings, the closest thing to web pages a Python install holds;
- math: docstrings of numerical packages (SciPy, SymPy, NumPy) that carry formulas
        (``.. math::`` blocks, ``:math:`` roles, LaTeX commands);
- code: Python standard-library modules, as source files.

A few exact copies are planted on purpose (``dup_fraction``) so that the demo shows
deduplication at work. Output: ``DIR/{web,math,code}.jsonl`` with fields ``id``, ``text``
and ``origin`` (where the text came from).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import ml_collections

from common import cli, fs

_MATH_MARKERS = re.compile(r"\.\. math::|:math:`|\\frac|\\sum|\\int|\\sqrt|\\alpha|\\beta|\\lambda|\\pi")
_MATH_PACKAGES = ("scipy", "sympy", "numpy")
_MAX_DOC_CHARS = 30_000  # longer files would crowd out the rest of a small corpus


def web_documents() -> Iterator[tuple[str, str]]:
    """(origin, text) for package descriptions and bundled .rst/.md documents."""
    dists = sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower())
    for dist in dists:
        name = dist.metadata["Name"] or "unknown"
        description = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if description.strip():
            yield f"pypi:{name}/METADATA", description
        for file in sorted(dist.files or [], key=str):
            if file.suffix in (".rst", ".md") and "LICENSE" not in file.name.upper():
                path = Path(file.locate())
                if path.is_file():
                    yield f"pypi:{name}/{file}", path.read_text(encoding="utf-8", errors="replace")


def math_documents() -> Iterator[tuple[str, str]]:
    """(origin, docstring) for docstrings with formulas in numerical packages."""
    for package in _MATH_PACKAGES:
        try:
            spec_origin = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec_origin is None or not spec_origin.submodule_search_locations:
            continue
        root = Path(next(iter(spec_origin.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            if "tests" in path.parts:
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef, ast.Module)):
                    doc = ast.get_docstring(node, clean=True)
                    if doc and len(_MATH_MARKERS.findall(doc)) >= 2:
                        name = getattr(node, "name", "<module>")
                        yield f"{package}:{path.relative_to(root)}:{name}", doc


def code_documents() -> Iterator[tuple[str, str]]:
    """(origin, source) for the standard library's own modules."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("[a-z]*/*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        yield f"stdlib:{path.relative_to(stdlib)}", path.read_text(encoding="utf-8", errors="replace")


_DOMAINS = {"web": web_documents, "math": math_documents, "code": code_documents}


def build(
    output_dir: fs.PathLike, docs_per_domain: int, max_chars: int, dup_fraction: float, seed: int
) -> dict[str, int]:
    """Writes the three JSONL files; returns documents written per domain.

    Each domain stops at ``docs_per_domain`` documents or ``max_chars`` characters,
    whichever comes first, so the demo stays a few minutes long on 2 cores.
    """
    output_dir = fs.makedirs(output_dir)
    rng = random.Random(seed)
    counts = {}
    for domain, documents in _DOMAINS.items():
        seen, records, chars = set(), [], 0
        for origin, text in documents():
            digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
            if digest in seen or not 200 <= len(text) <= _MAX_DOC_CHARS:
                continue
            seen.add(digest)
            records.append({"id": f"{domain}-{len(records):05d}", "text": text, "origin": origin})
            chars += len(text)
            if len(records) >= docs_per_domain or chars >= max_chars:
                break
        for i, original in enumerate(rng.sample(records, int(len(records) * dup_fraction))):
            records.append(
                {"id": f"{domain}-dup-{i:04d}", "text": original["text"], "origin": original["origin"]}
            )
        fs.write_text(
            fs.join(output_dir, f"{domain}.jsonl"),
            "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records),
        )
        counts[domain] = len(records)
    return counts


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "output": "runs/demo/corpus",  # folder for web.jsonl, math.jsonl and code.jsonl
            "docs_per_domain": 600,  # distinct documents per domain (fewer if the install has fewer)
            "max_chars": 2_000_000,  # characters per domain at most
            "dup_fraction": 0.05,  # fraction of exact copies planted to exercise deduplication
            "seed": 0,  # seed for choosing the planted copies
        }
    )


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    del argv
    output = fs.resolve(config.output)
    counts = build(output, config.docs_per_domain, config.max_chars, config.dup_fraction, config.seed)
    for domain, n in counts.items():
        print(f"demo corpus: {domain:5s} {n:6d} documents -> {fs.join(output, domain + '.jsonl')}")


def run() -> None:
    cli.run(
        main,
        doc=__doc__,
        default_config=default_config,
        shortcuts=[
            cli.Shortcut("output", help="Folder for web.jsonl, math.jsonl and code.jsonl."),
            cli.Shortcut("docs_per_domain", help="Distinct documents per domain."),
            cli.Shortcut("max_chars", help="Characters per domain at most."),
            cli.Shortcut("dup_fraction", help="Fraction of exact copies planted."),
            cli.Shortcut("seed", help="Seed for choosing the planted copies."),
        ],
    )


if __name__ == "__main__":
    run()
