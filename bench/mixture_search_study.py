"""The mixture search of bench/RESULTS.md, end to end on CPU: the anneal study's data, then the search.

  python bench/mixture_search_study.py --work_dir /tmp/mixture_search [--extra=--config.search.arms=8]
  python bench/mixture_search_study.py --work_dir /tmp/ms_smoke --smoke      # the smallest size, minutes
  python bench/mixture_search_study.py --work_dir /tmp/ms_b --compare /tmp/ms_a  # a rerun, judged
  python bench/mixture_search_study.py --work_dir /tmp/ms_c --controls_only  # the controls alone

Needs ../shared/data (or $SHARED_DATA). Runs the data stages of bench/anneal_study.py
(`--data_only`: probes, the study corpus from shared-data files (`studies.study_corpus`),
preps, tokenizer, classifier, packs; each skipped when its output exists), then `python -m studies.mixture_search
--config=configs/anneal/search_study.py:WORK_DIR` (resumable: finished arms are not
retrained), and prints the timings, the inputs the search ran on (content hashes) and its
verdict. The reproduction of issue 34 runs it twice from empty work dirs, once with a venv
holding the runtime dependencies only and once with every extra (run this file with that
venv's python); `--compare` then checks that both searches ran on the same inputs and
reached the same verdict. `--controls_only` runs, instead of the search, the reference
arm and the two controls as an anneal study (configs/anneal/search_controls.py, report in
WORK_DIR/controls): whether the positive control is seen at this size, and what an arm costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smallest study that runs every stage (search, fit or refusal, proof, controls) in minutes.
SMOKE = [
    "--config.prefix_steps=40",
    "--config.anneal_steps=20",
    "--config.eval_every=20",
    "--config.search.arms=4",
    "--config.search.holdout=1",
    "--config.probes.max_items=30",
    "--config.probes.validation_docs=20",
    "--config.search.bootstrap=300",
    "--config.downstream.limit=40",
]


def summary(work_dir: str) -> dict:
    """What a finished search ran on and decided (from its report.json)."""
    with open(os.path.join(work_dir, "search", "report.json")) as f:
        report = json.load(f)
    return {"inputs": report["inputs"], "decision": report["decision"], "controls": report["controls"]}


def compare(a: str, b: str) -> bool:
    """Prints whether two searches ran on the same inputs and reached the same decision."""
    first, second = summary(a), summary(b)
    same_inputs = first["inputs"] == second["inputs"]
    for key in sorted(set(first["inputs"]) | set(second["inputs"])):
        x, y = first["inputs"].get(key, "absent"), second["inputs"].get(key, "absent")
        print(f"input {key:24s} {x[:16]} {'==' if x == y else '!='} {y[:16]}")
    print(f"decision: {first['decision']['summary']} | {second['decision']['summary']}")
    same = same_inputs and first["decision"]["summary"] == second["decision"]["summary"]
    print(f"same inputs: {same_inputs}; same decision: {same}")
    return same


def step(command: list[str], env: dict[str, str]) -> None:
    """Runs one stage; a failed one ends the bench with its exit status (its own message said why)."""
    code = subprocess.run(command, cwd=ROOT, env=env).returncode
    if code:
        sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "runs", "mixture_search"))
    parser.add_argument(
        "--extra", action="append", default=[], help="one more flag for studies.mixture_search"
    )
    parser.add_argument("--smoke", action="store_true", help="the smallest size that runs every stage")
    parser.add_argument(
        "--controls_only", action="store_true", help="the reference arm and the controls alone (no search)"
    )
    parser.add_argument("--compare", default="", help="another finished work dir: same inputs, same verdict?")
    args = parser.parse_args()
    out = os.path.abspath(args.work_dir)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    timings = {}
    start = time.perf_counter()
    step([sys.executable, "bench/anneal_study.py", f"--work_dir={out}", "--data_only"], env)
    timings["data"] = round(time.perf_counter() - start, 1)
    study, name = (
        ("studies.anneal", "controls") if args.controls_only else ("studies.mixture_search", "search")
    )
    start = time.perf_counter()
    step(
        [
            sys.executable,
            "-m",
            study,
            f"--config=configs/anneal/search_{'controls' if args.controls_only else 'study'}.py:{out}",
            *(SMOKE if args.smoke else []),
            *args.extra,
        ],
        env,
    )
    timings[name] = round(time.perf_counter() - start, 1)
    print(json.dumps(timings))
    with open(f"{out}/{name}/stage_timings.json", "w") as f:
        json.dump(timings, f)
    if args.controls_only:
        return
    with open(f"{out}/corpus/corpus.json") as f:
        corpus = json.load(f)
    print(f"corpus sha256 {corpus['sha256']} ({sys.executable})")
    print(f"decision: {summary(out)['decision']['summary']}")
    if args.compare and not compare(os.path.abspath(args.compare), out):
        sys.exit(1)


if __name__ == "__main__":
    main()
