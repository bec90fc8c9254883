"""Chains: steps that run one after another, each after the previous one succeeded.

A step added with ``.then()`` is written at once as a *waiting* execution linked to the
previous one. Whoever comes second releases it: ``.then()`` when the previous step already
succeeded, else the finishing previous step, which learns from ``has_next`` (set under the
same row lock) that it has steps to release. So a step is neither lost nor dispatched twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.db import transaction

from .db import update_returning
from .dispatch import enqueue, release, validate_arguments
from .models import ExecutionStatus, TaskExecution

if TYPE_CHECKING:
    from .task import Task


class ChainHandle:
    """What ``.delay()`` returns: the execution, and ``.then()`` to add steps after it."""

    def __init__(self, execution: TaskExecution) -> None:
        self.task_execution = execution

    def __repr__(self) -> str:
        return f"<ChainHandle {self.task_execution.task_name} {self.uuid}>"

    @property
    def id(self) -> int:
        return self.task_execution.pk

    @property
    def uuid(self) -> UUID:
        return self.task_execution.uuid

    def then(self, task: Task, *args: Any, **kwargs: Any) -> ChainHandle:
        """Run ``task(*args, **kwargs)`` after this step succeeded; returns the new step."""
        validate_arguments(task.name, args, kwargs)
        with transaction.atomic():
            rows = update_returning(
                TaskExecution.objects.filter(pk=self.id), ["status"], has_next=True
            )
            if not rows:
                raise TaskExecution.DoesNotExist(f"execution {self.uuid} no longer exists")
            (status,) = rows[0]
            step = enqueue(task, args, kwargs, previous=self.task_execution).task_execution
            if status == ExecutionStatus.SUCCESS:
                release([step.pk])
                step.refresh_from_db(fields=["status"])
            elif status in (ExecutionStatus.FAILED, ExecutionStatus.SKIPPED):
                skip([step.pk])
                step.status = ExecutionStatus.SKIPPED
        return ChainHandle(step)


def release_next(execution_id: int) -> None:
    """Dispatch the steps waiting for ``execution_id`` (it just succeeded)."""
    release(
        TaskExecution.objects.filter(previous_id=execution_id, status=ExecutionStatus.WAITING)
    )


def skip_after(execution_id: int) -> None:
    """Record every step after a failed one as never run."""
    skip(
        TaskExecution.objects.filter(
            previous_id=execution_id, status=ExecutionStatus.WAITING
        ).values_list("pk", flat=True)
    )


def skip(execution_ids: Any) -> None:
    ids = list(execution_ids)
    while ids:
        TaskExecution.objects.filter(pk__in=ids, status=ExecutionStatus.WAITING).update(
            status=ExecutionStatus.SKIPPED
        )
        ids = list(
            TaskExecution.objects.filter(
                previous_id__in=ids, status=ExecutionStatus.WAITING
            ).values_list("pk", flat=True)
        )


def unskip_after(execution_ids: list[int]) -> None:
    """Steps skipped after these executions wait for them again (they are being retried)."""
    ids = list(execution_ids)
    while ids:
        ids = list(
            TaskExecution.objects.filter(
                previous_id__in=ids, status=ExecutionStatus.SKIPPED
            ).values_list("pk", flat=True)
        )
        TaskExecution.objects.filter(pk__in=ids).update(status=ExecutionStatus.WAITING)
