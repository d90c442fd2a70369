"""The embedded default corpus: real text from a fixed, declared list of pinned packages.

Nothing is downloaded and no third-party text is stored in the repository. The corpus is
rebuilt on the user's machine from distributions that the runtime dependencies install at
the versions constraints.txt pins, each read by name (never by listing what is installed),
so a venv with the runtime dependencies only and one with every extra build the same bytes:

- web:  the long descriptions (README bodies) of `web_distributions` and the
        reStructuredText/Markdown documents shipped inside them: prose with links,
        lists and headings, the closest thing to web pages a Python install holds;
- math: docstrings of `math_distributions` (NumPy, SciPy) that carry formulas
        (``.. math::`` blocks, ``:math:`` roles, LaTeX commands);
- code: the Python modules of `code_distributions` (pure-Python packages, so the same
        files on every platform and Python version).

A declared distribution that is missing, or installed at another version than pinned,
stops the build with one line naming it. A few exact copies are planted on purpose
(``dup_fraction``) so that the demo shows deduplication at work. Output:
``DIR/{web,math,code}.jsonl`` with fields ``id``, ``text`` and ``origin`` (where the text
came from), and ``DIR/corpus.json``: each file's SHA-256, the corpus's, and the
distributions and versions it was built from.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import ml_collections

from common import checks, cli, fs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = "corpus.json"
_MATH_MARKERS = re.compile(r"\.\. math::|:math:`|\\frac|\\sum|\\int|\\sqrt|\\alpha|\\beta|\\lambda|\\pi")
_MAX_DOC_CHARS = 30_000  # longer files would crowd out the rest of a small corpus
_TEST_PARTS = {"test", "tests", "testing"}

# Runtime dependencies (or theirs), pure text in their wheels' metadata: the same on every platform.
WEB_DISTRIBUTIONS = (
    "absl-py", "apache-beam", "attrs", "beartype", "cloudpickle", "etils", "fasteners", "fire",
    "flax", "grain", "humanize", "idna", "jax", "joblib", "jsonpickle", "keras",
    "lingua-language-detector", "markdown", "markdown-it-py", "matplotlib", "ml-collections",
    "ml-dtypes", "msgpack", "narwhals", "numpy", "objsize", "opt-einsum", "optax", "optree",
    "orbax-checkpoint", "psutil", "pyparsing", "python-dateutil", "pytz", "requests", "rich",
    "scikit-learn", "sentencepiece", "simple-parsing", "sortedcontainers", "tensorflow-datasets",
    "termcolor", "threadpoolctl", "toml", "urllib3", "wrapt",
)  # fmt: skip
MATH_DISTRIBUTIONS = ("numpy", "scipy")
CODE_DISTRIBUTIONS = (
    "absl-py", "ml-collections", "requests", "attrs", "humanize", "fire", "toml",
    "sortedcontainers", "pyparsing", "python-dateutil", "packaging", "seqio", "markdown-it-py",
    "etils", "optax", "flax", "rich",
)  # fmt: skip


def normalize(name: str) -> str:
    """PEP 503 name: `ML_Collections` and `ml-collections` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(constraints: str) -> dict[str, str]:
    """{normalized name: version} of the `name==version` lines of a constraints file."""
    checks.require(
        fs.exists(constraints), "constraints", "no such file (the pins of the corpus)", constraints
    )
    pins = {}
    for line in fs.read_text(constraints).splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name.split("[")[0])] = version.strip()
    return pins


def pinned_distribution(name: str, pins: dict[str, str], field: str) -> importlib.metadata.Distribution:
    """The installed distribution `name`, which must be at the version `pins` names."""
    checks.require(normalize(name) in pins, field, f"{name} is not pinned in constraints.txt")
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise checks.ConfigError(
            f"config.{field}: {name}=={pins[normalize(name)]} is not installed "
            "(pip install -c constraints.txt -e .)"
        ) from None
    checks.require(
        dist.version == pins[normalize(name)],
        field,
        f"{name} is installed at {dist.version}, constraints.txt pins {pins[normalize(name)]} "
        "(pip install -c constraints.txt -e .)",
    )
    return dist


def _files(dist: importlib.metadata.Distribution, suffixes: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """(relative path, file) of a distribution's installed files with these suffixes, in name order."""
    for file in sorted(dist.files or [], key=str):
        if file.suffix in suffixes:
            path = Path(file.locate())
            if path.is_file():
                yield str(file), path


def web_documents(dists: Sequence[importlib.metadata.Distribution]) -> Iterator[tuple[str, str]]:
    """(origin, text) for package descriptions and bundled .rst/.md documents."""
    for dist in dists:
        name = dist.metadata["Name"]
        description = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if description.strip():
            yield f"pypi:{name}/METADATA", description
        for file, path in _files(dist, (".rst", ".md")):
            if "LICENSE" not in path.name.upper():
                yield f"pypi:{name}/{file}", path.read_text(encoding="utf-8", errors="replace")


def math_documents(dists: Sequence[importlib.metadata.Distribution]) -> Iterator[tuple[str, str]]:
    """(origin, docstring) for docstrings with formulas in numerical packages."""
    for dist in dists:
        for file, path in _files(dist, (".py",)):
            if _TEST_PARTS & set(Path(file).parts):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef, ast.Module)):
                    doc = ast.get_docstring(node, clean=True)
                    if doc and len(_MATH_MARKERS.findall(doc)) >= 2:
                        yield f"{dist.metadata['Name']}:{file}:{getattr(node, 'name', '<module>')}", doc


