"""Admission: a task's ``concurrency_limit`` and ``rate_limit``, decided in the claim.

::

    pending ──claim, within the limits──▶ try running          (execution stays pending)
    pending ──claim, over a limit──▶ waiting, wait_reason "concurrency:KEY" / "rate:KEY"
                                     (no try used, nothing failed, no retry consumed)
    waiting ──a try of the same task and key finishes──▶ pending, oldest first
                                     (its queued try's message is sent again)
    waiting ──its message delivered again, within the limits──▶ try running, pending

- **claim** is ``queries.claim_limited``: the claim's conditional ``UPDATE`` with the counts
  in its ``WHERE``. On PostgreSQL it runs under a transaction-scoped advisory lock of the
  task and key, so concurrent claims of one key are decided one after the other (two of
  them cannot both see the last free slot); on SQLite one statement is atomic by itself.
- A running try counts while its lease lasts: a try whose worker died frees its slot when
  the lease expires, with nothing to clean up.
- **release_parked** runs in the transaction that records a finishing try, under the same
  lock, so a delivery parking its execution either comes first (and is released here) or
  comes after (and sees the slot free). A limited task never waits for Pub/Sub's backoff.

``KEY`` is the execution's ``concurrency_key``, or the task's name when it has none.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import connections, router, transaction
from django.utils import timezone

from .. import outbox, queries, signals
from ..conf import get_settings
from ..db import bound_cursor, claim_row, fetch_one, row_moment
from ..messages import TaskMessage
from ..models import ExecutionStatus, TaskExecution, TaskExecutionTry, TryStatus
from ..outcome import Outcome, OutcomeStatus
from .enqueue import PENDING

#: The first key of PostgreSQL advisory locks taken here ("i3" in ASCII).
LOCK_SPACE = 0x6933
_WAITING = cast(str, ExecutionStatus.WAITING)
_RUNNING = cast(str, TryStatus.RUNNING)
_QUEUED = cast(str, TryStatus.QUEUED)
_CLAIM_FIELDS: tuple[Any, Any] = (TaskExecutionTry._meta.get_field("started_at"),
                                   TaskExecutionTry._meta.get_field("claim_token"))


@dataclass(frozen=True)
class Limits:
    """A task's limits: ``concurrency`` tries at once, ``rate`` = (starts, period seconds)."""

    concurrency: int | None = None
    rate: tuple[int, float] | None = None


def lock(message: TaskMessage) -> str:
    """The execution's ``concurrency_key``; on PostgreSQL, also take the advisory lock of its
    task and key and the execution's row lock until the transaction ends. Called first in
    the transaction: every locker takes the advisory lock before any row lock, and the
    execution's row before its try's (the order ``cancel`` and ``record_failure`` use), so
    no two of them deadlock."""
    using = router.db_for_write(TaskExecution)
    sql = queries.lock_concurrency_key(connections[using], LOCK_SPACE)
    row = fetch_one(sql, [message.execution_id], using)
    return str(row[0]) if row is not None else ""


def claim(message: TaskMessage, limits: Limits, lease_seconds: float | None = None, *,
          hold: float = 0.0) -> uuid.UUID | Outcome | None:
    """Claim the try ``message`` names if the task's limits admit it: its claim token, the
    ``OVER_LIMIT`` outcome, or ``None`` when the try itself cannot be claimed (finished,
    running, not due: ``tries.claim`` says why). Over a limit the execution is parked
    (``waiting``, with its reason) and ``retry_after`` says when a slot may be free; a rate
    wait within ``hold`` seconds is not parked (the caller waits it out and claims again)."""
    using = router.db_for_write(TaskExecutionTry)
    connection = connections[using]
    moment, token_field = _CLAIM_FIELDS
    if lease_seconds is None:
        lease_seconds = get_settings().lease_seconds
    token = uuid.uuid4()
    with transaction.atomic(using=using):
        key = lock(message)
        now = timezone.now()
        at = moment.get_db_prep_value(now, connection)
        params: list[Any] = [
            _RUNNING, at, moment.get_db_prep_value(now + timedelta(seconds=lease_seconds),
                                                   connection),
            token_field.get_db_prep_value(token, connection), message.try_id,
            message.execution_id, message.try_number, _QUEUED, at, _RUNNING, at,
        ]
        if limits.concurrency is not None:
            params += [message.task_name, key, _RUNNING, at, limits.concurrency]
        if limits.rate is not None:
            since = moment.get_db_prep_value(now - timedelta(seconds=limits.rate[1]), connection)
            params += [message.task_name, key, since, limits.rate[0]]
        sql = queries.claim_limited(connection, concurrency=limits.concurrency is not None,
                                    rate=limits.rate is not None)
        with bound_cursor(connection) as cursor:
            cursor.execute(sql, params)
            row, claimed = claim_row(cursor, connection)
        if claimed:
            # Admitted: a parked execution runs again (pending, no reason).
            TaskExecution.objects.filter(pk=message.execution_id, status=_WAITING).exclude(
                wait_reason="").update(status=PENDING, wait_reason="")
        else:
            outcome = _refused(message, limits, key, now, hold)
    if claimed:
        signals.started(message, due_at=row_moment(row))
        return token
    return outcome


