"""The read stage's progress: workers' totals summed, the line and its ETA."""

import time

from data_pipeline import progress


def test_totals_of_several_workers_add_up_and_half_written_files_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "WRITE_EVERY_S", 3600.0)
    a, b = progress.WorkerTotals(str(tmp_path)), progress.WorkerTotals(str(tmp_path))
    a.add(records=5)  # the first add writes; later ones wait for WRITE_EVERY_S or write()
    a.add(files=1, records=2)
    b.add(files=2, records=10)
    assert progress.read_totals(str(tmp_path)) == {"files": 2, "records": 15}
    a.write()
    (tmp_path / "x.json.tmp-123").write_text('{"files": 99, "records": 99}')  # an atomic write in flight
    (tmp_path / "broken.json").write_text('{"files": ')
    assert progress.read_totals(str(tmp_path)) == {"files": 3, "records": 17}
    assert progress.read_totals(str(tmp_path / "absent")) == {"files": 0, "records": 0}


def test_line_gives_share_and_eta_then_says_what_comes_after_reading():
    assert progress.line({"files": 0, "records": 0}, 12, 5) == (
        "read 0 of 12 input files (0%), 0 records, 0:05 elapsed"
    )
    assert progress.line({"files": 3, "records": 10234}, 12, 45) == (
        "read 3 of 12 input files (25%), 10,234 records, 0:45 elapsed, reading ETA 2:15"
    )
    assert progress.line({"files": 12, "records": 4}, 12, 3700).endswith(
        "1:01:40 elapsed; deduplicating, decontaminating and writing"
    )
    assert progress.line({"files": 12, "records": 4}, 12, 61, finished=True).endswith("1:01 elapsed")


def test_reporter_logs_while_running_and_once_at_the_end(tmp_path):
    said: list[str] = []
    worker = progress.WorkerTotals(str(tmp_path))
    with progress.Reporter(str(tmp_path), 2, said.append, every_s=0.05):
        worker.add(files=1, records=3)
        time.sleep(0.3)
        worker.add(files=1)
        worker.write()
    assert any(line.startswith("read 1 of 2 input files (50%), 3 records") for line in said[:-1])
    assert said[-1].startswith("read 2 of 2 input files (100%), 3 records") and "ETA" not in said[-1]
