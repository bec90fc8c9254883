"""Turning calls into rows and messages: ``.delay()``, releases of waiting steps, publishing.

``.delay()`` writes the execution and its first try (two INSERTs) and publishes after the
transaction commits: inside ``transaction.atomic()`` nothing is published until the commit,
and a rollback publishes nothing. With ``force_sync`` the message is run inline at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from .conf import get_queue, get_settings
from .db import update_returning
from .messages import TaskMessage
from .models import ExecutionStatus, TaskExecution, TaskExecutionTry, TaskGroup

if TYPE_CHECKING:
    from .chains import ChainHandle
    from .task import Task

logger = logging.getLogger(__name__)


def validate_arguments(task_name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the first argument that JSON cannot carry."""
    for index, value in enumerate(args):
        _check_json(value, f"positional argument {index} of {task_name}")
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"keyword argument names of {task_name} must be str, got {key!r}")
        _check_json(value, f"keyword argument {key!r} of {task_name}")
    size = len(json.dumps([list(args), kwargs], separators=(",", ":")))
    limit = get_settings().max_payload_bytes
    if size > limit:
        raise ValueError(
            f"arguments of {task_name} are {size} bytes of JSON; the limit "
            f"(I3TASKS.max_payload_bytes) is {limit}"
        )


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} is not JSON serializable ({type(value).__name__}): {exc}"
        ) from None


def message_for(execution: TaskExecution, task_try: TaskExecutionTry) -> TaskMessage:
    return TaskMessage(
        execution_id=execution.pk,
        execution_uuid=execution.uuid,
        try_id=task_try.pk,
        try_number=task_try.number,
        task_name=execution.task_name,
        queue_name=execution.queue_name,
        args=list(execution.args),
        kwargs=dict(execution.kwargs),
        max_retries=execution.max_retries,
        group_id=execution.group_id,
    )


def enqueue(
    task: Task,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    group: TaskGroup | None = None,
    queue_name: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    previous: TaskExecution | None = None,
    dispatch: bool = True,
) -> ChainHandle:
    """Write an execution (and its first try when it is dispatched now) and publish it.

    ``dispatch=False`` writes a *waiting* execution (chain step, group callback);
    ``countdown``/``eta`` write a *scheduled* one that the beat releases when due.
    """
    from .chains import ChainHandle

    if group is not None and not isinstance(group, TaskGroup):
        raise TypeError(f"__i3group__ must be a TaskGroup, got {type(group).__name__}")
    if countdown is not None and eta is not None:
        raise TypeError("give countdown or eta, not both")
    if eta is not None and timezone.is_naive(eta):
        raise ValueError("eta must be an aware datetime")
    validate_arguments(task.name, args, kwargs)
    queue = get_queue(queue_name or task.effective_queue_name)
    if countdown is not None:
        eta = timezone.now() + timedelta(seconds=countdown)
    if not dispatch or previous is not None:
        status = ExecutionStatus.WAITING
    elif eta is not None and eta > timezone.now():
        status = ExecutionStatus.SCHEDULED
    else:
        status = ExecutionStatus.PENDING
    with transaction.atomic(savepoint=False):
        execution = TaskExecution.objects.create(
            task_name=task.name,
            queue_name=queue.queue_name,
            args=list(args),
            kwargs=dict(kwargs),
            status=status,
            max_retries=task.effective_max_retries,
            eta=eta,
            previous=previous,
            group=group,
        )
        if status == ExecutionStatus.PENDING:
            first_try = TaskExecutionTry.objects.create(execution=execution, number=1)
            send([message_for(execution, first_try)])
    if status == ExecutionStatus.PENDING and get_settings().force_sync:
        execution.refresh_from_db()  # it ran inline: show its final status
    return ChainHandle(execution)


def enqueue_many(
    task: Task,
    calls: Iterable[tuple[Sequence[Any], dict[str, Any]]],
    *,
    group: TaskGroup | None = None,
    queue_name: str | None = None,
) -> list[ChainHandle]:
    """Enqueue many calls of one task at once: bulk INSERTs, one batched publish.

    Every call is validated before anything is written, so a bad argument in call 700 writes
    nothing. Costs two INSERTs per ``BULK_BATCH`` calls instead of two per call.
    """
    from .chains import ChainHandle

    if group is not None and not isinstance(group, TaskGroup):
        raise TypeError(f"group must be a TaskGroup, got {type(group).__name__}")
    executions = enqueue_calls(
        [(task, args, kwargs) for args, kwargs in calls], group=group, queue_name=queue_name
    )
    return [ChainHandle(execution) for execution in executions]


#: Rows per INSERT statement of the bulk paths.
BULK_BATCH = 500


