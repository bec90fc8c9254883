"""Task control: cancel, expire, progress, and the admin's retry.

::

    waiting / scheduled ──cancel──▶ cancelled
    pending, try queued ──cancel──▶ cancelled (try cancelled: a later delivery finds nothing)
    pending, try running ──cancel──▶ flagged (is_cancelled(); never retried)
    pending, first try queued, past expires ──expire──▶ expired
    failed ──retry (admin)──▶ pending (a new try; skipped steps wait again)

Rows are locked in one order everywhere (the execution, then its try), so cancel, expire and
``record_failure`` cannot deadlock; the try row's conditional ``UPDATE`` decides between a
cancel or an expiry and a concurrent claim.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import F, Max, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..db import update_returning
from ..messages import TaskMessage
from ..models import OPEN_STATUSES, ExecutionStatus, TaskExecution, TaskExecutionTry, TryStatus
from ..outcome import Outcome, OutcomeStatus
from .enqueue import MESSAGE_FIELDS, RELEASABLE, rows_of, send_tries
from .graph import ENDED_FIELDS, ended, unskip_after

logger = logging.getLogger(__name__)


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
            TaskExecution.objects.filter(pk=execution_id, status__in=RELEASABLE),
            ENDED_FIELDS,
            status=ExecutionStatus.CANCELLED, finished_at=now, cancel_requested_at=now,
        )
        if rows:
            # A parked execution (``admission``) has a queued try: a later delivery must
            # find nothing to claim.
            TaskExecutionTry.objects.filter(execution_id=execution_id,
                                            status=TryStatus.QUEUED).update(
                status=TryStatus.CANCELLED, finished_at=now)
            ended(execution_id, *rows[0])
            return True
        flagged = update_returning(
            TaskExecution.objects.filter(pk=execution_id, status=ExecutionStatus.PENDING),
            ENDED_FIELDS,
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
            ended(execution_id, *flagged[0])
    return True


def cancel_requested(execution_id: int) -> bool:
    """Whether ``cancel()`` was called for this execution."""
    return TaskExecution.objects.filter(
        pk=execution_id, cancel_requested_at__isnull=False
    ).exists()


def expire(message: TaskMessage) -> Outcome | None:
    """End the execution of a first try whose ``expires`` time has passed, unless the try
    was claimed already (then ``None``: the caller goes on to claim, which says why not)."""
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
            ENDED_FIELDS,
            status=ExecutionStatus.EXPIRED, finished_at=now,
        )
        if rows:
            ended(message.execution_id, *rows[0])
    logger.info("Execution %s of %s expired before it started", message.execution_uuid,
                message.task_name)
    return Outcome.of(message, OutcomeStatus.EXPIRED, True, detail="execution expired")


def write_progress(try_id: int, token: uuid.UUID, progress: dict[str, Any]) -> bool:
    """Store the progress of a running try; only the holder of its claim can. One UPDATE."""
    return bool(
        TaskExecutionTry.objects.filter(
            pk=try_id, claim_token=token, status=TryStatus.RUNNING
        ).update(progress=progress)
    )


def retry(executions: Iterable[int] | QuerySet[TaskExecution]) -> list[TaskExecution]:
    """Run failed executions once more (the admin's "retry" action); nothing for none.

    Each gets one new try; steps that were skipped because it failed wait for it again. A
    failed group stays failed: its callback was given up when the member failed. An
    execution whose ``unique_key`` another open execution holds is left failed.
    """
    if isinstance(executions, QuerySet):
        queryset = executions
    else:
        ids = list(executions)
        if not ids:
            return []
        queryset = TaskExecution.objects.filter(pk__in=ids)
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
        if not pks:
            return []
        rows = rows_of(update_returning(
            TaskExecution.objects.filter(pk__in=pks, status=ExecutionStatus.FAILED),
            MESSAGE_FIELDS, status=ExecutionStatus.PENDING, finished_at=None,
        ))
        last = dict(
            TaskExecutionTry.objects.filter(execution_id__in=[r.pk for r in rows])
            .values("execution_id")
            .annotate(last=Max("number"))
            .values_list("execution_id", "last")
        )
        unskip_after([row.pk for row in rows])
        if rows:
            send_tries(rows, [last.get(row.pk, 0) + 1 for row in rows])
    return rows
