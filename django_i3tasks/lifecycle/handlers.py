"""Failure handlers: what an execution's end without success, or a group's failure, enqueues.

::

    step ──failed for good, cancelled, expired──▶ each of its handlers enqueued once
    step ──skipped (an earlier step failed)──▶ each handler, with the failed step's failure
    group ──first member ended without success──▶ the group's handler enqueued once
    step already ended ──on_failure() attached──▶ the handler enqueued at once

The handlers ride on the conditional write that records the end (``UPDATE ... WHERE status =
... RETURNING on_failure``), so of duplicate or concurrent deliveries only the one that
changed the status enqueues them; ``attach`` locks the row, so a handler attached while the
execution ends is enqueued by exactly one of the two. The ``failure`` dict is read only when
a handler needs it, inside the same transaction.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Count, OuterRef, Subquery

from ..models import ExecutionStatus, TaskExecution, TaskExecutionTry, TaskGroup
from ..spec import handler_call
from .enqueue import enqueue

#: Ends without success that fire handlers.
UNSUCCESSFUL = (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED, ExecutionStatus.EXPIRED,
                ExecutionStatus.SKIPPED)


class Failure:
    """The ``failure`` dict of the execution that ended without success: given when the
    caller knows it (``record_failure``), else read once, on first use."""

    def __init__(self, execution_id: int, known: dict[str, Any] | None = None) -> None:
        self.execution_id = execution_id
        self._value = known

    def get(self) -> dict[str, Any]:
        if self._value is None:
            self._value = describe(self.execution_id)
        return self._value


def error_text(error_type: str | None, message: str | None) -> str | None:
    """``"module.Type: message"``, or None without an error."""
    return f"{error_type}: {message}" if error_type else None


def describe(execution_id: int) -> dict[str, Any]:
    """The ``failure`` dict of an execution, in one query: its last error and how many of
    its tries ran."""
    tries = TaskExecutionTry.objects.filter(execution=OuterRef("pk"))
    errored = tries.exclude(error_type="").order_by("-number")
    ran = (tries.filter(started_at__isnull=False).order_by().values("execution")
           .annotate(n=Count("pk")).values("n"))
    row = (
        TaskExecution.objects.filter(pk=execution_id)
        .annotate(last_error_type=Subquery(errored.values("error_type")[:1]),
                  last_error_message=Subquery(errored.values("error_message")[:1]),
                  ran=Subquery(ran[:1]))
        .values("uuid", "task_name", "status", "last_error_type", "last_error_message", "ran")
        .first()
    )
    if row is None:
        raise TaskExecution.DoesNotExist(f"execution {execution_id} does not exist")
    return {
        "execution_uuid": str(row["uuid"]), "task_name": row["task_name"],
        "status": row["status"],
        "error": error_text(row["last_error_type"], row["last_error_message"]),
        "tries": row["ran"] or 0,
    }


def origin(execution_id: int) -> int:
    """The execution that actually failed: itself, or for a skipped step the earlier step
    that failed (for a skipped group callback, the group's first failed member)."""
    current = execution_id
    while True:
        row = TaskExecution.objects.filter(pk=current).values("status", "previous_id").first()
        if row is None or row["status"] != ExecutionStatus.SKIPPED:
            return current
        if row["previous_id"] is None:
            member = first_failed_member(current)
            return current if member is None else member
        current = row["previous_id"]


def first_failed_member(callback_id: int) -> int | None:
    """The member whose end failed the group of this callback."""
    group = TaskGroup.objects.filter(callback_id=callback_id).values_list("pk", flat=True)
    return (
        TaskExecution.objects.filter(group_id__in=group, status__in=UNSUCCESSFUL)
        .exclude(status=ExecutionStatus.SKIPPED)
        .order_by("finished_at", "pk").values_list("pk", flat=True).first()
    )


def fire(handlers: list[dict[str, Any]] | None, handler_of: int | None,
         failure: dict[str, Any]) -> list[TaskExecution]:
    """Enqueue each stored handler with ``failure`` first."""
    return [enqueue(handler_call(stored, failure, handler_of)) for stored in handlers or ()]


def attach(execution_id: int, stored: dict[str, Any]) -> None:
    """Attach a failure handler to an execution; when it already ended without success,
    the handler is enqueued now (see the module's docstring)."""
    with transaction.atomic():
        row = (
            TaskExecution.objects.select_for_update().filter(pk=execution_id)
            .values_list("status", "on_failure").first()
        )
        if row is None:
            raise TaskExecution.DoesNotExist(f"execution {execution_id} no longer exists")
        status, handlers = row
        TaskExecution.objects.filter(pk=execution_id).update(
            on_failure=[*(handlers or []), stored]
        )
        if status in UNSUCCESSFUL:
            fire([stored], execution_id, describe(origin(execution_id)))