def enqueue_calls(
    calls: Sequence[tuple[Task, Sequence[Any], dict[str, Any]]],
    *,
    group: TaskGroup | None = None,
    queue_name: str | None = None,
    uuids: Sequence[UUID] | None = None,
) -> list[TaskExecution]:
    """Write and publish calls of any tasks in bulk (fan-out, beat schedules).

    ``uuids`` gives the executions' uuids when the caller recorded them beforehand (beat).
    """
    calls = [(task, list(args), dict(kwargs)) for task, args, kwargs in calls]
    for index, (task, args, kwargs) in enumerate(calls):
        try:
            validate_arguments(task.name, args, kwargs)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"call {index}: {exc}") from None
    queues = {
        task.name: get_queue(queue_name or task.effective_queue_name).queue_name
        for task, _, _ in calls
    }
    with transaction.atomic(savepoint=False):
        executions = TaskExecution.objects.bulk_create(
            [
                TaskExecution(
                    task_name=task.name, queue_name=queues[task.name], args=args,
                    kwargs=kwargs, status=ExecutionStatus.PENDING,
                    max_retries=task.effective_max_retries, group=group,
                    **({"uuid": uuids[index]} if uuids is not None else {}),
                )
                for index, (task, args, kwargs) in enumerate(calls)
            ],
            batch_size=BULK_BATCH,
        )
        tries = TaskExecutionTry.objects.bulk_create(
            [TaskExecutionTry(execution=execution, number=1) for execution in executions],
            batch_size=BULK_BATCH,
        )
        send([message_for(e, t) for e, t in zip(executions, tries, strict=True)])
    if get_settings().force_sync:
        for execution in executions:
            execution.refresh_from_db(fields=["status", "finished_at"])
    return executions


#: Columns a message needs, read back by the UPDATE that releases an execution.
_MESSAGE_FIELDS = [
    "id", "uuid", "task_name", "queue_name", "args", "kwargs", "max_retries", "group_id",
]
_RELEASABLE = [ExecutionStatus.WAITING, ExecutionStatus.SCHEDULED]


def release(executions: Iterable[int] | Any) -> list[TaskExecution]:
    """Dispatch waiting or scheduled executions, each exactly once.

    ``executions`` is a queryset or ids. The status moves from waiting/scheduled to pending in
    one conditional ``UPDATE ... RETURNING``, so two processes releasing the same step (a
    chain's previous step finishing while ``.then()`` adds it, two beat calls) dispatch it
    once. Several rows are locked in primary-key order first, so concurrent releases of
    overlapping sets cannot deadlock. Call it inside a transaction.
    """
    if isinstance(executions, list | tuple | set):
        queryset = TaskExecution.objects.filter(pk__in=list(executions))
    else:
        queryset = executions
    queryset = queryset.filter(status__in=_RELEASABLE)
    with transaction.atomic(savepoint=False):
        if not (isinstance(executions, list | tuple | set) and len(executions) == 1):
            pks = list(queryset.select_for_update().order_by("pk").values_list("pk", flat=True))
            if not pks:
                return []
            queryset = TaskExecution.objects.filter(pk__in=pks, status__in=_RELEASABLE)
        released = update_returning(queryset, _MESSAGE_FIELDS, status=ExecutionStatus.PENDING)
        rows = [
            TaskExecution(
                status=ExecutionStatus.PENDING, **dict(zip(_MESSAGE_FIELDS, row, strict=True))
            )
            for row in released
        ]
        if not rows:
            return []
        tries = TaskExecutionTry.objects.bulk_create(
            [TaskExecutionTry(execution=row, number=1) for row in rows]
        )
        send([message_for(row, task_try) for row, task_try in zip(rows, tries, strict=True)])
    return rows


def retry(executions: Iterable[int] | Any) -> list[TaskExecution]:
    """Run failed executions once more (the admin's "retry" action).

    Each gets one new try; steps that were skipped because it failed wait for it again. A
    failed group stays failed: its callback was given up when the member failed.
    """
    from .chains import unskip_after

    queryset = (
        TaskExecution.objects.filter(pk__in=list(executions))
        if isinstance(executions, list | tuple | set)
        else executions
    )
    with transaction.atomic():
        pks = list(
            queryset.filter(status=ExecutionStatus.FAILED)
            .select_for_update()
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        reopened = update_returning(
            TaskExecution.objects.filter(pk__in=pks, status=ExecutionStatus.FAILED),
            _MESSAGE_FIELDS,
            status=ExecutionStatus.PENDING,
            finished_at=None,
        )
        rows = [
            TaskExecution(
                status=ExecutionStatus.PENDING, **dict(zip(_MESSAGE_FIELDS, row, strict=True))
            )
            for row in reopened
        ]
        last = dict(
            TaskExecutionTry.objects.filter(execution_id__in=[r.pk for r in rows])
            .values("execution_id")
            .annotate(last=Max("number"))
            .values_list("execution_id", "last")
        )
        tries = TaskExecutionTry.objects.bulk_create(
            [TaskExecutionTry(execution=row, number=last.get(row.pk, 0) + 1) for row in rows]
        )
        unskip_after([row.pk for row in rows])
        send([message_for(row, task_try) for row, task_try in zip(rows, tries, strict=True)])
    return rows


def send(messages: list[TaskMessage]) -> None:
    """Publish messages once the current transaction commits (inline with ``force_sync``)."""
    if not messages:
        return
    if get_settings().force_sync:
        from .execution import run_message

        for message in messages:
            run_message(message)
        return
    transaction.on_commit(lambda: publish(messages))


def publish(messages: list[TaskMessage]) -> None:
    """Publish now. A failure is logged, not raised: the rows are committed and the beat
    publishes a try again when it stays queued for ``recovery_after_seconds``."""
    from . import transport

    for message in messages:
        try:
            data, attributes = message.encode()
            transport.publish(get_queue(message.queue_name), data, attributes)
        except Exception:
            logger.exception(
                "Could not publish task %s (execution %s, try %s)",
                message.task_name,
                message.execution_uuid,
                message.try_number,
            )