def _claimable(message: TaskMessage, now: datetime) -> bool:
    """Whether the try could be claimed but for the limits."""
    row = (TaskExecutionTry.objects.filter(pk=message.try_id, execution_id=message.execution_id,
                                           number=message.try_number)
           .values("status", "not_before", "lease_expires_at").first())
    if row is None:
        return False
    if row["status"] == TryStatus.QUEUED:
        return bool(row["not_before"] <= now)
    lease = row["lease_expires_at"]
    return row["status"] == TryStatus.RUNNING and lease is not None and lease < now


def _refused(message: TaskMessage, limits: Limits, key: str, now: datetime,
             hold: float) -> Outcome | None:
    """Why a claim within the lock failed: the try's own state (``None``), or a limit."""
    if not _claimable(message, now):
        return None
    label = key or message.task_name
    of_key = TaskExecutionTry.objects.filter(execution__task_name=message.task_name,
                                             execution__concurrency_key=key)
    wait: float | None = None
    reason = ""
    if limits.concurrency is not None:
        leases = sorted(of_key.filter(status=TryStatus.RUNNING, lease_expires_at__gte=now)
                        .values_list("lease_expires_at", flat=True))
        if len(leases) >= limits.concurrency:
            reason = f"concurrency:{label}"
            wait = (leases[0] - now).total_seconds()
    if not reason and limits.rate is not None:
        starts, period = limits.rate
        window = sorted(of_key.filter(started_at__gt=now - timedelta(seconds=period))
                        .values_list("started_at", flat=True))
        reason = f"rate:{label}"
        # The next start is allowed when enough of these have left the window.
        oldest = window[max(0, len(window) - starts)] if window else now
        wait = max(0.001, (oldest + timedelta(seconds=period) - now).total_seconds())
        if wait <= hold:  # not parked: "not due" until then, and held by the caller
            return Outcome.of(message, OutcomeStatus.NOT_DUE, False, detail=reason,
                              retry_after=wait)
    if not reason:  # free again (SQLite: a finishing try committed in between): not parked
        return Outcome.of(message, OutcomeStatus.NOT_DUE, False, retry_after=0.05)
    TaskExecution.objects.filter(pk=message.execution_id, status__in=[PENDING, _WAITING]).update(
        status=_WAITING, wait_reason=reason[:255])
    return Outcome.of(message, OutcomeStatus.OVER_LIMIT, False, detail=reason,
                      retry_after=max(1.0, wait or 0.0))


def release_parked(message: TaskMessage, key: str) -> None:
    """A try of this task and key finished (in the caller's transaction, which holds the
    key's lock): send the oldest execution parked by the concurrency limit again."""
    parked = (TaskExecution.objects.filter(
        task_name=message.task_name, concurrency_key=key, status=_WAITING,
        wait_reason__startswith="concurrency:").order_by("pk").first())
    if parked is None:
        return
    if not TaskExecution.objects.filter(pk=parked.pk, status=_WAITING).exclude(
            wait_reason="").update(status=PENDING, wait_reason=""):
        return
    queued = (TaskExecutionTry.objects.filter(execution_id=parked.pk, status=TryStatus.QUEUED)
              .order_by("-number").values_list("pk", "number").first())
    if queued is not None:
        outbox.send([TaskMessage.of(parked, queued[0], queued[1])])
