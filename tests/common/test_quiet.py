"""What common/quiet.py lets through: the project's own lines, warnings, not known library noise."""

import logging
import subprocess
import sys

from common import quiet


def _record(pathname: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("x", level, pathname, 1, message, None, None)


def test_library_info_and_known_noise_are_dropped_our_lines_and_warnings_kept(monkeypatch):
    monkeypatch.setattr(quiet.LibraryNoiseFilter, "verbose", False)
    ours = f"{quiet.PROJECT_ROOT}/data_pipeline/progress.py"
    library = "/venv/site-packages/orbax/checkpoint/checkpoint_manager.py"
    keep = quiet.FILTER.filter
    assert keep(_record(ours, logging.INFO, "read 3 of 12 input files (25%)"))
    assert not keep(_record(library, logging.INFO, "Saving item to /w/checkpoints/4"))
    assert keep(_record(library, logging.WARNING, "something a user can act on"))
    noise = "CheckpointManagerOptions.read_only=True, setting create=False."
    assert not keep(_record(library, logging.WARNING, noise))
    monkeypatch.setattr(quiet.LibraryNoiseFilter, "verbose", True)
    assert keep(_record(library, logging.INFO, "Saving item")) and keep(
        _record(library, logging.WARNING, noise)
    )


def test_the_absl_logger_is_absls_own_so_our_records_name_our_files(repo_root):
    """Made with logging.getLogger before absl's import, it would be a plain Logger whose records
    name absl's own file, and the filter would drop the project's INFO lines as a library's.
    A fresh interpreter, so that quiet is imported first, as every command imports it."""
    check = (
        "import common.quiet as q; from absl import logging as a; lg = a.get_absl_logger(); "
        "print(isinstance(lg, a.ABSLLogger) and q.FILTER in lg.filters)"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=repo_root, capture_output=True, text=True)
    assert result.stdout.strip() == "True", result.stderr[-2000:]
