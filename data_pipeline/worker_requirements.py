"""The pinned requirements a Dataflow (or Flink/Spark) worker needs: runtime dependencies only.

``--requirements_file=constraints.txt`` would make every worker install the test and bench
pins too (torch, transformers, datatrove, spaCy). This prints the project's runtime
dependencies (pyproject ``dependencies``, i.e. the installed distribution's requirements
without extras) and everything they need in turn, pinned to ``constraints.txt``:

  python -m data_pipeline.worker_requirements > worker-requirements.txt
  python -m data_pipeline.prepare ... --runner=DataflowRunner \\
      --requirements_file=worker-requirements.txt --extra_package=dist/gemma_pretrain-*.whl

The walk uses the requirements that the installed distributions declare (no resolver, no
network), so run it in the environment the job was tested in.
"""

from __future__ import annotations

import importlib.metadata
import os
import re

import ml_collections
from packaging.requirements import Requirement

from common import cli, fs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NAME = re.compile(r"[-_.]+")


def _canonical(name: str) -> str:
    return _NAME.sub("-", name).lower()


def runtime_roots() -> list[str]:
    """The ``dependencies`` of pyproject.toml (the runtime install, no extras)."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def closure(roots: list[str]) -> set[str]:
    """Canonical names of ``roots`` and of every requirement they declare, recursively."""
    seen: set[str] = set()
    stack = [Requirement(r) for r in roots]
    while stack:
        req = stack.pop()
        name = _canonical(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (a platform-specific dependency): left to pip on the worker
        for line in requires:
            child = Requirement(line)
            if child.marker is None or child.marker.evaluate({"extra": ""}):
                stack.append(child)
    return seen


def pinned(names: set[str], constraints_path: str) -> list[str]:
    """``constraints.txt`` lines of the given distributions, sorted."""
    out = []
    for line in fs.read_text(constraints_path).splitlines():
        line = line.strip()
        if (
            line
            and not line.startswith("#")
            and _canonical(re.split(r"[=<>!~; ]", line, maxsplit=1)[0]) in names
        ):
            out.append(line)
    return sorted(out, key=str.lower)


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    del argv
    print("\n".join(pinned(closure(runtime_roots()), config.constraints)))


def run() -> None:
    cli.run(
        main,
        doc=__doc__,
        default_config=lambda: ml_collections.ConfigDict(
            {"constraints": os.path.join(ROOT, "constraints.txt")}
        ),
    )


if __name__ == "__main__":
    run()