def code_documents(dists: Sequence[importlib.metadata.Distribution]) -> Iterator[tuple[str, str]]:
    """(origin, source) for the Python modules of pure-Python packages (tests left out)."""
    for dist in dists:
        for file, path in _files(dist, (".py",)):
            if not _TEST_PARTS & set(Path(file).parts) and not path.name.endswith("_test.py"):
                yield f"{dist.metadata['Name']}:{file}", path.read_text(encoding="utf-8", errors="replace")


_DOMAINS: dict[str, Callable[..., Iterator[tuple[str, str]]]] = {
    "web": web_documents,
    "math": math_documents,
    "code": code_documents,
}
DISTRIBUTIONS = {"web": WEB_DISTRIBUTIONS, "math": MATH_DISTRIBUTIONS, "code": CODE_DISTRIBUTIONS}


def file_sha256(path: fs.PathLike) -> str:
    return hashlib.sha256(fs.read_bytes(path)).hexdigest()


def corpus_sha256(files: dict[str, str]) -> str:
    """One digest of the corpus: SHA-256 of `sha256sum`-style lines, files in name order."""
    return hashlib.sha256("".join(f"{files[n]}  {n}\n" for n in sorted(files)).encode()).hexdigest()


def build(
    output_dir: fs.PathLike,
    docs_per_domain: int,
    max_chars: int,
    dup_fraction: float,
    seed: int,
    distributions: dict[str, Sequence[str]] | None = None,
    constraints: str = os.path.join(ROOT, "constraints.txt"),
) -> dict[str, int]:
    """Writes the three JSONL files and corpus.json; returns documents written per domain.

    Each domain stops at ``docs_per_domain`` documents or ``max_chars`` characters,
    whichever comes first, so the demo stays a few minutes long on 2 cores. Every declared
    distribution is checked against its pin before anything is written.
    """
    distributions = distributions or DISTRIBUTIONS
    pins = pinned_versions(constraints)
    dists = {
        domain: [pinned_distribution(n, pins, f"{domain}_distributions") for n in names]
        for domain, names in distributions.items()
    }
    output_dir = fs.makedirs(output_dir)
    rng = random.Random(seed)
    counts, files = {}, {}
    for domain, documents in _DOMAINS.items():
        seen, records, chars = set(), [], 0
        for origin, text in documents(dists[domain]):
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
        path = fs.join(output_dir, f"{domain}.jsonl")
        fs.write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
        counts[domain], files[f"{domain}.jsonl"] = len(records), file_sha256(path)
    manifest = {
        "sha256": corpus_sha256(files),
        "files": files,
        "documents": counts,
        "distributions": {d.metadata["Name"]: d.version for ds in dists.values() for d in ds},
        "settings": {
            "docs_per_domain": docs_per_domain,
            "max_chars": max_chars,
            "dup_fraction": dup_fraction,
            "seed": seed,
            "sources": {domain: list(names) for domain, names in distributions.items()},
        },
    }
    fs.write_text(fs.join(output_dir, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return counts


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "output": "runs/demo/corpus",  # folder for web.jsonl, math.jsonl and code.jsonl
            "docs_per_domain": 600,  # distinct documents per domain (fewer if the sources hold fewer)
            "max_chars": 2_000_000,  # characters per domain at most
            "dup_fraction": 0.05,  # fraction of exact copies planted to exercise deduplication
            "seed": 0,  # seed for choosing the planted copies
            # The declared sources, read in this order; each must be installed at its pin.
            "web_distributions": WEB_DISTRIBUTIONS,
            "math_distributions": MATH_DISTRIBUTIONS,
            "code_distributions": CODE_DISTRIBUTIONS,
            "constraints": os.path.join(ROOT, "constraints.txt"),  # the pins (name==version lines)
        }
    )


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    del argv
    output = fs.resolve(config.output)
    counts = build(
        output,
        config.docs_per_domain,
        config.max_chars,
        config.dup_fraction,
        config.seed,
        distributions={d: list(config[f"{d}_distributions"]) for d in _DOMAINS},
        constraints=fs.resolve(config.constraints),
    )
    for domain, n in counts.items():
        print(f"demo corpus: {domain:5s} {n:6d} documents -> {fs.join(output, domain + '.jsonl')}")
    manifest = json.loads(fs.read_text(fs.join(output, MANIFEST)))
    print(f"demo corpus: sha256 {manifest['sha256']} -> {fs.join(output, MANIFEST)}")


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
