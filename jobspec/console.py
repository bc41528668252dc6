"""Where the commands' status lines go: the ``logging`` set-up that ``resolab`` and
``analysis/make_tables.py`` share, made once by each command's ``main``.

Every module logs to ``logging.getLogger(__name__)``, so the loggers follow the packages
(``orchestrator.cluster.suite`` sits under ``orchestrator``) and one package can be quieted or made
verbose on its own. A command's output (a table, a matrix, JSON) is printed, not logged: it is what a
user pipes, and no log level hides it.
"""
from __future__ import annotations

import logging
import os
import sys

PACKAGES = ("backbones", "methods", "jobspec", "records", "analysis", "orchestrator")
# analysis/ prints its tables on stdout, so its status lines go to stderr and stdout stays one table
# (or one CSV); the other packages' status lines go to stdout, warnings and errors to stderr.
STATUS_ON_STDERR = frozenset({"analysis"})


class ConsoleHandler(logging.Handler):
    """The plain message, no level or time, on the ``sys.stdout`` / ``sys.stderr`` of the moment of the
    record (a ``StreamHandler`` keeps the stream it was made with, and output captured or redirected
    later would miss the line); flushed, so that a line is seen while the command works on."""

    def __init__(self, status_stream: str = "stdout"):
        super().__init__()
        self.status_stream = status_stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else getattr(sys, self.status_stream)
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def configure_logging(debug: bool = False) -> None:
    """Show the project's INFO lines (DEBUG too under ``--debug``) as plain text, and MLflow's warnings
    only. Idempotent: a command run again in the same process (the tests' ``main(argv)``) replaces the
    handlers it added.

    The records still propagate to the root logger, which has no handler unless a program adds one,
    so pytest's ``caplog`` sees them and no line is shown twice."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
            logger.removeHandler(handler)
        logger.addHandler(ConsoleHandler("stderr" if name in STATUS_ON_STDERR else "stdout"))
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
    # A dictConfig run earlier in this process (import-linter's, when the tests lint in-process) disables
    # every logger that existed then, the project's modules' included.
    for name, existing in list(logging.root.manager.loggerDict.items()):
        if isinstance(existing, logging.Logger) and name.split(".")[0] in PACKAGES:
            existing.disabled = False
    # MLflow's own INFO lines (a new store's schema migrations, ...) are not the command's to show. MLflow sets
    # its logger's level from this variable when it loads, which a command does later, and lazily.
    mlflow_level = os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(mlflow_level.upper())  # where MLflow is loaded already
