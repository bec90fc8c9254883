"""Writing executions and sending their first tries: enqueue, release, republish.

::

    spec ──enqueue──▶ pending (first try queued, message sent; an eta within the queue's
                  │          hold limit: the try is due then, held by its receiver)
                  └─▶ scheduled (eta further away) ──release──▶ pending
                  └─▶ waiting (chain step, group callback) ──release──▶ pending

- **enqueue** writes one execution from an ``ExecutionSpec`` (validated by the public API).
  With a ``unique_key``, while an open execution has the key, that one is returned and
  nothing is written (a partial unique index decides between concurrent callers).
- **enqueue_many** writes many in bulk (``map``, the beat): one statement per 5,000 on
  PostgreSQL, one handover to the transport.
- **release** moves waiting/scheduled executions to pending with one conditional
  ``UPDATE ... RETURNING``, so two releases of the same execution send it once.
- **republish** sends queued tries again (lost-message recovery); claiming is idempotent, so
  this never runs a try twice.

Messages go to the outbox, which sends them after the transaction commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import IntegrityError, router, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from .. import outbox, signals, timing
from ..db import insert_linked, insert_many_linked, update_returning
from ..messages import TaskMessage
from ..models import (
    OPEN_STATUSES,
    ExecutionStatus,
    TaskExecution,
    TaskExecutionTry,
    TaskGroup,
)
from ..spec import ExecutionSpec

#: Rows per INSERT statement of the bulk paths on other databases than PostgreSQL.
BULK_BATCH = 500
#: Columns a message needs, read back by the UPDATE that releases an execution.
MESSAGE_FIELDS = [
    "id", "uuid", "task_name", "queue_name", "args", "kwargs", "max_retries", "group_id",
    "expires_at", "expires_after",
]
RELEASABLE = [ExecutionStatus.WAITING, ExecutionStatus.SCHEDULED]
#: The enum member, typed as the ``str`` it is (django-stubs types tuple-valued members as
#: tuples).
PENDING = cast(str, ExecutionStatus.PENDING)


def enqueue(spec: ExecutionSpec) -> TaskExecution:
    """Write the execution ``spec`` describes (and its first try when it is due now) and
    send it. With a ``unique_key`` an open execution of that key is returned instead."""
    if spec.unique_key is None:
        return _write(spec)
    for _ in range(3):
        try:
            with transaction.atomic():  # a savepoint inside the caller's transaction
                return _write(spec)
        except IntegrityError:
            # Another open execution has the key: return it. When it finished in between,
            # the key is free again and the next round writes ours.
            existing = TaskExecution.objects.filter(
                unique_key=spec.unique_key, status__in=OPEN_STATUSES
            ).first()
            if existing is not None:
                return existing
    raise IntegrityError(f"could not enqueue {spec.task_name} with unique_key "
                         f"{spec.unique_key!r}")


def _status(spec: ExecutionSpec, now: datetime, sink: outbox.Outbox) -> str:
    if spec.waits:
        return cast(str, ExecutionStatus.WAITING)
    if (spec.eta is not None and spec.eta > now
            and (sink.runs_in_process or not timing.publish_now(spec.eta, now, spec.queue_name))):
        return cast(str, ExecutionStatus.SCHEDULED)
    return PENDING


def positions(group_id: int, count: int) -> int:
    """Reserve ``count`` member positions of a ``pass_results`` group; the first one. One
    conditional ``UPDATE ... RETURNING``, so concurrent callers get disjoint ranges."""
    rows = update_returning(TaskGroup.objects.filter(pk=group_id), ["next_position"],
                            next_position=F("next_position") + count)
    return int(rows[0][0]) - count if rows else 0


def _write(spec: ExecutionSpec) -> TaskExecution:
    sink = outbox.get_outbox()
    now = timezone.now()
    status = _status(spec, now, sink)
    execution = TaskExecution(
        task_name=spec.task_name, queue_name=spec.queue_name, args=list(spec.args),
        kwargs=dict(spec.kwargs), status=status, max_retries=spec.max_retries, eta=spec.eta,
        previous_id=spec.previous_id, group_id=spec.group_id, expires_at=spec.expires_at,
        expires_after=spec.expires_after, unique_key=spec.unique_key or "",
        pipe=spec.pipe, on_failure=spec.on_failure, handler_of_id=spec.handler_of,
        position=positions(spec.group_id, 1) if spec.ordered and spec.group_id else None,
        concurrency_key=spec.concurrency_key or "",
    )
    if status == PENDING:
        # A short countdown is published now and held until due where it is received
        # (``timing``): the first try is due at the eta.
        first_try = TaskExecutionTry(execution=execution, task_name=spec.task_name, number=1,
                                     not_before=max(spec.eta or now, now))
        # PostgreSQL: both rows in one statement, atomic by itself, so outside a transaction
        # no BEGIN/COMMIT either (one round trip); the message still leaves after the commit.
        if not insert_linked(execution, first_try, "execution"):
            with transaction.atomic(savepoint=False):
                execution.save(force_insert=True)
                first_try.execution = execution
                first_try.save(force_insert=True)
                _send(sink, [execution], [first_try.pk], [1])
        else:
            _send(sink, [execution], [first_try.pk], [1])
        if sink.runs_inline:
            execution.refresh_from_db()  # it ran inline: show its final status
        return execution
    with transaction.atomic(savepoint=False):
        execution.save(force_insert=True)
        if status == ExecutionStatus.SCHEDULED:
            sink.scheduled(outbox.Recorded(
                task_name=spec.task_name, queue_name=spec.queue_name, args=list(spec.args),
                kwargs=dict(spec.kwargs), execution_id=execution.pk,
                execution_uuid=execution.uuid, group_id=spec.group_id, try_number=None,
                eta=spec.eta,
            ))
    return execution


def _send(sink: outbox.Outbox, executions: Sequence[Any], try_ids: Sequence[int],
          numbers: Sequence[int]) -> None:
    """Announce executions whose tries were just written and hand their messages over."""
    messages = [
        TaskMessage.of(execution, try_id, number)
        for execution, try_id, number in zip(executions, try_ids, numbers, strict=True)
    ]
    signals.enqueued(messages, at_once=sink.runs_inline)
    sink.send(messages)


def enqueue_many(
    specs: Sequence[ExecutionSpec], *, uuids: Sequence[uuid.UUID] | None = None,
    returning: bool = True,
) -> list[TaskExecution]:
    """Write and send many pending executions in bulk (fan-out, beat schedules): on
    PostgreSQL one statement per 5,000, elsewhere two INSERTs per ``BULK_BATCH``; one
    handover to the transport. The specs share one group (``map(group=)``).

    ``uuids`` gives the executions' uuids when the caller recorded them beforehand (the
    beat's slot rows). ``returning=False`` returns nothing and builds no model instances
    (the beat: 10,000 of them are a noticeable part of a minute's cost).
    """
    now = timezone.now()
    rows: list[dict[str, Any]] = [
        {"uuid": uuids[index] if uuids is not None else uuid.uuid4(),
         "task_name": spec.task_name, "queue_name": spec.queue_name, "args": spec.args,
         "kwargs": spec.kwargs, "expires_at": spec.expires_at, "max_retries": spec.max_retries}
        for index, spec in enumerate(specs)
    ]
    if any(spec.concurrency_key for spec in specs):  # a column only the limited tasks need
        for row, spec in zip(rows, specs, strict=True):
            row["concurrency_key"] = spec.concurrency_key or ""
    common: dict[str, Any] = {
        "status": PENDING, "group_id": specs[0].group_id if specs else None, "created_at": now,
    }
    if specs and specs[0].on_failure is not None:  # one task: the same handlers for all
        common["on_failure"] = specs[0].on_failure
    if specs and specs[0].ordered and common["group_id"] is not None:  # map order
        first = positions(common["group_id"], len(specs))
        for index, row in enumerate(rows):
            row["position"] = first + index
    sink = outbox.get_outbox()
    with transaction.atomic(savepoint=False):
        ids = _insert_first_tries(rows, common, now)
        executions = (_loaded(rows, common, [execution_id for execution_id, _ in ids])
                      if returning else [])
        messages = [
            TaskMessage(
                execution_id=execution_id, execution_uuid=row["uuid"], try_id=try_id,
                try_number=1, task_name=row["task_name"], queue_name=row["queue_name"],
                args=row["args"], kwargs=row["kwargs"], max_retries=row["max_retries"],
                group_id=common["group_id"], expires_at=row["expires_at"],
            )
            for row, (execution_id, try_id) in zip(rows, ids, strict=True)
        ]
        signals.enqueued(messages, at_once=sink.runs_inline)
        sink.send(messages)
    if sink.runs_inline:
        for execution in executions:
            execution.refresh_from_db(fields=["status", "finished_at"])
    return executions if returning else []


def _insert_first_tries(
    rows: list[dict[str, Any]], common: dict[str, Any], now: datetime
) -> list[tuple[int, int]]:
    """Write an execution per row (its varying fields, plus ``common``) and a first try for
    each; return ``(execution id, try id)`` pairs in order."""
    first_try = {"number": 1, "enqueued_at": now, "not_before": now}
    pairs = insert_many_linked(
        TaskExecution, rows, common, "uuid", TaskExecutionTry, "execution", first_try,
        copied=("task_name",),
    )
    if pairs is not None:
        return pairs
    executions = TaskExecution.objects.bulk_create(
        [TaskExecution(**row, **common) for row in rows], batch_size=BULK_BATCH
    )
    tries = TaskExecutionTry.objects.bulk_create(
        [TaskExecutionTry(execution=e, task_name=e.task_name, **first_try) for e in executions],
        batch_size=BULK_BATCH
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
    ).filter(status__in=RELEASABLE)
    with transaction.atomic(savepoint=False):
        if not (ids is not None and len(ids) == 1):
            pks = list(queryset.select_for_update().order_by("pk").values_list("pk", flat=True))
            if not pks:
                return []
            queryset = TaskExecution.objects.filter(pk__in=pks, status__in=RELEASABLE)
        rows = rows_of(update_returning(queryset, MESSAGE_FIELDS, status=PENDING))
        if not rows:
            return []
        _expire_from_release(rows)
        send_tries(rows, [1] * len(rows))
    return rows


def _expire_from_release(rows: list[TaskExecution]) -> None:
    """Steps that waited (chain steps, group callbacks) and whose task has ``expires=``
    expire that long after their release (``expires_after``, stored when they were written).
    One ``UPDATE`` per such step; none for tasks without the option."""
    now = timezone.now()
    for row in rows:
        if row.expires_at is None and row.expires_after is not None:
            row.expires_at = now + timedelta(seconds=row.expires_after)
            TaskExecution.objects.filter(pk=row.pk).update(expires_at=row.expires_at)


def rows_of(returned: list[tuple]) -> list[TaskExecution]:
    """Executions from ``MESSAGE_FIELDS`` rows an ``UPDATE ... RETURNING`` read back."""
    return [
        TaskExecution(status=PENDING, **dict(zip(MESSAGE_FIELDS, row, strict=True)))
        for row in returned
    ]


def send_tries(rows: list[TaskExecution], numbers: list[int]) -> None:
    """Write the tries numbered ``numbers`` of just-(re)opened executions and send them."""
    tries = TaskExecutionTry.objects.bulk_create(
        [TaskExecutionTry(execution=row, task_name=row.task_name, number=n)
         for row, n in zip(rows, numbers, strict=True)]
    )
    _send(outbox.get_outbox(), rows, [t.pk for t in tries], numbers)


def republish(tries: QuerySet[TaskExecutionTry], now: datetime) -> list[TaskMessage]:
    """Send the messages of ``tries`` again (lost-message recovery) and mark them
    republished at ``now``. Claiming is idempotent, so this never runs a try twice."""
    with transaction.atomic():
        marked = update_returning(tries, ["id", "execution_id", "number"], republished_at=now)
        executions = TaskExecution.objects.in_bulk([execution_id for _, execution_id, _ in marked])
        messages = [
            TaskMessage.of(executions[execution_id], pk, number)
            for pk, execution_id, number in marked
        ]
        outbox.send(messages)
    return messages
