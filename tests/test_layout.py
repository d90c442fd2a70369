"""The package layout as rules, read from the source with `ast` (nothing is imported).

(a) Import layers, lowest first: common → data_pipeline → tokenizer → mixtures →
pretrain.model → evals → the pretrain core → pretrain.{convert, tools, launch} → studies.
A module imports its own layer or a lower one, never a later one, so the trainer cannot
come to depend on a command built on it. bench/, scripts/, tests/ and configs/ sit outside.
(b) Every project import is at the top of its module, so a module's header says what it
depends on; the only exceptions are the optional dependencies listed below.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Lowest first; a module's layer is that of the longest prefix of its dotted name.
LAYERS = [
    ("common",),
    ("data_pipeline",),
    ("tokenizer",),
    ("mixtures",),
    ("pretrain.model",),
    ("evals",),
    ("pretrain",),
    ("pretrain.convert", "pretrain.tools", "pretrain.launch"),
    ("studies",),
]
PACKAGES = sorted({prefix.split(".")[0] for layer in LAYERS for prefix in layer})
PROJECT = {*PACKAGES, "configs"}
CORE_NEVER_IMPORTS = ("pretrain.convert", "pretrain.tools", "pretrain.launch", "studies")

# (module, imported module): function-local imports of what may be missing. The GPU machines
# bench/gpu_throughput.py trains synthetic data on have no TensorFlow, SeqIO or Grain, so
# `pretrain.train` must import without them (test_the_trainer_imports_without_...); real
# data needs them, and imports them where it is read.
OPTIONAL_IMPORTS = {
    ("pretrain.train_setup", "mixtures.stream"),  # Grain, ArrayRecord
    ("pretrain.heldout", "mixtures.stream"),  # Grain, ArrayRecord
    ("pretrain.train_config", "tokenizer.vocab"),  # SeqIO, TensorFlow
    ("pretrain.train", "pretrain.downstream_in_loop"),  # evals reads eval files with SeqIO, TensorFlow
}
ABSENT_ON_GPU_MACHINES = ("tensorflow", "seqio", "grain", "array_record", "tensorflow_datasets")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules(packages) -> dict[str, Path]:
    return {
        module_name(path): path
        for package in packages
        if (REPO / package).is_dir()
        for path in sorted((REPO / package).rglob("*.py"))
    }


MODULES = source_modules(PACKAGES)
CONFIGS = source_modules(["configs"])
KNOWN = set(MODULES) | set(CONFIGS)


def imported(node: ast.Import | ast.ImportFrom, where: str) -> list[str]:
    """The modules an import statement names (`from pkg import mod` names pkg.mod)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert node.level == 0, f"{where}: relative import (the project uses absolute ones)"
    return [
        f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in KNOWN else node.module
        for alias in node.names
    ]


@functools.cache
def all_imports(path: Path) -> tuple[tuple[str, bool], ...]:
    """(module, imported at module level?) for every import statement in the file."""
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.extend((name, not nested) for name in imported(child, str(path)))
            scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
            visit(child, nested or isinstance(child, scope))

    visit(ast.parse(path.read_text(), str(path)), False)
    return tuple(found)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(project module, imported at module level?) for every project import in the file."""
    return [(name, top) for name, top in all_imports(path) if name.split(".")[0] in PROJECT]


def layer(module: str) -> int:
    matches = [
        (len(prefix), i)
        for i, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is in no layer"
    return max(matches)[1]


def test_every_package_module_has_a_layer():
    assert {"common.fs", "pretrain.train", "pretrain.tools.aot", "studies.anneal"} <= set(MODULES)
    assert layer("pretrain.model.transformer") < layer("pretrain.train") < layer("pretrain.tools.aot")
    assert layer("pretrain.train") < layer("studies.anneal") and layer("evals.x") < layer("pretrain.train")
    for module in MODULES:
        layer(module)


def test_no_module_imports_a_later_layer():
    upward = [
        f"{module} ({'/'.join(LAYERS[layer(module)])}) imports {name} ({'/'.join(LAYERS[layer(name)])})"
        for module, path in MODULES.items()
        for name, _ in imports(path)
        if name.split(".")[0] in PACKAGES and layer(name) > layer(module)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_pretrain_core_never_imports_its_commands_or_studies():
    core = [m for m in MODULES if layer(m) == layer("pretrain.train")]
    assert {"pretrain.train", "pretrain.checkpoint", "pretrain.step_memory"} <= set(core)
    wrong = [
        f"{module} imports {name}"
        for module in core
        for name, _ in imports(MODULES[module])
        if name.startswith(CORE_NEVER_IMPORTS)
    ]
    assert not wrong, "\n".join(wrong)


def test_project_imports_are_at_the_top_of_their_module():
    local = {
        (module, name)
        for module, path in {**MODULES, **CONFIGS}.items()
        for name, top in imports(path)
        if not top
    }
    unexpected = sorted(local - OPTIONAL_IMPORTS)
    assert not unexpected, "move these imports to the top of their module:\n" + "\n".join(
        f"{module}: function-local import of {name}" for module, name in unexpected
    )
    assert not OPTIONAL_IMPORTS - local, f"no longer function-local: {OPTIONAL_IMPORTS - local}"


def test_the_trainer_imports_without_tensorflow_or_grain():
    """The reason for OPTIONAL_IMPORTS: what `python -m pretrain.train` imports at module level,
    followed through the project's modules, reaches no package the GPU machines lack."""
    seen, todo, reached = set(), ["pretrain.train"], set()
    while todo:
        module = todo.pop()
        if module in seen or module not in MODULES:
            continue
        seen.add(module)
        for name, top in all_imports(MODULES[module]):
            if top:
                reached.add(f"{name.split('.')[0]} (from {module})")
                parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)]
                todo.extend(parents)  # importing a.b.c runs a/__init__ and a.b too
    assert {"pretrain.train_config", "pretrain.train_setup", "tokenizer.model_file"} <= seen
    bad = sorted(r for r in reached if r.split(" ")[0] in ABSENT_ON_GPU_MACHINES)
    assert not bad, f"pretrain.train imports at module level: {bad}"


def test_the_rules_see_what_they_forbid(tmp_path):
    """The checks can fail: an upward import and a function-local one are both seen as such."""
    path = tmp_path / "probe.py"
    path.write_text(
        "import numpy\nfrom pretrain import checkpoint\n\ndef f():\n    from pretrain.tools import aot\n"
    )
    assert imports(path) == [("pretrain.checkpoint", True), ("pretrain.tools.aot", False)]
    assert all_imports(path)[0] == ("numpy", True)
    assert layer("pretrain.tools.aot") > layer("pretrain.checkpoint")


def test_test_file_names_are_unique():
    """tests/ has no __init__.py files: pytest imports each test file by its base name, so two
    files of one name in different folders stop the whole suite at collection."""
    names = [path.name for path in (REPO / "tests").rglob("test_*.py")]
    assert not sorted({n for n in names if names.count(n) > 1})
