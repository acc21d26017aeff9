"""The exceptions of Fabric's Python package.

Calls that do not fit their export's WIT signature raise ``TypeError`` at the call (the
message names the parameter); ``FabricError`` is about the cluster (unreachable, a job
refused or cancelled); ``TaskError`` is a task that failed, carrying the guest's message;
``CancelledError`` is a future without a value because it (or its job) was cancelled or it
was released.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

__all__ = ["CancelledError", "FabricError", "TaskError", "TaskFailure"]


class FabricError(Exception):
    """An error of the cluster or of the connection to it."""


@dataclass(frozen=True)
class TaskFailure:
    """One task that failed for good: what it calls, why, and what it printed and logged."""

    task: str
    """The task's name (its id in the graph)."""
    call: str
    """``component/export``."""
    error: str
    """The error in one line: ``panicked: kaboom``, ``returned an error: nope``."""
    message: str
    """The guest's message alone: ``kaboom``."""
    stdout: str = ""
    stderr: str = ""
    logs: List[Tuple[str, str]] = field(default_factory=list)
    """(level, line) of what it logged."""
    attempts: int = 0
    worker: Optional[str] = None


class TaskError(FabricError):
    """A task failed: ``str(e)`` is ``task `boom-0` (faulty/boom) panicked: kaboom``.

    ``message`` is the guest's own message (a panic's, or the ``err`` it returned);
    ``failures`` lists every task of the job that failed, the first being this one.
    """

    def __init__(
        self,
        text: str,
        *,
        task: str,
        call: str,
        error: str,
        message: str,
        stdout: str = "",
        stderr: str = "",
        logs: Any = (),
        attempts: int = 0,
        worker: Optional[str] = None,
        job: Optional[int] = None,
        failures: Any = (),
    ) -> None:
        super().__init__(text)
        self.task = task
        self.call = call
        self.error = error
        self.message = message
        self.stdout = stdout
        self.stderr = stderr
        self.logs: List[Tuple[str, str]] = [(str(level), str(line)) for level, line in logs]
        self.attempts = attempts
        self.worker = worker
        self.job = job
        self.failures: List[TaskFailure] = [
            f if isinstance(f, TaskFailure) else TaskFailure(**f) for f in failures
        ]


class CancelledError(FabricError, concurrent.futures.CancelledError):
    """A future has no value: it (or its job) was cancelled, or it was released:
    ``the future of `slow_inc-0` was cancelled``. Also a ``concurrent.futures.CancelledError``,
    as Dask's is."""
