"""Running one task message: the code path shared by the push view and the pull worker.

1. Claim the try with one conditional UPDATE: only a queued try that is due, or a running try
   whose lease expired (its worker died), can be claimed. A duplicate or concurrent delivery
   finds nothing to claim and is told why, without running anything.
2. Run the registered function (never anything a message names that is not registered).
3. Record the outcome in one transaction, guarded by the claim token: success (result,
   execution, chain, group, ``on_success``), or failure, which either writes the next try with
   its backoff and publishes a message for it, or fails the execution for good.

Retries are new messages, one per try: the current message is acknowledged, and the next
try's message answers "not due" (non-2xx for push, a longer lease for pull) until its backoff
has passed, so Pub/Sub's own redelivery does the waiting; there is no delayed delivery to use.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .conf import get_settings
from .db import update_returning
from .messages import TaskMessage
from .models import (
    ExecutionStatus,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TryStatus,
)
from .registry import registry
from .task import Task, TaskMetadata

logger = logging.getLogger(__name__)

_MAX_TRACEBACK = 64 * 1024
_MAX_ERROR_MESSAGE = 8 * 1024


class OutcomeStatus(str, enum.Enum):
    SUCCESS = "success"
    #: The try failed and a new try was scheduled.
    RETRY = "retry_scheduled"
    #: The try failed and no retries are left: the execution failed.
    FAILED = "failed"
    #: The try already finished: a redelivered or replayed message.
    DUPLICATE = "duplicate"
    #: Another delivery is running the try (its lease has not expired).
    RUNNING = "running"
    #: The try waits for its retry backoff.
    NOT_DUE = "not_due"
    #: No such try: cleaned up, or never written.
    UNKNOWN = "unknown_try"
    #: The try was taken over by another delivery while this one ran (lease expired).
    SUPERSEDED = "superseded"
    #: The message names a task this process does not know.
    REJECTED = "rejected"


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    #: Whether Pub/Sub should forget the message (2xx / ack) or deliver it again.
    ack: bool
    execution_uuid: uuid.UUID | None = None
    try_number: int | None = None
    detail: str = ""
    #: When redelivery is wanted: seconds until it makes sense.
    retry_after: float | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status.value}
        if self.execution_uuid is not None:
            body["execution"] = str(self.execution_uuid)
        if self.try_number is not None:
            body["try"] = self.try_number
        if self.detail:
            body["detail"] = self.detail
        if self.retry_after is not None:
            body["retry_after"] = round(self.retry_after, 3)
        return body


def backoff_seconds(try_number: int) -> float:
    """Delay before the try after ``try_number``: exponential, bounded by the settings."""
    conf = get_settings()
    if conf.force_sync:
        return 0.0
    delay = conf.retry_backoff_min_seconds * 2 ** (try_number - 1)
    return float(min(conf.retry_backoff_max_seconds, delay))


def run_message(
    message: TaskMessage, on_claim: Callable[[uuid.UUID], None] | None = None
) -> Outcome:
    """Claim, run and record the try a message names.

    ``on_claim`` receives the claim token before the task runs: the pull worker keeps it to
    give the try back (``release_claim``) if it must stop before the task finishes.
    """
    task = registry.get(message.task_name)
    if task is None:
        return Outcome(
            OutcomeStatus.REJECTED,
            ack=True,
            execution_uuid=message.execution_uuid,
            detail=f"task {message.task_name!r} is not registered",
        )
    now = timezone.now()
    token = uuid.uuid4()
    claimed = (
        TaskExecutionTry.objects.filter(
            Q(status=TryStatus.QUEUED, not_before__lte=now)
            | Q(status=TryStatus.RUNNING, lease_expires_at__lt=now),
            pk=message.try_id,
            execution_id=message.execution_id,
            number=message.try_number,
        ).update(
            status=TryStatus.RUNNING,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=get_settings().lease_seconds),
            claim_token=token,
            claims=F("claims") + 1,
        )
    )
    if not claimed:
        return _unclaimed(message, now)
    if on_claim is not None:
        on_claim(token)
    return _run_claimed(task, message, token)


def release_claim(try_id: int, token: uuid.UUID) -> bool:
    """Give a claimed, unfinished try back: queued and due, so its redelivered message runs
    it at once instead of waiting for the lease to expire. True when it was still ours."""
    return bool(
        TaskExecutionTry.objects.filter(
            pk=try_id, claim_token=token, status=TryStatus.RUNNING
        ).update(status=TryStatus.QUEUED, lease_expires_at=None, not_before=timezone.now())
    )


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
    if row["status"] in (TryStatus.SUCCESS, TryStatus.FAILED):
        return _outcome(message, OutcomeStatus.DUPLICATE, True, detail=f"try {row['status']}")
    if row["status"] == TryStatus.QUEUED and row["not_before"] > now:
        wait = (row["not_before"] - now).total_seconds()
        return _outcome(message, OutcomeStatus.NOT_DUE, False, retry_after=wait)
    lease = row["lease_expires_at"]
    wait = max(0.0, (lease - now).total_seconds()) if lease else 0.0
    return _outcome(message, OutcomeStatus.RUNNING, False, retry_after=wait)


def _run_claimed(task: Task, message: TaskMessage, token: uuid.UUID) -> Outcome:
    metadata = TaskMetadata(
        task_name=task.name,
        queue_name=message.queue_name,
        execution_uuid=message.execution_uuid,
        execution_id=message.execution_id,
        try_number=message.try_number,
        max_retries=message.max_retries,
        group_id=message.group_id,
    )
    logger.info(
        "Running %s (execution %s, try %s)",
        task.name, message.execution_uuid, message.try_number,
    )
    try:
        value = task.run(message.args, message.kwargs, metadata)
    except Exception as exc:  # noqa: BLE001 - any task error is recorded, not raised
        return _record_failure(message, token, exc)
    return _record_success(task, message, token, value)


def _json_value(value: Any) -> tuple[Any, bool]:
    """The value as stored: itself when JSON can carry it, else its ``repr``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value), True
    return value, False


