"""The mixture search of bench/RESULTS.md, end to end on CPU: the anneal study's data, then the search.

  python bench/mixture_search_study.py --work_dir /tmp/mixture_search [--extra=--config.search.arms=8]

Needs ../shared/data (or $SHARED_DATA). Runs the data stages of bench/anneal_study.py
(`--data_only`: probes, corpus, preps, tokenizer, classifier, packs; each skipped when its
output exists), then `python -m studies.mixture_search --config=configs/anneal/search_study.py:WORK_DIR`
(resumable: finished arms are not retrained), and prints the timings and the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "runs", "mixture_search"))
    parser.add_argument(
        "--extra", action="append", default=[], help="one more flag for studies.mixture_search"
    )
    args = parser.parse_args()
    out = os.path.abspath(args.work_dir)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    timings = {}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "bench/anneal_study.py", f"--work_dir={out}", "--data_only"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    timings["data"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "studies.mixture_search",
            f"--config=configs/anneal/search_study.py:{out}",
            *args.extra,
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    timings["search"] = round(time.perf_counter() - start, 1)
    print(json.dumps(timings))
    with open(f"{out}/search/stage_timings.json", "w") as f:
        json.dump(timings, f)


if __name__ == "__main__":
    main()
