"""A failed run explains itself in one line.

When a stage or a flow raises one of talkflow's own errors (talkflow.errors.TalkflowError: bad
input, a missing asset, ...), Prefect logs it several times at ERROR, each time with its traceback
(the task run, its final state, the flow run, the engine). A person reading the run's logs needs
the cause once: the first such record becomes one line, "MediaUnreadable: <what to do>", and the
repeats of the same error go to DEBUG (with their tracebacks, shown when PREFECT_LOGGING_LEVEL is
DEBUG). Any other exception keeps Prefect's records and tracebacks as they are.

`install()` adds the filter to Prefect's run loggers; importing the flows package calls it, so it
is active in every process that runs a flow (a worker's run, a local run, the CLI). Logging only:
no Prefect import.
"""

from __future__ import annotations

import logging
import re

from talkflow.errors import TalkflowError

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
_FINISHED = re.compile(r"^Finished in state Failed\('.*? (\w+): ")


def one_line(exc: BaseException) -> str:
    """How a talkflow error reads in a run's log and state: 'MediaUnreadable: <message>'."""
    return f"{type(exc).__name__}: {exc}"


class UserErrorOnce(logging.Filter):
    """The first ERROR record of a talkflow error becomes one line; its repeats go to DEBUG."""

    def __init__(self) -> None:
        super().__init__("talkflow-user-error-once")
        self.seen: set[tuple[str, str, str]] = set()  # (flow run, error type, message)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TalkflowError):
            key = (str(getattr(record, "flow_run_id", "")), type(exc).__name__, str(exc))
            if key not in self.seen:
                self.seen.add(key)
                record.msg, record.args = one_line(exc), ()
                record.exc_info, record.exc_text = None, None
                return True
            return self._demote(record, logging.DEBUG)
        # a task's "Finished in state Failed('... MediaUnreadable: ...')" after its one line
        finished = _FINISHED.match(record.getMessage())
        run = str(getattr(record, "flow_run_id", ""))
        if finished and (run, finished.group(1)) in {(r, name) for r, name, _ in self.seen}:
            return self._demote(record, logging.INFO)
        return True

    @staticmethod
    def _demote(record: logging.LogRecord, level: int) -> bool:
        """Re-log `record` at `level` (if that level is enabled); drop the ERROR one."""
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(level):
            lower = logging.makeLogRecord(record.__dict__)
            lower.levelno, lower.levelname = level, logging.getLevelName(level)
            logger.handle(lower)
        return False


_FILTER = UserErrorOnce()


def install() -> UserErrorOnce:
    """Add the filter to Prefect's run loggers (idempotent)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    return _FILTER


__all__ = ["RUN_LOGGERS", "UserErrorOnce", "install", "one_line"]
