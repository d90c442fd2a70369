"""A multiple-choice set for the CPU demo, made from what the Python install carries.

    python -m evals.demo_set --output DIR [--count 200] [--seed 0]

`make demo` downloads nothing, so it has no benchmark files; this builds a small one the
way a user adds a task, as a JSON-lines file with a task config beside it
(evals.tasks.user_task): DIR/docstrings.jsonl and DIR/docstrings_task.json. Each item
names a public function of optax or flax (packages whose source the demo corpus does not
read: its code domain is the standard library), "What does `optax.adam(...)` do?", and its
four choices are the first sentence of that function's docstring and of three others
(seeded), so chance is 1/4. The sources are parsed, not imported.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import ml_collections

from common import checks, cli, fs

PACKAGES = ("optax", "flax")
ITEMS, TASK = "docstrings.jsonl", "docstrings_task.json"
CHOICES = 4
_SENTENCE = re.compile(r"^(.{12,160}?[.!?])(\s|$)", re.S)


def functions(package: str) -> Iterator[tuple[str, str]]:
    """(qualified call, first docstring sentence) of the package's public top-level functions."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return
    root = Path(next(iter(spec.submodule_search_locations)))
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if any(p.startswith("_") or "test" in p for p in parts):
            continue
        for node in ast.parse(path.read_text(encoding="utf-8", errors="replace")).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                found = _SENTENCE.match(" ".join((ast.get_docstring(node) or "").split()))
                if found:
                    args = ", ".join(a.arg for a in node.args.args)
                    yield f"{'.'.join(parts)}.{node.name}({args})", found.group(1)


def build(count: int, seed: int) -> list[dict]:
    """`count` items (fewer if the packages hold fewer distinct summaries), seeded."""
    seen, pool = set(), []
    for package in PACKAGES:
        for call, summary in functions(package):
            if summary not in seen:
                seen.add(summary)
                pool.append((call, summary))
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(count, len(pool)))
    items = []
    for call, summary in chosen:
        others = rng.sample([s for _, s in pool if s != summary], CHOICES - 1)
        gold = rng.randrange(CHOICES)
        choices = others[:gold] + [summary] + others[gold:]
        items.append(
            {"question": f"What does the Python function `{call}` do?", "choices": choices, "gold": gold}
        )
    return items


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"output": "runs/demo/evals", "count": 200, "seed": 0})


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    checks.require(not argv, "output", "unexpected positional arguments", argv)
    checks.positive(config.count, "count")
    output = fs.makedirs(fs.resolve(config.output))
    items = build(config.count, config.seed)
    checks.require(
        len(items) >= 20, "items", f"the install's {PACKAGES} hold too few documented functions", len(items)
    )
    fs.write_text(fs.join(output, ITEMS), "".join(json.dumps(item) + "\n" for item in items))
    task = {"name": "docstrings", "path": ITEMS, "question": "question", "choices": "choices", "gold": "gold"}
    fs.write_text(fs.join(output, TASK), json.dumps(task, indent=2) + "\n")
    print(
        f"demo eval set: {len(items)} items -> {fs.join(output, ITEMS)} (task config {fs.join(output, TASK)})"
    )


def run() -> None:
    cli.run(
        main,
        doc=__doc__,
        default_config=default_config,
        shortcuts=[
            cli.Shortcut("output", help="folder for docstrings.jsonl and docstrings_task.json"),
            cli.Shortcut("count", help="items to write"),
            cli.Shortcut("seed", help="seed for the items and their distractors"),
        ],
    )


if __name__ == "__main__":
    run()
