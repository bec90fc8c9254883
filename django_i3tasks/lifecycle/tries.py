"""Running a try: claim it, record its outcome, give it back.

::

    queued ──claim (due)──▶ running ──record_success──▶ success  (execution: success)
                               │   ──record_failure──▶ failed   + next try queued (retry)
                               │                          └────▶ execution failed (no retry)
                               │   ──release_claim──▶ queued (worker stopping)
                               └── lease expired ──claim──▶ running (its worker died)

- **claim** is one conditional ``UPDATE``: of concurrent deliveries exactly one gets the
  claim token, and only the holder of the token can record the try.
- **record_success** / **record_failure** finish the try in one transaction with everything
  that follows it (the result, the execution's end, the next chain steps, the group count,
  ``on_success``, or the next try with its backoff). On PostgreSQL a success that nothing
  follows is one statement in autocommit, atomic by itself.
- **fail_unrunnable** ends, for good, the execution of a message this process cannot run
  (its task is not registered here), so the caller learns why instead of waiting.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import connections, router, transaction
from django.utils import timezone

from .. import outbox, queries, signals
from ..conf import get_settings
from ..db import (
    bound_cursor,
    claim_row,
    fetch_one,
    prepared,
    row_moment,
    unique_row,
    update_returning,
)
from ..exceptions import TaskCancelled
from ..messages import TaskMessage, to_json_value
from ..models import (
    ExecutionStatus,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TryStatus,
)
from ..outcome import Outcome, OutcomeStatus
from ..spec import ExecutionSpec
from . import admission
from .enqueue import PENDING, enqueue
from .graph import ENDED_FIELDS, ended, member_succeeded, release_next
from .handlers import Failure, error_text

logger = logging.getLogger(__name__)

_MAX_TRACEBACK = 64 * 1024
_MAX_ERROR_MESSAGE = 8 * 1024
_QUEUED = cast(str, TryStatus.QUEUED)
_RUNNING = cast(str, TryStatus.RUNNING)
_CLAIM_FIELDS: tuple[Any, Any] = (TaskExecutionTry._meta.get_field("started_at"),
                                   TaskExecutionTry._meta.get_field("claim_token"))


def claim(message: TaskMessage, lease_seconds: float | None = None,
          limits: admission.Limits | None = None, *, hold: float = 0.0) -> uuid.UUID | Outcome:
    """Claim the try ``message`` names: its claim token, or the outcome saying why not.

    Only a queued try whose backoff has passed, or a running try whose lease expired (its
    worker died), can be claimed. The lease lasts ``lease_seconds`` (default: the settings').
    A task with ``limits`` is admitted by them (``admission``; ``hold`` as there).
    """
    if limits is not None:
        admitted = admission.claim(message, limits, lease_seconds, hold=hold)
        return _unclaimed(message, timezone.now()) if admitted is None else admitted
    now = timezone.now()
    token = uuid.uuid4()
    connection = connections[router.db_for_write(TaskExecutionTry)]
    moment, token_field = _CLAIM_FIELDS
    at = moment.get_db_prep_value(now, connection)
    if lease_seconds is None:
        lease_seconds = get_settings().lease_seconds
    lease = moment.get_db_prep_value(now + timedelta(seconds=lease_seconds), connection)
    with bound_cursor(connection) as cursor:
        cursor.execute(queries.claim_try(connection), [
            _RUNNING, at, lease, token_field.get_db_prep_value(token, connection),
            message.try_id, message.execution_id, message.try_number,
            _QUEUED, at, _RUNNING, at,
        ])
        row, claimed = claim_row(cursor, connection)
    if not claimed:
        return _unclaimed(message, now)
    signals.started(message, due_at=row_moment(row))
    return token



def _unclaimed(message: TaskMessage, now: datetime) -> Outcome:
    """Why a try could not be claimed (reads only; this is the rare path)."""
    row = unique_row(
        TaskExecutionTry.objects.filter(
            pk=message.try_id,
            execution_id=message.execution_id,
            number=message.try_number,
            execution__uuid=message.execution_uuid,
        ).values("status", "not_before", "lease_expires_at")
    )
    if row is None:
        return Outcome.of(message, OutcomeStatus.UNKNOWN, True, detail="no such try")
    if row["status"] == TryStatus.CANCELLED:
        return Outcome.of(message, OutcomeStatus.CANCELLED, True, detail="execution cancelled")
    if row["status"] == TryStatus.EXPIRED:
        return Outcome.of(message, OutcomeStatus.EXPIRED, True, detail="execution expired")
    if row["status"] in (TryStatus.SUCCESS, TryStatus.FAILED):
        return Outcome.of(message, OutcomeStatus.DUPLICATE, True,
                          detail=f"try {row['status']}")
    if row["status"] == TryStatus.QUEUED and row["not_before"] > now:
        wait = (row["not_before"] - now).total_seconds()
        return Outcome.of(message, OutcomeStatus.NOT_DUE, False, retry_after=wait)
    lease = row["lease_expires_at"]
    wait = max(0.0, (lease - now).total_seconds()) if lease else 0.0
    return Outcome.of(message, OutcomeStatus.RUNNING, False, retry_after=wait)


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
    on_success: ExecutionSpec | None = None, duration: float = 0.0,
    progress: dict[str, Any] | None = None, limited: bool = False,
) -> Outcome:
    """Record a successful try and what follows it, atomically: in one transaction, or on
    PostgreSQL, when nothing follows it, in one statement without a transaction around it.

    ``on_success`` is the spec of the task to enqueue with the recorded value as its only
    argument. A try that finishes although a cancel was requested while it ran is a success:
    its work is done, and the request only asked it to stop early. A ``limited`` task's
    try frees its slot: the same transaction releases the next parked execution
    (``admission.release_parked``)."""
    stored, is_repr = to_json_value(value)
    using = router.db_for_write(TaskExecutionTry)
    connection = connections[using]
    if (connection.vendor == "postgresql" and connection.get_autocommit()
            and not connection.in_atomic_block and message.group_id is None and on_success is None
            and not limited
            and signals.package_receivers_only(signals.task_finished)):
        # Nothing needs a transaction around the statement (no group count, no on_success,
        # no project receiver of task_finished), so it runs alone, in autocommit: no BEGIN
        # and COMMIT round trips. The statement does nothing when a chain step waits for
        # this execution; then the transaction below records the try and releases the step.
        finished, _, step_waits = _succeed_in_one_statement(
            message, token, stored, is_repr, progress, using, unless_next=True
        )
        if finished:
            signals.finished(message, OutcomeStatus.SUCCESS.value, duration, return_value=stored)
            return Outcome.of(message, OutcomeStatus.SUCCESS, True)
        if not step_waits:
            return _superseded(message)
    with transaction.atomic(using=using):
        key = admission.lock(message) if limited else None
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
                execution_id=message.execution_id, task_try_id=message.try_id, value=stored,
                is_repr=is_repr,
            )
            rows = update_returning(
                TaskExecution.objects.filter(pk=message.execution_id, status=PENDING),
                ["has_next"], status=ExecutionStatus.SUCCESS, finished_at=timezone.now(),
            )
        if rows:
            if rows[0][0]:
                release_next(message.execution_id)
            if message.group_id is not None:
                member_succeeded(message.group_id)
            if on_success is not None:
                enqueue(dataclasses.replace(on_success, args=[stored]))
        if key is not None:
            admission.release_parked(message, key)
        signals.finished(message, OutcomeStatus.SUCCESS.value, duration, return_value=stored)
    return Outcome.of(message, OutcomeStatus.SUCCESS, True)


def _succeed_in_one_statement(
    message: TaskMessage, token: uuid.UUID, stored: Any, is_repr: bool,
    progress: dict[str, Any] | None, using: str, *, unless_next: bool = False,
) -> tuple[bool, bool, bool | None]:
    """PostgreSQL: ``queries.succeed_try``. Returns ``(finished, updated, has_next)``:
    whether the try was still ours and recorded, whether the execution was pending and
    ended, and its ``has_next``.

    With ``unless_next`` the statement runs outside a transaction and changes nothing when
    a chain step waits (releasing it takes more statements and must commit with the
    success); then it returns ``(False, False, True)``. ``.then()`` sets ``has_next`` under
    the same row lock, so it either comes first and is seen here, or comes after and finds
    the execution succeeded.
    """
    now = timezone.now()
    params: list[Any] = [message.execution_id] if unless_next else []
    params += [cast(str, TryStatus.SUCCESS), now]
    progress_cast = None
    if progress is not None:  # the last progress the throttle held back
        _, progress_cast, value = prepared(TaskExecutionTry, "progress", progress, using)
        params.append(value)
    params += [message.try_id, token, _RUNNING]
    value_col, value_cast, value_param = prepared(TaskExecutionResult, "value", stored, using)
    params += [message.execution_id, value_param, is_repr, now,
               cast(str, ExecutionStatus.SUCCESS), now, message.execution_id, PENDING]
    sql = queries.succeed_try(connections[using], progress_cast=progress_cast,
                              value_column=value_col, value_cast=value_cast,
                              unless_next=unless_next)
    return fetch_one(sql, params, using)


def _superseded(message: TaskMessage) -> Outcome:
    logger.warning(
        "Try %s of %s (%s) was taken over by another delivery while it ran; "
        "its outcome is not recorded",
        message.try_number, message.execution_uuid, message.task_name,
    )
    return Outcome.of(message, OutcomeStatus.SUPERSEDED, False)


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
    limited: bool = False,
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
        key = admission.lock(message) if limited else None  # before any row lock
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
        now = timezone.now()
        if cancelled:
            rows = update_returning(
                TaskExecution.objects.filter(pk=message.execution_id, status=PENDING),
                ENDED_FIELDS, status=ExecutionStatus.CANCELLED, finished_at=now,
                cancel_requested_at=flag or now,
            )
            if rows:
                has_next, group_id, handlers = rows[0]
                ended(message.execution_id, has_next, group_id, handlers,
                      _failure(message, "cancelled", error))
            status, retry_in = OutcomeStatus.CANCELLED, None
        elif retry_in is not None:
            next_try = TaskExecutionTry.objects.create(
                execution_id=message.execution_id, task_name=message.task_name,
                number=message.try_number + 1,
                not_before=now + timedelta(seconds=retry_in),
            )
            outbox.send([dataclasses.replace(
                message, try_id=next_try.pk, try_number=next_try.number
            )])
            status = OutcomeStatus.RETRY
        else:
            rows = update_returning(
                TaskExecution.objects.filter(pk=message.execution_id, status=PENDING),
                ENDED_FIELDS, status=ExecutionStatus.FAILED, finished_at=now,
            )
            if rows:
                has_next, group_id, handlers = rows[0]
                ended(message.execution_id, has_next, group_id, handlers,
                      _failure(message, "failed", error))
            status = OutcomeStatus.FAILED
        if key is not None:
            admission.release_parked(message, key)
        signals.finished(message, status.value, duration, error_type=error["error_type"],
                         error_message=error["error_message"], retry_in=retry_in)
    if status == OutcomeStatus.RETRY:
        return Outcome.of(message, status, True, retry_after=retry_in, detail=error["error_type"])
    return Outcome.of(message, status, True, detail=error["error_type"])


def _failure(message: TaskMessage, status: str, error: dict[str, str]) -> Failure:
    """The ``failure`` dict of the try being recorded, known without a query."""
    return Failure(message.execution_id, {
        "execution_uuid": str(message.execution_uuid), "task_name": message.task_name,
        "status": str(status), "error": error_text(error["error_type"], error["error_message"]),
        "tries": message.try_number,
    })


def fail_unrunnable(message: TaskMessage, exc: BaseException) -> Outcome:
    """End the execution of ``message`` for good because this process cannot run it (its
    task is not registered here): claimed like any try, so a duplicate delivery changes
    nothing, then failed without retry, with ``exc`` as the try's error."""
    claimed = claim(message)
    if isinstance(claimed, Outcome):
        return claimed
    return record_failure(message, claimed, exc, retry_in=None)
