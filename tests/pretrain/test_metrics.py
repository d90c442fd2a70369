"""metrics.jsonl: appended locally (never rewritten per step), cut back atomically on resume,
and a line torn by a kill in the middle of an append is dropped instead of breaking reads."""

from __future__ import annotations

import json

from pretrain import metrics


def _write(workdir, steps, resume_step=0):
    writer = metrics.MetricsWriter(workdir, resume_step=resume_step, tensorboard=False)
    for step in steps:
        writer.write(step, {"loss": float(step)})
    writer.close()


def test_local_log_is_appended_not_rewritten(tmp_path):
    _write(tmp_path, [1, 2])
    path = tmp_path / "metrics.jsonl"
    writer = metrics.MetricsWriter(tmp_path, resume_step=2, tensorboard=False)
    # Edit the file behind the writer's back: a rewrite from its memory would undo this.
    path.write_text(path.read_text().replace('"loss": 1.0', '"loss": 9.0'))
    writer.write(3, {"loss": 3.0})
    writer.close()
    assert [r["loss"] for r in metrics.read_metrics(tmp_path)] == [9.0, 2.0, 3.0]


def test_resume_cuts_back_atomically_and_drops_a_torn_line(tmp_path):
    _write(tmp_path, [1, 2, 3, 4])
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"step": 5, "lo')  # a kill in the middle of an append
    assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [1, 2, 3, 4]
    inode = path.stat().st_ino

    _write(tmp_path, [3, 4], resume_step=2)  # restored step 2: steps 3 and 4 are redone
    lines = path.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    assert path.stat().st_ino != inode, "the cut replaced the file (rename), not truncated it"
    assert not list(tmp_path.glob("metrics.jsonl.tmp*"))
