"""Reading what became of an execution: ``TaskResult``, ``get_result`` and waiting for it.

Everything here reads committed rows with short autocommit queries; waiting never holds a
transaction (or a lock) open between polls. Waiting polls with growing intervals (50 ms,
x1.5, at most 1 s): a result is seen at most about a second after it is recorded, at a few
cheap primary-key reads per second per waiter. LISTEN/NOTIFY on PostgreSQL was measured and
left out (``docs/control.md``): it would cost every finished execution one more statement
whether or not anyone waits, and each waiter a dedicated connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from django.db import router, transaction

from .db import unique_row
from .exceptions import (
    ResultTimeout,
    TaskCancelled,
    TaskFailed,
    TaskResultDoesNotExist,
    TaskUsageError,
)
from .models import (
    FINISHED_STATUSES,
    ExecutionStatus,
    TaskExecution,
    TaskExecutionTry,
    TryStatus,
)

R = TypeVar("R")

#: Polling of ``wait``: first interval, growth factor, largest interval (seconds).
FIRST_POLL, POLL_GROWTH, MAX_POLL = 0.05, 1.5, 1.0


@dataclass(frozen=True)
class Progress:
    """What a running task reported with ``task_metadata.set_progress()``."""

    current: float
    total: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """``current / total`` when a positive total is known."""
        return self.current / self.total if self.total else None


@dataclass(frozen=True)
class TryRecord:
    """One try of an execution, as recorded."""

    number: int
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""
    progress: dict[str, Any] | None = None


@dataclass(frozen=True)
class TaskResult(Generic[R]):
    """An execution as recorded when it was read (read again for fresh values).

    ``status`` is the execution's status, with ``"running"`` for a pending execution whose
    current try is running. ``error`` is ``"module.Type: message"`` of the latest try when it
    failed. ``progress`` is the latest try's. ``started_at`` is when the first try started.
    ``TaskResult.of`` is the one place an execution becomes a result: the status endpoint and
    the ``django.tasks`` backend map from it.
    """

    id: UUID
    task_name: str
    status: str
    return_value: R | None
    error: str | None
    tries: int
    progress: Progress | None
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: ``cancel()`` was called (the task may still be running: it was asked to stop).
    cancel_requested: bool = False
    queue_name: str = ""
    #: The execution's status without ``"running"`` (what the row says).
    recorded_status: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None
    group_uuid: UUID | None = None
    #: The return value was not JSON: ``return_value`` is its ``repr``.
    is_repr: bool = False
    #: Every try, oldest first.
    try_records: tuple[TryRecord, ...] = ()

    @classmethod
    def of(cls, execution: TaskExecution, tries: Sequence[TryRecord] | None = None
           ) -> TaskResult[Any]:
        """The result of ``execution`` (its ``result`` and ``group`` are read if not
        selected with it; its tries are read unless given)."""
        if tries is None:
            tries = read_tries(execution.pk)
        last = tries[-1] if tries else None
        status = str(execution.status)
        if status == ExecutionStatus.PENDING and last and last.status == TryStatus.RUNNING:
            status = "running"
        stored = getattr(execution, "result", None)
        group = execution.group if execution.group_id is not None else None
        started = [t.started_at for t in tries if t.started_at is not None]
        return cls(
            id=execution.uuid,
            task_name=execution.task_name,
            status=status,
            return_value=stored.value if stored is not None else None,
            error=(f"{last.error_type}: {last.error_message}"
                   if last and last.error_type else None),
            tries=len(tries),
            progress=_progress(last.progress) if last else None,
            enqueued_at=execution.created_at,
            started_at=min(started) if started else None,
            finished_at=execution.finished_at,
            cancel_requested=execution.cancel_requested_at is not None,
            queue_name=execution.queue_name,
            recorded_status=str(execution.status),
            args=tuple(execution.args),
            kwargs=dict(execution.kwargs),
            expires_at=execution.expires_at,
            group_uuid=group.uuid if group is not None else None,
            is_repr=bool(stored.is_repr) if stored is not None else False,
            try_records=tuple(tries),
        )

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def outcome(self) -> R:
        """The return value of a successful execution; ``TaskFailed`` or ``TaskCancelled``
        for one that ended otherwise (call it on a finished result)."""
        if self.status == ExecutionStatus.SUCCESS:
            return self.return_value  # type: ignore[return-value]
        if self.status in (ExecutionStatus.CANCELLED, ExecutionStatus.EXPIRED):
            raise TaskCancelled(f"{self.task_name} {self.id} was {self.status}", self)
        if self.status == ExecutionStatus.SKIPPED:
            raise TaskFailed(
                f"{self.task_name} {self.id} was skipped: an earlier chain step did not "
                "succeed", self,
            )
        if self.status == ExecutionStatus.FAILED:
            raise TaskFailed(self.error or f"{self.task_name} {self.id} failed", self)
        raise TaskUsageError(f"{self.task_name} {self.id} has not finished ({self.status})")


def read_tries(execution_id: int) -> list[TryRecord]:
    """The tries of an execution, oldest first (one query)."""
    return [
        TryRecord(**row) for row in TaskExecutionTry.objects.filter(execution_id=execution_id)
        .order_by("number")
        .values("number", "status", "started_at", "finished_at", "error_type",
                "error_message", "traceback", "progress")
    ]


def get_result(execution_uuid: UUID | str, task_name: str | None = None) -> TaskResult[Any]:
    """The ``TaskResult`` of the execution ``execution_uuid``, read now (two queries).

    ``TaskResultDoesNotExist`` for an unknown uuid (or one of another task, when
    ``task_name`` is given)."""
    try:
        wanted = execution_uuid if isinstance(execution_uuid, UUID) else UUID(str(execution_uuid))
    except ValueError:
        raise TaskResultDoesNotExist(f"{execution_uuid!r} is not an execution uuid") from None
    executions = TaskExecution.objects.filter(uuid=wanted)
    if task_name is not None:
        executions = executions.filter(task_name=task_name)
    execution = unique_row(executions.select_related("result", "group"))
    if execution is None:
        raise TaskResultDoesNotExist(f"no execution {wanted}"
                                     + (f" of {task_name}" if task_name else ""))
    return TaskResult.of(execution)


def _progress(stored: Any) -> Progress | None:
    if not isinstance(stored, dict):
        return None
    return Progress(stored.get("current", 0), stored.get("total"), stored.get("message", ""))


def _intervals() -> Iterator[float]:
    interval = FIRST_POLL
    while True:
        yield interval
        interval = min(MAX_POLL, interval * POLL_GROWTH)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or timeout < 0):
        raise TaskUsageError(f"timeout must be None or seconds >= 0, got {timeout!r}")


def wait(execution_uuid: UUID, timeout: float | None = None) -> Any:
    """Wait until the execution finished and return its value (``TaskResult.outcome``);
    ``ResultTimeout`` after ``timeout`` seconds (``None``: no limit).

    Refused inside ``transaction.atomic()`` when the result is not there yet: the wait would
    hold the transaction open, and a task enqueued in it is only published at its commit.
    """
    _check_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    alias = router.db_for_read(TaskExecution)
    for interval in _intervals():
        result = get_result(execution_uuid)
        if result.is_finished:
            return result.outcome()
        if transaction.get_connection(alias).in_atomic_block:
            raise TaskUsageError(
                "wait_result() inside transaction.atomic() would keep the transaction open "
                "while the task runs (and a task enqueued in it is only sent at commit); "
                "wait after the transaction"
            )
        time.sleep(_pause(result, interval, deadline, timeout))
    raise AssertionError("unreachable")  # pragma: no cover


def _pause(result: TaskResult, interval: float, deadline: float | None,
           timeout: float | None) -> float:
    """How long to wait before reading ``result`` again; ``ResultTimeout`` once the deadline
    (from ``timeout``) has passed."""
    if deadline is None:
        return interval
    left = deadline - time.monotonic()
    if left <= 0:
        raise ResultTimeout(f"{result.task_name} {result.id} did not finish within "
                            f"{timeout:g} s (status {result.status})")
    return min(interval, left)


async def await_(execution_uuid: UUID, timeout: float | None = None) -> Any:
    """``wait`` for async code: the reads run in Django's sync thread, the pauses are
    ``asyncio.sleep``."""
    from asgiref.sync import sync_to_async

    _check_timeout(timeout)
    read = sync_to_async(get_result)
    deadline = None if timeout is None else time.monotonic() + timeout
    for interval in _intervals():
        result = await read(execution_uuid)
        if result.is_finished:
            return result.outcome()
        await asyncio.sleep(_pause(result, interval, deadline, timeout))
    raise AssertionError("unreachable")  # pragma: no cover
