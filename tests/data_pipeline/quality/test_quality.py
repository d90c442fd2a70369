import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import random
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from data_pipeline.quality import classifier

GOOD = "the committee reviewed the evidence and published a careful analysis of the results".split()
BAD = "click here buy now cheap deals free casino bonus win prizes best price".split()


def _docs(vocab, n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocab) for _ in range(60)) for _ in range(n)]


def _train_config(**overrides):
    config = classifier.default_train_config()
    config.update({"n_features": 2**12, **overrides})
    return config


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("quality") / "model.npz"
    scorer, metrics = classifier.train(_docs(GOOD, 60, 0), _docs(BAD, 60, 1), _train_config())
    assert metrics["holdout_accuracy"] == 1.0
    scorer.save(str(path))
    return str(path)


def test_scores_separate_the_classes_after_a_round_trip(model_path):
    scorer = classifier.QualityScorer.load(model_path)
    good, bad = _docs(GOOD, 5, 7), _docs(BAD, 5, 8)
    assert min(scorer.score(t) for t in good) > 0.5 > max(scorer.score(t) for t in bad)
    assert 0.0 <= scorer.score("") <= 1.0


def test_model_file_is_plain_arrays_not_pickle(model_path):
    with zipfile.ZipFile(model_path) as z:
        assert sorted(z.namelist()) == ["coef.npy", "intercept.npy", "params.npy"]
    with np.load(model_path, allow_pickle=False) as data:
        assert json.loads(str(data["params"]))["format"] == classifier.FORMAT


def test_load_refuses_other_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, params=np.array(json.dumps({"format": "x"})), coef=np.zeros(2), intercept=np.array(0.0))
    with pytest.raises(ValueError, match="not a quality model"):
        classifier.QualityScorer.load(str(path))


def test_cli_trains_from_globs(tmp_path):
    for name, vocab, seed in (("pos", GOOD, 0), ("neg", BAD, 1)):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "a.jsonl", "w") as f:
            for text in _docs(vocab, 30, seed):
                f.write(json.dumps({"text": text}) + "\n")
    out = tmp_path / "m.npz"

    def train(output, *extra):
        return subprocess.run(
            [sys.executable, "-m", "data_pipeline.quality.classifier", "train", f"--positive={tmp_path}/pos/*.jsonl",
             f"--negative={tmp_path}/neg/*.jsonl", f"--output={output}", "--config.n_features=4096", *extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    result = train(out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "read 30 positive documents" in result.stdout and "holdout_auc" in result.stdout
    assert classifier.QualityScorer.load(str(out)).score(" ".join(GOOD)) > 0.5
    model = out.read_bytes()
    again = train(out)  # the model prepare runs were scored with is not replaced unasked
    assert again.returncode == 2 and "config.output: holds a quality model already" in again.stderr
    assert out.read_bytes() == model
    data = tmp_path / "pos" / "a.jsonl"
    kept = data.read_bytes()
    wrong = train(data, "--overwrite")  # a slip of --output: not a model, never replaced
    assert wrong.returncode == 2 and "config.output: exists and is not a quality model" in wrong.stderr
    assert data.read_bytes() == kept
    assert train(out, "--overwrite").returncode == 0 and sorted(p.name for p in tmp_path.iterdir()) == [
        "m.npz",
        "neg",
        "pos",
    ]
