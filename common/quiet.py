"""Library noise off: imported first by every package, so it acts before any library loads.

A command's own lines are what a user reads; on a CPU, TensorFlow's C++ start-up lines,
Beam's "apitools not found" (Beam without its GCP extra) and Orbax's option dumps buried
them. So: TensorFlow's C++ log level defaults to 3, a few known import-time warnings are dropped,
and Python log records below WARNING from outside this project are dropped unless the
command got `--verbose` (common/cli.py calls `set_verbose`).
"""

from __future__ import annotations

import logging
import os

from absl import logging as absl_logging

# TensorFlow only reads and writes files here (TFDS, SeqIO): level 3 drops its CUDA probe's
# "failed call to cuInit" error on machines without a GPU (level 2 keeps it), and oneDNN's
# notice that its math ops may round differently concerns no op this project runs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Warnings that say nothing a user can act on, matched in the message; nothing else is dropped
# whole: Beam without its GCP extra (at import), and the DirectRunner's workers relaying
# their start-up notes as warnings.
# Orbax warns that a manager opened read-only will not create its folder: asked for, by every reader.
KNOWN_NOISE = (
    "apitools not found",
    "No semi_persistent_directory found",
    "Discarding unparseable args",
    "CheckpointManagerOptions.read_only=True",
    "Given directory is read only",
)


class LibraryNoiseFilter(logging.Filter):
    verbose = False

    def filter(self, record: logging.LogRecord) -> bool:
        if any(noise in record.getMessage() for noise in KNOWN_NOISE):
            return self.verbose
        ours = os.path.abspath(record.pathname).startswith(PROJECT_ROOT + os.sep)
        return self.verbose or ours or record.levelno >= logging.WARNING


FILTER = LibraryNoiseFilter()
# absl (Orbax, Grain, our own commands) logs through the "absl" logger; other libraries through
# their own, which propagate to the root's handlers: filter both loggers and their handlers.
# The "absl" logger is taken from absl itself: created here with logging.getLogger before absl
# is imported, it would be a plain Logger, whose records name absl's own file as their origin,
# and the filter would drop our commands' INFO lines as a library's.
for _logger in (logging.getLogger(), absl_logging.get_absl_logger()):
    _logger.addFilter(FILTER)


def set_verbose(verbose: bool) -> None:
    """`--verbose`: every library's log records again. Also filters the root's handlers (absl's
    among them), which records of other libraries' loggers reach without the root's filters."""
    FILTER.verbose = verbose
    for handler in logging.getLogger().handlers:
        if FILTER not in handler.filters:
            handler.addFilter(FILTER)
