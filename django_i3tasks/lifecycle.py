"""The state machine of executions, tries and groups: the only code that writes a status.

Every transition is one conditional write (an ``UPDATE ... WHERE status = ...``, a unique row,
or an ``UPDATE ... RETURNING`` that reads what it changed), so a duplicate, late or concurrent
delivery finds nothing left to change and changes nothing:

- **enqueue** writes an execution: *pending* with its first try (and a message), *scheduled*
  (``countdown``/``eta``, released by the beat) or *waiting* (a chain step, a group callback);
- **release** moves waiting/scheduled executions to pending and sends their first try, once;
- **claim** moves a due, queued try (or a running one whose lease expired) to running, under a
  fresh claim token; only the holder of the token can record the try;
- **record_success** / **record_failure** finish the try in one transaction with everything
  that follows: the result, the execution's end, the next chain steps (released or skipped),
  the group count, ``on_success``, or the next try with its backoff. On PostgreSQL a success
  that nothing follows is one statement in autocommit, which is atomic by itself;
- **release_claim** gives an unfinished try back (a worker stopping), **retry** reopens failed
  executions (the admin action);
- **cancel** ends an execution that has not started (its queued try is cancelled, so a later
  delivery finds nothing to claim) or flags a running one; **expire** ends one whose
  ``expires`` time passed before its first try was claimed; **write_progress** stores the
  progress of the try that holds the claim;
- **enqueue** with a ``unique_key`` returns the open execution of that key instead of writing
  a second one (a partial unique index decides between concurrent callers);
- **create_group**, **member_succeeded**, **member_failed**: a group's callback is released by
  the one transaction that counts its last member.

Messages go to the outbox (``outbox.send``), which publishes them after the transaction
commits. Signals (``signals``) follow the transitions, so they fire once per change.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import traceback
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from django.db import IntegrityError, connections, router, transaction
from django.db.models import Case, F, Max, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import outbox, signals
from .conf import get_queue, get_settings
from .db import (
    bound_cursor,
    fetch_one,
    insert_linked,
    insert_many_linked,
    prepared,
    update_returning,
)
from .exceptions import InvalidTaskOption, TaskCancelled, TaskUsageError
from .messages import TaskMessage, check_payload, to_json_value
from .models import (
    OPEN_STATUSES,
    ExecutionStatus,
    GroupStatus,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TaskGroup,
    TryStatus,
)
from .outcome import Outcome, OutcomeStatus
from .registry import registry

if TYPE_CHECKING:
    from .task import Task

logger = logging.getLogger(__name__)

_MAX_TRACEBACK = 64 * 1024
_MAX_ERROR_MESSAGE = 8 * 1024
#: Rows per INSERT statement of the bulk paths.
BULK_BATCH = 500
#: Columns a message needs, read back by the UPDATE that releases an execution.
_MESSAGE_FIELDS = [
    "id", "uuid", "task_name", "queue_name", "args", "kwargs", "max_retries", "group_id",
    "expires_at",
]
_RELEASABLE = [ExecutionStatus.WAITING, ExecutionStatus.SCHEDULED]
#: The enum member, typed as the ``str`` it is (django-stubs types tuple-valued members as
#: tuples).
_PENDING = cast(str, ExecutionStatus.PENDING)


def message_for(execution: TaskExecution, task_try: TaskExecutionTry) -> TaskMessage:
    """The message of one try of an execution."""
    return _message(execution, task_try.pk, task_try.number)


def _message(execution: TaskExecution, try_id: int, try_number: int) -> TaskMessage:
    return TaskMessage(
        execution_id=execution.pk,
        execution_uuid=execution.uuid,
        try_id=try_id,
        try_number=try_number,
        task_name=execution.task_name,
        queue_name=execution.queue_name,
        args=list(execution.args),
        kwargs=dict(execution.kwargs),
        max_retries=execution.max_retries,
        group_id=execution.group_id,
        expires_at=execution.expires_at,
    )


#: What ``expires=`` accepts: seconds or a timedelta (counted from when the execution is due:
#: its ``eta``, else now), or an aware datetime.
Expiry = float | timedelta | datetime


def expiry_time(task: Task, expires: Expiry | None, due: datetime) -> datetime | None:
    """When an execution due at ``due`` expires: ``expires`` of the call, else the task's
    ``expires=`` option; ``InvalidTaskOption`` for a value that is not a positive time."""
    if expires is None:
        expires = task.expires
        if expires is None:
            return None
    if isinstance(expires, datetime):
        if timezone.is_naive(expires):
            raise InvalidTaskOption("expires must be an aware datetime")
        return expires
    if isinstance(expires, timedelta):
        expires = expires.total_seconds()
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        raise TaskUsageError(
            f"expires must be seconds, a timedelta or a datetime, got {type(expires).__name__}"
        )
    if not math.isfinite(expires) or expires <= 0:
        raise InvalidTaskOption(f"expires must be a positive number of seconds, got {expires!r}")
    return due + timedelta(seconds=expires)


def validate_arguments(task_name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """``ArgumentsNotSerializable`` (a ``TypeError``) naming the first argument JSON cannot
    carry, ``PayloadTooLarge`` (a ``ValueError``) past ``I3TASKS.max_payload_bytes``."""
    check_payload(task_name, args, kwargs, get_settings().max_payload_bytes)


# --- enqueue and release ----------------------------------------------------------------


def enqueue(
    task: Task,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    group: TaskGroup | None = None,
    queue_name: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: Expiry | None = None,
    unique_key: str | None = None,
    previous: TaskExecution | None = None,
    dispatch: bool = True,
) -> TaskExecution:
    """Write an execution (and its first try when it is dispatched now) and send it.

    ``dispatch=False`` writes a *waiting* execution (chain step, group callback);
    ``countdown``/``eta`` write a *scheduled* one that the beat releases when due.
    ``expires`` (or the task's option) sets when it expires unless started; a waiting step's
    expiry by the task's option is counted from its release. With ``unique_key``, while an
    execution of that key is waiting, scheduled or pending, that execution is returned and
    nothing is written or sent.
    """
    if group is not None and not isinstance(group, TaskGroup):
        raise TaskUsageError(f"__i3group__ must be a TaskGroup, got {type(group).__name__}")
    if countdown is not None and eta is not None:
        raise TaskUsageError("give countdown or eta, not both")
    if eta is not None and timezone.is_naive(eta):
        raise InvalidTaskOption("eta must be an aware datetime")
    if unique_key is not None and (not isinstance(unique_key, str) or not 0 < len(unique_key)
                                   <= 255):
        raise TaskUsageError(f"unique_key must be a str of 1-255 characters, got {unique_key!r}")
    validate_arguments(task.name, args, kwargs)
    queue = get_queue(queue_name or task.effective_queue_name)
    now = timezone.now()
    if countdown is not None:
        eta = now + timedelta(seconds=countdown)
    if not dispatch or previous is not None:
        status = ExecutionStatus.WAITING
    elif eta is not None and eta > now:
        status = ExecutionStatus.SCHEDULED
    else:
        status = ExecutionStatus.PENDING
    expires_at = None
    if status != ExecutionStatus.WAITING or expires is not None:
        expires_at = expiry_time(task, expires, eta or now)
    if expires_at is not None and eta is not None and expires_at <= eta:
        raise InvalidTaskOption(
            f"expires ({expires_at.isoformat()}) is not after eta ({eta.isoformat()}): "
            "the task could never run"
        )
    write: dict[str, Any] = dict(
        group=group, queue_name=queue.queue_name, eta=eta, expires_at=expires_at,
        unique_key=unique_key, previous=previous, status=status,
    )
    if unique_key is None:
        return _write(task, args, kwargs, **write)
    for _ in range(3):
        try:
            with transaction.atomic():  # a savepoint inside the caller's transaction
                return _write(task, args, kwargs, **write)
        except IntegrityError:
            # Another open execution has the key: return it. When it finished in between,
            # the key is free again and the next round writes ours.
            existing = TaskExecution.objects.filter(
                unique_key=unique_key, status__in=OPEN_STATUSES
            ).first()
            if existing is not None:
                return existing
    raise IntegrityError(f"could not enqueue {task.name} with unique_key {unique_key!r}")


def _write(
    task: Task, args: Sequence[Any], kwargs: dict[str, Any], *, group: TaskGroup | None,
    queue_name: str, eta: datetime | None, expires_at: datetime | None, unique_key: str | None,
    previous: TaskExecution | None, status: str,
) -> TaskExecution:
    sink = outbox.get_outbox()
    execution = TaskExecution(
        task_name=task.name,
        queue_name=queue_name,
        args=list(args),
        kwargs=dict(kwargs),
        status=status,
        max_retries=task.effective_max_retries,
        eta=eta,
        previous=previous,
        group=group,
        expires_at=expires_at,
        unique_key=unique_key or "",
    )
    if status == ExecutionStatus.PENDING:
        first_try = TaskExecutionTry(execution=execution, number=1)
        # PostgreSQL: both rows in one statement, atomic by itself, so outside a transaction
        # no BEGIN/COMMIT either (one round trip); the message still leaves after the commit.
        if insert_linked(execution, first_try, "execution"):
            _announce([execution], sink)
            sink.send([message_for(execution, first_try)])
            if isinstance(sink, outbox.InlineOutbox):
                execution.refresh_from_db()  # it ran inline: show its final status
            return execution
    with transaction.atomic(savepoint=False):
        execution.save(force_insert=True)
        if status == ExecutionStatus.PENDING:
            first_try = TaskExecutionTry.objects.create(execution=execution, number=1)
            _announce([execution], sink)
            sink.send([message_for(execution, first_try)])
        elif status == ExecutionStatus.SCHEDULED:
            sink.scheduled(outbox.Recorded(
                task_name=task.name, queue_name=queue_name, args=list(args),
                kwargs=dict(kwargs), execution_id=execution.pk, execution_uuid=execution.uuid,
                group_id=execution.group_id, try_number=None, eta=eta,
            ))
    if status == ExecutionStatus.PENDING and isinstance(sink, outbox.InlineOutbox):
        execution.refresh_from_db()  # it ran inline: show its final status
    return execution


def enqueue_calls(
    calls: Sequence[tuple[Task, Sequence[Any], dict[str, Any]]],
    *,
    group: TaskGroup | None = None,
    queue_name: str | None = None,
    uuids: Sequence[uuid.UUID] | None = None,
    returning: bool = True,
) -> list[TaskExecution]:
    """Write and send calls of any tasks in bulk (fan-out, beat schedules): on PostgreSQL one
    statement per 5,000 calls, elsewhere two INSERTs per ``BULK_BATCH``; one handover to the
    transport.

    Every call is validated before anything is written, so a bad argument in call 700 writes
    nothing. ``uuids`` gives the executions' uuids when the caller recorded them beforehand
    (the beat's slot rows). ``returning=False`` returns nothing and builds no model
    instances (the beat: 10,000 of them are a noticeable part of a minute's cost).
    """
    if group is not None and not isinstance(group, TaskGroup):
        raise TaskUsageError(f"group must be a TaskGroup, got {type(group).__name__}")
    calls = [(task, list(args), dict(kwargs)) for task, args, kwargs in calls]
    limit = get_settings().max_payload_bytes
    for index, (task, args, kwargs) in enumerate(calls):
        try:
            check_payload(task.name, args, kwargs, limit)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"call {index}: {exc}") from None
    queues = {
        task.name: get_queue(queue_name or task.effective_queue_name).queue_name
        for task, _, _ in calls
    }
    now = timezone.now()
    expiries = {task.name: expiry_time(task, None, now) for task, _, _ in calls}
    retries = {task.name: task.effective_max_retries for task, _, _ in calls}
    rows: list[dict[str, Any]] = [
        {"uuid": uuids[index] if uuids is not None else uuid.uuid4(), "task_name": task.name,
         "queue_name": queues[task.name], "args": args, "kwargs": kwargs,
         "expires_at": expiries[task.name], "max_retries": retries[task.name]}
        for index, (task, args, kwargs) in enumerate(calls)
    ]
    common: dict[str, Any] = {
        "status": _PENDING, "group_id": group.pk if group is not None else None,
        "created_at": now,
    }
    sink = outbox.get_outbox()
    with transaction.atomic(savepoint=False):
        ids = _insert_first_tries(rows, common, now)
        executions: list[TaskExecution] = []
        if returning or signals.task_enqueued.has_listeners():
            executions = _loaded(rows, common, [execution_id for execution_id, _ in ids])
            _announce(executions, sink)
        sink.send([
            TaskMessage(
                execution_id=execution_id, execution_uuid=row["uuid"], try_id=try_id,
                try_number=1, task_name=row["task_name"], queue_name=row["queue_name"],
                args=row["args"], kwargs=row["kwargs"], max_retries=row["max_retries"],
                group_id=common["group_id"], expires_at=row["expires_at"],
            )
            for row, (execution_id, try_id) in zip(rows, ids, strict=True)
        ])
    if isinstance(sink, outbox.InlineOutbox):
        for execution in executions:
            execution.refresh_from_db(fields=["status", "finished_at"])
    return executions if returning else []


def _insert_first_tries(
    rows: list[dict[str, Any]], common: dict[str, Any], now: datetime
) -> list[tuple[int, int]]:
    """Write an execution per row (its varying fields, plus ``common``) and a first try for
    each; return ``(execution id, try id)`` pairs in order. On PostgreSQL one statement per
    5,000 rows (``insert_many_linked``), elsewhere two ``bulk_create`` per ``BULK_BATCH``."""
    first_try = {"number": 1, "enqueued_at": now, "not_before": now}
    pairs = insert_many_linked(
        TaskExecution, rows, common, "uuid", TaskExecutionTry, "execution", first_try
    )
    if pairs is not None:
        return pairs
    executions = TaskExecution.objects.bulk_create(
        [TaskExecution(**row, **common) for row in rows], batch_size=BULK_BATCH
    )
    tries = TaskExecutionTry.objects.bulk_create(
        [TaskExecutionTry(execution=e, **first_try) for e in executions], batch_size=BULK_BATCH
    )
    return [(e.pk, t.pk) for e, t in zip(executions, tries, strict=True)]


def _loaded(
    rows: list[dict[str, Any]], common: dict[str, Any], ids: list[int]
) -> list[TaskExecution]:
    """Model instances of executions just written, as if loaded (defaults computed once)."""
    using = router.db_for_write(TaskExecution)
    fields = TaskExecution._meta.concrete_fields
    names = [field.attname for field in fields]
    blank = {**{field.attname: field.get_default() for field in fields}, **common}
    executions = []
    for row, execution_id in zip(rows, ids, strict=True):
        values = {**blank, **row, "id": execution_id}
        executions.append(TaskExecution.from_db(using, names, [values[n] for n in names]))
    return executions


def release(executions: Iterable[int] | QuerySet[TaskExecution]) -> list[TaskExecution]:
    """Dispatch waiting or scheduled executions, each exactly once.

    ``executions`` is a queryset or ids. The status moves from waiting/scheduled to pending in
    one conditional ``UPDATE ... RETURNING``, so two processes releasing the same step (a
    chain's previous step finishing while ``.then()`` adds it, two beat calls) dispatch it
    once. Several rows are locked in primary-key order first, so concurrent releases of
    overlapping sets cannot deadlock.
    """
    ids = None if isinstance(executions, QuerySet) else list(executions)
    queryset = (
        executions if isinstance(executions, QuerySet) else TaskExecution.objects.filter(pk__in=ids)
    ).filter(status__in=_RELEASABLE)
    with transaction.atomic(savepoint=False):
        if not (ids is not None and len(ids) == 1):
            pks = list(queryset.select_for_update().order_by("pk").values_list("pk", flat=True))
            if not pks:
                return []
            queryset = TaskExecution.objects.filter(pk__in=pks, status__in=_RELEASABLE)
        released = update_returning(queryset, _MESSAGE_FIELDS, status=ExecutionStatus.PENDING)
        rows = _rows(released)
        if not rows:
            return []
        _expire_from_release(rows)
        _send_first_tries(rows, [1] * len(rows))
    return rows


def _expire_from_release(rows: list[TaskExecution]) -> None:
    """Steps whose task has ``expires=`` and that waited (chain steps, group callbacks)
    expire that long after their release, not after they were written. One ``UPDATE`` per
    such step; none for tasks without the option."""
    now = timezone.now()
    for row in rows:
        task = registry.get(row.task_name)
        if row.expires_at is None and task is not None and task.expires is not None:
            row.expires_at = expiry_time(task, None, now)
            TaskExecution.objects.filter(pk=row.pk).update(expires_at=row.expires_at)


def _rows(returned: list[tuple]) -> list[TaskExecution]:
    return [
        TaskExecution(status=_PENDING, **dict(zip(_MESSAGE_FIELDS, row, strict=True)))
        for row in returned
    ]


def _send_first_tries(rows: list[TaskExecution], numbers: list[int]) -> None:
    """Write the tries numbered ``numbers`` of just-(re)opened executions and send them."""
    tries = TaskExecutionTry.objects.bulk_create(
        [TaskExecutionTry(execution=row, number=n) for row, n in zip(rows, numbers, strict=True)]
    )
    sink = outbox.get_outbox()
    _announce(rows, sink)
    sink.send([message_for(row, task_try) for row, task_try in zip(rows, tries, strict=True)])


def _announce(executions: Sequence[TaskExecution], sink: outbox.Outbox) -> None:
    """``task_enqueued`` for each execution, after commit (at once for the inline outbox,
    which runs them before the commit)."""
    if not signals.task_enqueued.has_listeners():
        return

    def send() -> None:
        for execution in executions:
            signals.task_enqueued.send(
                sender=registry.get(execution.task_name),
                execution_uuid=execution.uuid, execution_id=execution.pk,
                task_name=execution.task_name, queue_name=execution.queue_name,
                group_id=execution.group_id,
            )

    if isinstance(sink, outbox.InlineOutbox):
        send()
    else:
        transaction.on_commit(send)


def retry(executions: Iterable[int] | QuerySet[TaskExecution]) -> list[TaskExecution]:
    """Run failed executions once more (the admin's "retry" action).

    Each gets one new try; steps that were skipped because it failed wait for it again. A
    failed group stays failed: its callback was given up when the member failed.
    """
    queryset = (
        executions if isinstance(executions, QuerySet)
        else TaskExecution.objects.filter(pk__in=list(executions))
    )
    with transaction.atomic():
        open_keys = TaskExecution.objects.filter(
            status__in=OPEN_STATUSES
        ).exclude(unique_key="").values("unique_key")
        pks = list(
            queryset.filter(status=ExecutionStatus.FAILED)
            .exclude(unique_key__in=open_keys)
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
        rows = _rows(reopened)
        last = dict(
            TaskExecutionTry.objects.filter(execution_id__in=[r.pk for r in rows])
            .values("execution_id")
            .annotate(last=Max("number"))
            .values_list("execution_id", "last")
        )
        unskip_after([row.pk for row in rows])
        if rows:
            _send_first_tries(rows, [last.get(row.pk, 0) + 1 for row in rows])
    return rows


def republish(tries: QuerySet[TaskExecutionTry], now: datetime) -> list[TaskMessage]:
    """Send the messages of ``tries`` again (lost-message recovery) and mark them
    republished at ``now``. Claiming is idempotent, so this never runs a try twice."""
    with transaction.atomic():
        marked = update_returning(tries, ["id", "execution_id", "number"], republished_at=now)
        executions = TaskExecution.objects.in_bulk([execution_id for _, execution_id, _ in marked])
        messages = [
            _message(executions[execution_id], pk, number)
            for pk, execution_id, number in marked
        ]
        outbox.send(messages)
    return messages


# --- chains -------------------------------------------------------------------------------


def add_step(previous: TaskExecution, task: Task, args: Sequence[Any],
             kwargs: dict[str, Any]) -> TaskExecution:
    """Write ``task(*args, **kwargs)`` to run after ``previous`` succeeded.

    The step is written *waiting* under the previous execution's row lock (``has_next`` is
    set by the same ``UPDATE``). Whoever comes second releases it: this call when the
    previous step already succeeded, else the finishing previous step. So a step is neither
    lost nor dispatched twice.
    """
    with transaction.atomic():
        rows = update_returning(
            TaskExecution.objects.filter(pk=previous.pk), ["status"], has_next=True
        )
        if not rows:
            raise TaskExecution.DoesNotExist(f"execution {previous.uuid} no longer exists")
        (status,) = rows[0]
        step = enqueue(task, args, kwargs, previous=previous)
        if status == ExecutionStatus.SUCCESS:
            release([step.pk])
            step.refresh_from_db(fields=["status"])
        elif status in (ExecutionStatus.FAILED, ExecutionStatus.SKIPPED,
                        ExecutionStatus.CANCELLED, ExecutionStatus.EXPIRED):
            skip([step.pk])
            step.status = cast(str, ExecutionStatus.SKIPPED)
    return step


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


def skip(execution_ids: Iterable[int]) -> None:
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


# --- groups -------------------------------------------------------------------------------


def create_group(callback: TaskExecution | None, total_count: int) -> TaskGroup:
    """A group of ``total_count`` members whose ``callback`` (a waiting execution) is released
    once all of them succeeded; at once when there are none."""
    if callback is not None and callback.status != ExecutionStatus.WAITING:
        raise InvalidTaskOption(
            "a group callback must not be dispatched yet: use build_chain()"
        )
    with transaction.atomic():
        group = TaskGroup.objects.create(total_count=total_count, callback=callback)
        if total_count == 0:
            updated = TaskGroup.objects.filter(pk=group.pk, status=GroupStatus.PENDING).update(
                status=GroupStatus.SUCCESS, finished_at=timezone.now()
            )
            if updated and callback is not None:
                release([callback.pk])
            group.refresh_from_db()
    return group


def member_succeeded(group_id: int) -> None:
    """Count one member; the update that counts the last one also marks the group succeeded,
    and only that transaction releases the callback."""
    last = Q(succeeded_count=F("total_count") - 1)
    rows = update_returning(
        TaskGroup.objects.filter(pk=group_id, status=GroupStatus.PENDING),
        ["status", "callback_id"],
        succeeded_count=F("succeeded_count") + 1,
        status=Case(When(last, then=Value(GroupStatus.SUCCESS)), default=F("status")),
        finished_at=Case(When(last, then=Value(timezone.now())), default=F("finished_at")),
    )
    if rows and rows[0][0] == GroupStatus.SUCCESS and rows[0][1] is not None:
        release([rows[0][1]])


def member_failed(group_id: int) -> None:
    """A member failed for good: the group fails and its callback never runs."""
    rows = update_returning(
        TaskGroup.objects.filter(pk=group_id, status=GroupStatus.PENDING),
        ["callback_id"],
        status=GroupStatus.FAILED,
        failed_count=F("failed_count") + 1,
        finished_at=timezone.now(),
    )
    if rows and rows[0][0] is not None:
        skip([rows[0][0]])
    elif not rows:
        TaskGroup.objects.filter(pk=group_id).update(failed_count=F("failed_count") + 1)


# --- running a try ------------------------------------------------------------------------


def claim(message: TaskMessage) -> uuid.UUID | Outcome:
    """Claim the try ``message`` names: its claim token, or the outcome saying why not.

    Only a queued try whose backoff has passed, or a running try whose lease expired (its
    worker died), can be claimed; one conditional ``UPDATE`` decides, so of concurrent
    deliveries exactly one gets the token.
    """
    now = timezone.now()
    token = uuid.uuid4()
    using = router.db_for_write(TaskExecutionTry)
    connection = connections[using]
    moment, token_field = _CLAIM_FIELDS
    at = moment.get_db_prep_value(now, connection)
    lease = moment.get_db_prep_value(
        now + timedelta(seconds=get_settings().lease_seconds), connection)
    with bound_cursor(connection) as cursor:
        cursor.execute(_claim_sql(connection), [
            _RUNNING, at, lease, token_field.get_db_prep_value(token, connection),
            message.try_id, message.execution_id, message.try_number,
            _QUEUED, at, _RUNNING, at,
        ])
        claimed = cursor.rowcount
    if not claimed:
        return _unclaimed(message, now)
    if signals.task_started.has_listeners():
        signals.task_started.send(
            sender=registry.get(message.task_name), **_event(message),
        )
    return token


_QUEUED = cast(str, TryStatus.QUEUED)
_RUNNING = cast(str, TryStatus.RUNNING)
_CLAIM_FIELDS: tuple[Any, Any] = (TaskExecutionTry._meta.get_field("started_at"),
                                   TaskExecutionTry._meta.get_field("claim_token"))
_claim_statements: dict[str, str] = {}


def _claim_sql(connection: Any) -> str:
    """The claim's conditional ``UPDATE``, written once per database: built by the ORM it
    cost a fifth of a push's Python time (a ``Q`` tree compiled on every delivery)."""
    sql = _claim_statements.get(connection.alias)
    if sql is None:
        quote = connection.ops.quote_name
        fields: Any = TaskExecutionTry._meta
        column = {name: quote(fields.get_field(name).column) for name in (
            "status", "started_at", "lease_expires_at", "claim_token", "claims", "id",
            "execution", "number", "not_before")}
        sql = (
            f"UPDATE {quote(TaskExecutionTry._meta.db_table)} SET {column['status']} = %s, "
            f"{column['started_at']} = %s, {column['lease_expires_at']} = %s, "
            f"{column['claim_token']} = %s, {column['claims']} = {column['claims']} + 1 "
            f"WHERE {column['id']} = %s AND {column['execution']} = %s "
            f"AND {column['number']} = %s AND (({column['status']} = %s "
            f"AND {column['not_before']} <= %s) OR ({column['status']} = %s "
            f"AND {column['lease_expires_at']} < %s))"
        )
        _claim_statements[connection.alias] = sql
    return sql


def _event(message: TaskMessage) -> dict[str, Any]:
    return {
        "execution_uuid": message.execution_uuid, "execution_id": message.execution_id,
        "task_name": message.task_name, "queue_name": message.queue_name,
        "try_number": message.try_number,
    }


def _outcome(message: TaskMessage, status: OutcomeStatus, ack: bool, **extra: Any) -> Outcome:
    return Outcome(
        status, ack=ack, execution_uuid=message.execution_uuid,
        try_number=message.try_number, **extra,
    )


def _unclaimed(message: TaskMessage, now: datetime) -> Outcome:
    """Why a try could not be claimed (reads only; this is the rare path)."""
    row = (
        TaskExecutionTry.objects.filter(
            pk=message.try_id,
            execution_id=message.execution_id,
            number=message.try_number,
            execution__uuid=message.execution_uuid,
        )
        .values("status", "not_before", "lease_expires_at")
        .first()
    )
    if row is None:
        return _outcome(message, OutcomeStatus.UNKNOWN, True, detail="no such try")
    if row["status"] == TryStatus.CANCELLED:
        return _outcome(message, OutcomeStatus.CANCELLED, True, detail="execution cancelled")
    if row["status"] == TryStatus.EXPIRED:
        return _outcome(message, OutcomeStatus.EXPIRED, True, detail="execution expired")
    if row["status"] in (TryStatus.SUCCESS, TryStatus.FAILED):
        return _outcome(message, OutcomeStatus.DUPLICATE, True, detail=f"try {row['status']}")
    if row["status"] == TryStatus.QUEUED and row["not_before"] > now:
        wait = (row["not_before"] - now).total_seconds()
        return _outcome(message, OutcomeStatus.NOT_DUE, False, retry_after=wait)
    lease = row["lease_expires_at"]
    wait = max(0.0, (lease - now).total_seconds()) if lease else 0.0
    return _outcome(message, OutcomeStatus.RUNNING, False, retry_after=wait)


def release_claim(try_id: int, token: uuid.UUID) -> bool:
    """Give a claimed, unfinished try back: queued and due, so its redelivered message runs
    it at once instead of waiting for the lease to expire. True when it was still ours."""
    return bool(
        TaskExecutionTry.objects.filter(
            pk=try_id, claim_token=token, status=TryStatus.RUNNING
        ).update(status=TryStatus.QUEUED, lease_expires_at=None, not_before=timezone.now())
    )


def _finish_try(message: TaskMessage, token: uuid.UUID, progress: dict[str, Any] | None = None,
                **values: Any) -> bool:
    if progress is not None:  # the last progress the throttle held back, in the same UPDATE
        values["progress"] = progress
    return bool(
        TaskExecutionTry.objects.filter(
            pk=message.try_id, claim_token=token, status=TryStatus.RUNNING
        ).update(finished_at=timezone.now(), lease_expires_at=None, **values)
    )


def record_success(
    message: TaskMessage, token: uuid.UUID, value: Any, *,
    on_success: Task | None = None, duration: float = 0.0,
    progress: dict[str, Any] | None = None,
) -> Outcome:
    """Record a successful try and what follows it, atomically: in one transaction, or on
    PostgreSQL, when nothing follows it, in one statement without a transaction around it.

    A try that finishes although a cancel was requested while it ran is a success: its work
    is done, and the request only asked it to stop early."""
    stored, is_repr = to_json_value(value)
    using = router.db_for_write(TaskExecutionTry)
    connection = connections[using]
    if (connection.vendor == "postgresql" and connection.get_autocommit()
            and not connection.in_atomic_block and message.group_id is None and on_success is None
            and signals.package_receivers_only(signals.task_finished)):
        # Nothing needs a transaction around the statement (no group count, no on_success,
        # no project receiver of task_finished), so it runs alone, in autocommit: no BEGIN
        # and COMMIT round trips. The statement does nothing when a chain step waits for
        # this execution; then the transaction below records the try and releases the step.
        finished, _, step_waits = _succeed_in_one_statement(
            message, token, stored, is_repr, progress, using, unless_next=True
        )
        if finished:
            _finished(message, OutcomeStatus.SUCCESS, duration, return_value=stored)
            return _outcome(message, OutcomeStatus.SUCCESS, True)
        if not step_waits:
            return _superseded(message)
    with transaction.atomic(using=using):
        if connection.vendor == "postgresql":
            finished, updated, has_next = _succeed_in_one_statement(
                message, token, stored, is_repr, progress, using
            )
            if not finished:
                return _superseded(message)
            rows = [(has_next,)] if updated else []
        else:
            if not _finish_try(message, token, progress, status=TryStatus.SUCCESS):
                return _superseded(message)
            TaskExecutionResult.objects.create(
                execution_id=message.execution_id,
                task_try_id=message.try_id,
                value=stored,
                is_repr=is_repr,
            )
            rows = update_returning(
                TaskExecution.objects.filter(
                    pk=message.execution_id, status=ExecutionStatus.PENDING
                ),
                ["has_next"],
                status=ExecutionStatus.SUCCESS,
                finished_at=timezone.now(),
            )
        if rows:
            if rows[0][0]:
                release_next(message.execution_id)
            if message.group_id is not None:
                member_succeeded(message.group_id)
            if on_success is not None:
                enqueue(on_success, [stored], {})
        _finished(message, OutcomeStatus.SUCCESS, duration, return_value=stored)
    return _outcome(message, OutcomeStatus.SUCCESS, True)


def _succeed_in_one_statement(
    message: TaskMessage, token: uuid.UUID, stored: Any, is_repr: bool,
    progress: dict[str, Any] | None, using: str, *, unless_next: bool = False,
) -> tuple[bool, bool, bool | None]:
    """PostgreSQL: finish the try (guarded by the claim token), insert the result and finish
    the pending execution in one statement (data-modifying CTEs).

    Returns ``(finished, updated, has_next)``: whether the try was still ours and recorded,
    whether the execution was pending and ended, and its ``has_next``. Rows are locked in the
    order of the three statements of the other databases (try, execution).

    With ``unless_next`` the statement runs outside a transaction: it first locks the
    execution row (the order ``cancel`` and ``record_failure`` use) and changes nothing when
    ``has_next`` is set, because releasing a waiting step takes more statements and must
    commit with the success. Then it returns ``(False, False, True)``: a step waits, record
    in a transaction. ``.then()`` sets ``has_next`` under the same row lock, so it either comes
    first and is seen here, or comes after and finds the execution succeeded.
    """
    now = timezone.now()
    quote = connections[using].ops.quote_name
    tables = {m: quote(m._meta.db_table)
              for m in (TaskExecutionTry, TaskExecutionResult, TaskExecution)}
    params: list[Any] = []
    lock_sql = guard_sql = ""
    if unless_next:
        lock_sql = (f"x AS (SELECT has_next FROM {tables[TaskExecution]} WHERE id = %s "
                    "FOR NO KEY UPDATE), ")
        guard_sql = " AND NOT COALESCE((SELECT has_next FROM x), false)"
        params.append(message.execution_id)
    params += [cast(str, TryStatus.SUCCESS), now]
    progress_sql = ""
    if progress is not None:  # the last progress the throttle held back
        column, cast_sql, value = prepared(TaskExecutionTry, "progress", progress, using)
        progress_sql = f", {column} = {cast_sql}"
        params.append(value)
    params += [message.try_id, token, cast(str, TryStatus.RUNNING)]
    value_col, value_cast, value_param = prepared(TaskExecutionResult, "value", stored, using)
    params += [message.execution_id, value_param, is_repr, now,
               cast(str, ExecutionStatus.SUCCESS), now, message.execution_id,
               _PENDING]
    sql = (
        f"WITH {lock_sql}t AS (UPDATE {tables[TaskExecutionTry]} SET status = %s, "
        f"finished_at = %s, lease_expires_at = NULL{progress_sql} "
        f"WHERE id = %s AND claim_token = %s AND status = %s{guard_sql} RETURNING id), "
        f"r AS (INSERT INTO {tables[TaskExecutionResult]} "
        f"(execution_id, task_try_id, {value_col}, is_repr, created_at) "
        f"SELECT %s, t.id, {value_cast}, CAST(%s AS boolean), CAST(%s AS timestamptz) "
        "FROM t RETURNING id), "
        f"e AS (UPDATE {tables[TaskExecution]} SET status = %s, finished_at = %s "
        "WHERE id = %s AND status = %s AND EXISTS (SELECT 1 FROM t) RETURNING has_next) "
        "SELECT EXISTS (SELECT 1 FROM t), EXISTS (SELECT 1 FROM e), "
        + ("COALESCE((SELECT has_next FROM x), false)" if unless_next
           else "(SELECT has_next FROM e)")
    )
    return fetch_one(sql, params, using)


def _superseded(message: TaskMessage) -> Outcome:
    logger.warning(
        "Try %s of %s (%s) was taken over by another delivery while it ran; "
        "its outcome is not recorded",
        message.try_number, message.execution_uuid, message.task_name,
    )
    return _outcome(message, OutcomeStatus.SUPERSEDED, False)


def error_fields(exc: BaseException) -> dict[str, str]:
    """The error columns of a failed try: type, message and traceback, bounded."""
    error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
    formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "error_type": error_type[:255],
        "error_message": str(exc)[:_MAX_ERROR_MESSAGE],
        "traceback": formatted[-_MAX_TRACEBACK:],
    }


def record_failure(
    message: TaskMessage, token: uuid.UUID, exc: BaseException, *,
    retry_in: float | None, duration: float = 0.0, progress: dict[str, Any] | None = None,
) -> Outcome:
    """Record a failed try: with ``retry_in`` seconds, write the next try (due then) and send
    its message; with ``None``, fail the execution for good (chain rest skipped, group
    failed). One transaction.

    When the task raised ``TaskCancelled``, or a cancel was requested while it ran, the
    execution is cancelled instead and never retried. The execution row is locked first (as
    ``cancel`` does), so a cancel request either comes before and is seen here, or comes
    after and finds the next try queued and cancels it.
    """
    error = error_fields(exc)
    with transaction.atomic():
        flag = (
            TaskExecution.objects.select_for_update()
            .filter(pk=message.execution_id)
            .values_list("cancel_requested_at", flat=True)
            .first()
        )
        cancelled = isinstance(exc, TaskCancelled) or flag is not None
        try_status = TryStatus.CANCELLED if cancelled else TryStatus.FAILED
        if not _finish_try(message, token, progress, status=try_status, **error):
            return _superseded(message)
        if cancelled:
            rows = update_returning(
                TaskExecution.objects.filter(
                    pk=message.execution_id, status=ExecutionStatus.PENDING
                ),
                ["has_next", "group_id"],
                status=ExecutionStatus.CANCELLED,
                finished_at=timezone.now(),
                cancel_requested_at=Coalesce(F("cancel_requested_at"), Value(timezone.now())),
            )
            if rows:
                _ended(message.execution_id, *rows[0])
            status = OutcomeStatus.CANCELLED
            retry_in = None
        elif retry_in is not None:
            next_try = TaskExecutionTry.objects.create(
                execution_id=message.execution_id,
                number=message.try_number + 1,
                not_before=timezone.now() + timedelta(seconds=retry_in),
            )
            outbox.send([dataclasses.replace(
                message, try_id=next_try.pk, try_number=next_try.number
            )])
            status = OutcomeStatus.RETRY
        else:
            rows = update_returning(
                TaskExecution.objects.filter(
                    pk=message.execution_id, status=ExecutionStatus.PENDING
                ),
                ["has_next"],
                status=ExecutionStatus.FAILED,
                finished_at=timezone.now(),
            )
            if rows and rows[0][0]:
                skip_after(message.execution_id)
            if rows and message.group_id is not None:
                member_failed(message.group_id)
            status = OutcomeStatus.FAILED
        _finished(message, status, duration, error_type=error["error_type"],
                  error_message=error["error_message"], retry_in=retry_in)
    if status == OutcomeStatus.RETRY:
        return _outcome(message, status, True, retry_after=retry_in, detail=error["error_type"])
    return _outcome(message, status, True, detail=error["error_type"])


def _ended(execution_id: int, has_next: bool, group_id: int | None) -> None:
    """What follows an execution that ended without success (cancelled, expired): its later
    chain steps are skipped and its group fails."""
    if has_next:
        skip_after(execution_id)
    if group_id is not None:
        member_failed(group_id)


# --- task control: cancel, expire, progress -----------------------------------------------


def cancel(execution_id: int) -> bool:
    """Cancel an execution: True when it will not run, or is running and was asked to stop.

    Waiting and scheduled executions are cancelled outright. A pending one is flagged first
    (locking its row) and then its queued try is cancelled: the try row is where a concurrent
    claim is decided, so of a cancel and a claim exactly one wins. If the claim won, the flag
    stays and the running task sees ``is_cancelled()``; it is never retried. Later chain
    steps are skipped and the group (if any) fails. False when it already finished.
    """
    now = timezone.now()
    with transaction.atomic():
        rows = update_returning(
            TaskExecution.objects.filter(pk=execution_id, status__in=_RELEASABLE),
            ["has_next", "group_id"],
            status=ExecutionStatus.CANCELLED, finished_at=now, cancel_requested_at=now,
        )
        if rows:
            _ended(execution_id, *rows[0])
            return True
        flagged = update_returning(
            TaskExecution.objects.filter(pk=execution_id, status=ExecutionStatus.PENDING),
            ["has_next", "group_id"],
            cancel_requested_at=Coalesce(F("cancel_requested_at"), Value(now)),
        )
        if not flagged:
            return False
        if TaskExecutionTry.objects.filter(
            execution_id=execution_id, status=TryStatus.QUEUED
        ).update(status=TryStatus.CANCELLED, finished_at=now):
            TaskExecution.objects.filter(pk=execution_id).update(
                status=ExecutionStatus.CANCELLED, finished_at=now
            )
            _ended(execution_id, *flagged[0])
    return True


def cancel_requested(execution_id: int) -> bool:
    """Whether ``cancel()`` was called for this execution."""
    return TaskExecution.objects.filter(
        pk=execution_id, cancel_requested_at__isnull=False
    ).exists()


def expire(message: TaskMessage) -> Outcome | None:
    """End the execution of a first try whose ``expires`` time has passed, unless the try
    was claimed already (then ``None``: the caller goes on to claim, which says why not).

    Rows are locked in the order ``cancel`` uses (execution, then try), so the two cannot
    deadlock; the try's conditional ``UPDATE`` decides against a concurrent claim.
    """
    now = timezone.now()
    with transaction.atomic():
        locked = (
            TaskExecution.objects.select_for_update()
            .filter(pk=message.execution_id, status=ExecutionStatus.PENDING)
            .values_list("pk", flat=True)
            .first()
        )
        if locked is None:
            return None
        if not TaskExecutionTry.objects.filter(
            pk=message.try_id, execution_id=message.execution_id, number=message.try_number,
            status=TryStatus.QUEUED,
        ).update(status=TryStatus.EXPIRED, finished_at=now):
            return None
        rows = update_returning(
            TaskExecution.objects.filter(pk=message.execution_id),
            ["has_next", "group_id"],
            status=ExecutionStatus.EXPIRED, finished_at=now,
        )
        if rows:
            _ended(message.execution_id, *rows[0])
    logger.info("Execution %s of %s expired before it started", message.execution_uuid,
                message.task_name)
    return _outcome(message, OutcomeStatus.EXPIRED, True, detail="execution expired")


def write_progress(try_id: int, token: uuid.UUID, progress: dict[str, Any]) -> bool:
    """Store the progress of a running try; only the holder of its claim can. One UPDATE."""
    return bool(
        TaskExecutionTry.objects.filter(
            pk=try_id, claim_token=token, status=TryStatus.RUNNING
        ).update(progress=progress)
    )


def _finished(message: TaskMessage, status: OutcomeStatus, duration: float, *,
              error_type: str = "", error_message: str = "", retry_in: float | None = None,
              return_value: Any = None) -> None:
    if signals.task_finished.has_listeners():
        signals.task_finished.send(
            sender=registry.get(message.task_name), **_event(message), status=status.value,
            duration=duration, error_type=error_type, error_message=error_message,
            retry_in=retry_in, return_value=return_value,
        )
