"""The job on the runner path Dataflow, Flink and Spark use: Beam's PortableRunner against its
local job service, workers in LOOPBACK. Every DoFn, side input and coder crosses the
portable job API as it does there; the size of that serialised job stays small because the
eval-set index is loaded on the workers, not pickled into the graph."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402

from configs.data import base  # noqa: E402
from data_pipeline import prepare  # noqa: E402
from data_pipeline.decontamination.eval_sets import parse_specs  # noqa: E402
from data_pipeline.readers import sources
from tests.support.data import prose, write_jsonl  # noqa: E402

PORTABLE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]
QUESTION = (
    "A baker sells 1,250 loaves of bread each week for 3 dollars each. "
    "How much money does the baker make in 4 weeks if he sells all of them?"
)


def _config(tmp_path):
    near = prose(1).split(" ")
    near[10], near[40] = "lighthouse", "orchard"
    docs = [{"id": f"w{i}", "text": prose(i, sentences=40)} for i in range(4)]
    docs += [
        {
            "id": "w_near",
            "text": " ".join(
                prose(1, sentences=40).split(" ")[:10]
                + ["lighthouse"]
                + prose(1, sentences=40).split(" ")[11:]
            ),
        },
        {"id": "w_dup", "text": prose(0, sentences=40)},
        {"id": "w_leak", "text": prose(9, sentences=40) + "\n" + QUESTION.replace("1,250", "1250")},
    ]
    write_jsonl(tmp_path / "in" / "web.jsonl", docs)
    write_jsonl(tmp_path / "gsm.jsonl", [{"question": QUESTION, "answer": "15000"}])
    config = base.get_config()
    config.inputs = [f"web={tmp_path / 'in' / 'web.jsonl'}"]
    config.eval_sets = [f"gsm={tmp_path / 'gsm.jsonl'}"]
    config.output_dir = str(tmp_path / "out")
    config.output.train_shards = 1
    config.filters.web.c4.enabled = False
    config.filters.web.fineweb.enabled = False
    return config


def test_job_runs_on_the_portable_runner(tmp_path):
    config = _config(tmp_path)
    result = prepare.prepare(config, PORTABLE)
    assert result["invariant"]["ok"], result["invariant"]
    assert result["total"]["input"] == 7
    assert result["total"]["rejected"] == {"exact_duplicate": 1, "near_duplicate": 1, "contaminated": 1}
    assert result["total"]["kept"] == 4
    hits = [json.loads(line) for line in (tmp_path / "out" / "contamination.jsonl").read_text().splitlines()]
    assert [(h["id"], h["eval_set"]) for h in hits] == [("w_leak", "gsm")]


def _job_bytes(config) -> int:
    specs = prepare.input_specs(config)
    p = beam.Pipeline(options=prepare.pipeline_options(config, PORTABLE))
    prepare.build(p, config, specs, parse_specs(list(config.eval_sets)), config.output_dir)
    return len(p.to_runner_api().SerializeToString())


def test_serialised_job_is_small_with_every_shared_eval_set(tmp_path, shared_data):
    SHARED_EVAL = str(shared_data / "eval")  # noqa: N806 - the real eval sets, all of them
    config = _config(tmp_path)
    config.eval_sets = [
        f"{name}={os.path.join(SHARED_EVAL, name)}"
        for name in sorted(os.listdir(SHARED_EVAL))
        if os.path.isdir(os.path.join(SHARED_EVAL, name)) and name != "bbh"
    ]
    config.eval_sets.append(f"bbh={os.path.join(SHARED_EVAL, 'bbh', 'data')}")
    size = _job_bytes(config)
    print(f"serialised job with {len(config.eval_sets)} eval sets: {size} bytes")
    assert size < 1_000_000


def test_job_graph_does_not_grow_with_the_eval_sets(tmp_path):
    config = _config(tmp_path)
    small = _job_bytes(config)
    big = tmp_path / "big.jsonl"
    write_jsonl(big, [{"question": prose(i, sentences=8)} for i in range(3000)])  # ~3 MB of items
    config.eval_sets = [f"big={big}"]
    assert abs(_job_bytes(config) - small) < 2_000
    assert sources.match_files(str(big)) == [str(big)]


def test_worker_requirements_are_runtime_only():
    """The Dataflow recipe installs these on workers: no test or bench pins."""
    from data_pipeline import worker_requirements

    names = worker_requirements.closure(worker_requirements.runtime_roots())
    assert {"apache-beam", "numpy", "lingua-language-detector", "zstandard"} <= names
    assert not names & {"torch", "transformers", "datatrove", "spacy", "pytest", "hypothesis"}
    lines = worker_requirements.pinned(names, os.path.join(worker_requirements.ROOT, "constraints.txt"))
    assert any(line.startswith("apache-beam==") for line in lines)
    assert not any(line.startswith(("torch", "datatrove")) for line in lines)


def test_dataflow_job_request_builds_without_credentials():
    """Beam's DataflowRunner builds the job request offline with --dry_run (nothing submitted).

    The ``test`` extra installs apache-beam[gcp] (extra ``dataflow``), so this runs in CI; a
    missing client is a failure, not a skip."""
    try:
        import google.cloud.dataflow  # noqa: F401
    except ImportError as e:
        pytest.fail(
            f"the DataflowRunner needs apache-beam[gcp]: pip install -c constraints.txt -e '.[test]' ({e})"
        )
    config = base.get_config()
    config.inputs = ["web=gs://bucket/raw/*.jsonl.gz"]
    config.eval_sets = ["gsm8k=gs://bucket/eval/gsm8k/test.jsonl"]
    config.output_dir = "gs://bucket/prep"
    options = prepare.pipeline_options(
        config,
        [
            "--runner=DataflowRunner",
            "--project=test-project",
            "--region=us-central1",
            "--job_name=prep-dry-run",
            "--temp_location=gs://bucket/tmp",
            "--staging_location=gs://bucket/staging",
            "--no_auth",
            "--dry_run=True",
            "--sdk_location=container",
        ],
    )
    p = beam.Pipeline(options=options)
    prepare.build(
        p, config, prepare.input_specs(config), parse_specs(list(config.eval_sets)), config.output_dir
    )
    job = p.run().job
    assert job.proto.name == "prep-dry-run"
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert {
        "Read[web:*.jsonl.gz]",
        "Clean",
        "ExactDedup",
        "NearDedup",
        "Decontaminate",
        "Quality",
        "WriteTfds",
    } <= names
    assert len(job.proto_pipeline.SerializeToString()) < 1_000_000