def _finish_try(message: TaskMessage, token: uuid.UUID, **values: Any) -> bool:
    return bool(
        TaskExecutionTry.objects.filter(
            pk=message.try_id, claim_token=token, status=TryStatus.RUNNING
        ).update(finished_at=timezone.now(), lease_expires_at=None, **values)
    )


def _record_success(task: Task, message: TaskMessage, token: uuid.UUID, value: Any) -> Outcome:
    from . import chains, groups

    stored, is_repr = _json_value(value)
    with transaction.atomic():
        if not _finish_try(message, token, status=TryStatus.SUCCESS):
            return _superseded(message)
        TaskExecutionResult.objects.create(
            execution_id=message.execution_id,
            task_try_id=message.try_id,
            value=stored,
            is_repr=is_repr,
        )
        rows = update_returning(
            TaskExecution.objects.filter(pk=message.execution_id, status=ExecutionStatus.PENDING),
            ["has_next"],
            status=ExecutionStatus.SUCCESS,
            finished_at=timezone.now(),
        )
        if rows:
            if rows[0][0]:
                chains.release_next(message.execution_id)
            if message.group_id is not None:
                groups.member_succeeded(message.group_id)
            if task.on_success is not None:
                task.on_success.delay(stored)
    logger.info("Task %s succeeded (execution %s)", task.name, message.execution_uuid)
    logger.debug("Task %s returned %r", task.name, value)
    return _outcome(message, OutcomeStatus.SUCCESS, True)


def _superseded(message: TaskMessage) -> Outcome:
    logger.warning(
        "Try %s of %s (%s) was taken over by another delivery while it ran; "
        "its outcome is not recorded",
        message.try_number, message.execution_uuid, message.task_name,
    )
    return _outcome(message, OutcomeStatus.SUPERSEDED, False)


def _record_failure(message: TaskMessage, token: uuid.UUID, exc: Exception) -> Outcome:
    from . import chains, groups
    from .dispatch import send

    error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
    error = {
        "status": TryStatus.FAILED,
        "error_type": error_type[:255],
        "error_message": str(exc)[:_MAX_ERROR_MESSAGE],
        "traceback": traceback.format_exc()[-_MAX_TRACEBACK:],
    }
    retry = message.try_number <= message.max_retries
    with transaction.atomic():
        if not _finish_try(message, token, **error):
            return _superseded(message)
        if retry:
            delay = backoff_seconds(message.try_number)
            next_try = TaskExecutionTry.objects.create(
                execution_id=message.execution_id,
                number=message.try_number + 1,
                not_before=timezone.now() + timedelta(seconds=delay),
            )
            send([dataclasses.replace(message, try_id=next_try.pk, try_number=next_try.number)])
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
                chains.skip_after(message.execution_id)
            if rows and message.group_id is not None:
                groups.member_failed(message.group_id)
    if retry:
        logger.warning(
            "Task %s failed (execution %s, try %s, %s); retrying in %.1f s",
            message.task_name, message.execution_uuid, message.try_number, error_type, delay,
        )
        return _outcome(message, OutcomeStatus.RETRY, True, retry_after=delay,
                        detail=error_type)
    logger.error(
        "Task %s failed for good (execution %s, try %s, %s)",
        message.task_name, message.execution_uuid, message.try_number, error_type,
    )
    return _outcome(message, OutcomeStatus.FAILED, True, detail=error_type)
