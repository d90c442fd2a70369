"""Small synthetic corpora for the data-pipeline tests: good documents that pass the default
filters, plus every kind of bad input the job must account for."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

_DETERMINERS = "the|a|every|one|this|that|our|their|some|each".split("|")
_ADJECTIVES = (
    "quiet old new small bright narrow careful patient local northern ancient busy gentle "
    "broad wooden famous hidden modest curious steady rural coastal annual public private "
    "distant simple honest rapid"
).split()
_NOUNS = (
    "council team neighbour library student bridge farmer river museum engineer school train "
    "garden harbour village painter teacher market orchard festival lighthouse workshop valley "
    "bakery chapel tower meadow station journal archive ferry forest doctor"
).split()
_VERBS = (
    "opened repaired described visited studied announced measured painted planned discussed "
    "counted protected welcomed explored restored photographed mapped organised praised "
    "supported questioned finished"
).split()
_PREPOSITIONS = "before|after|during|near|behind|beyond|across|under|beside|around|without|despite".split("|")


def sentence(rng: random.Random) -> str:
    c = rng.choice
    return (
        f"{c(_DETERMINERS).capitalize()} {c(_ADJECTIVES)} {c(_NOUNS)} {c(_VERBS)} {c(_DETERMINERS)} "
        f"{c(_ADJECTIVES)} {c(_NOUNS)} {c(_PREPOSITIONS)} the {c(_NOUNS)}."
    )


def prose(seed: int, sentences: int = 24) -> str:
    """English prose that passes Gopher, C4 and FineWeb rules (varied, punctuated paragraphs)."""
    rng = random.Random(seed)
    paragraphs = [" ".join(sentence(rng) for _ in range(4)) for _ in range(sentences // 4)]
    return "\n\n".join(paragraphs)


def math_text(seed: int) -> str:
    rng = random.Random(seed)
    a, b = rng.randint(2, 50), rng.randint(2, 50)
    return (
        f"Problem {seed}. Solve $x^2 - {a + b}x + {a * b} = 0$ and compute $\\frac{{{a}}}{{{b}}} + \\sqrt{{{a * a}}}$.\n\n"
        f"Solution. We have $x^2 - {a + b}x + {a * b} = (x - {a})(x - {b})$, hence $x = {a}$ or $x = {b}$. "
        f"Moreover $\\sqrt{{{a * a}}} = {a}$, therefore the sum equals $\\frac{{{a}}}{{{b}}} + {a}$. "
        f"By \\begin{{equation}} \\sum_{{k=1}}^{{{a}}} k = \\frac{{{a}({a}+1)}}{{2}} = {a * (a + 1) // 2} \\end{{equation}} "
        f"the check is complete. $\\boxed{{{a}}}$"
    )


def code_text(seed: int) -> str:
    return (
        f'"""Helpers for module {seed}."""\n\n\n'
        f"def scale_{seed}(values, factor={seed % 7 + 2}):\n"
        f'    """Multiply every value by the factor."""\n'
        f"    # Keep the input untouched and build a new list.\n"
        f"    result = []\n"
        f"    for value in values:\n"
        f"        result.append(value * factor)\n"
        f"    return result\n\n\n"
        f"class Counter{seed}:\n"
        f"    def __init__(self):\n"
        f"        self.count = 0\n\n"
        f"    def increment(self, step=1):\n"
        f"        self.count += step\n"
        f"        return self.count\n"
    )


def write_jsonl(path: Path, rows: list, compress: str = "") -> None:
    """Rows are dicts (JSON-encoded) or raw bytes written as they are (for malformed lines)."""
    data = b"".join((r if isinstance(r, bytes) else json.dumps(r).encode("utf-8")) + b"\n" for r in rows)
    if compress == "gz":
        data = gzip.compress(data)
    elif compress == "zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def prepare_config(inputs: list, out: Path):
    """configs/data/base.py for small in-memory runs into `out`: one train shard, and the web
    filters that need more text than the test corpora have switched off."""
    from configs.data import base

    config = base.get_config()
    config.inputs = inputs
    config.output_dir = str(out)
    config.output.train_shards = 1
    config.runner.direct_running_mode = "in_memory"
    config.filters.web.c4.enabled = False
    config.filters.web.fineweb.enabled = False
    return config
