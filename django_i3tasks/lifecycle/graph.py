"""Chains and groups: what an execution's end releases, skips or counts.

::

    chain step:  waiting ──previous succeeded──▶ pending (released once)
                 waiting ──previous failed, cancelled, expired or skipped──▶ skipped
                 skipped ──previous retried (admin)──▶ waiting

    group:       pending ──N-th member succeeded──▶ success (callback released once)
                 pending ──a member ended without success──▶ failed (callback skipped)

- **add_step** writes a step *waiting* under the previous execution's row lock
  (``has_next`` is set by the same ``UPDATE``); whoever comes second releases it: this call
  when the previous step already succeeded, else the finishing previous step. So a step is
  neither lost nor dispatched twice.
- **member_succeeded** counts with one conditional ``UPDATE ... RETURNING``; only the
  transaction that counts the last member sees the group turn to success and releases the
  callback.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from ..db import update_returning
from ..exceptions import InvalidTaskOption
from ..models import ExecutionStatus, GroupStatus, TaskExecution, TaskGroup
from ..spec import ExecutionSpec
from .enqueue import enqueue, release

_ENDED = (ExecutionStatus.FAILED, ExecutionStatus.SKIPPED, ExecutionStatus.CANCELLED,
          ExecutionStatus.EXPIRED)


def add_step(previous: TaskExecution, spec: ExecutionSpec) -> TaskExecution:
    """Write ``spec`` to run after ``previous`` succeeded (see the module's docstring)."""
    with transaction.atomic():
        rows = update_returning(
            TaskExecution.objects.filter(pk=previous.pk), ["status"], has_next=True
        )
        if not rows:
            raise TaskExecution.DoesNotExist(f"execution {previous.uuid} no longer exists")
        (status,) = rows[0]
        step = enqueue(spec)
        if status == ExecutionStatus.SUCCESS:
            release([step.pk])
            step.refresh_from_db(fields=["status"])
        elif status in _ENDED:
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
    """These waiting executions, and every step waiting after them, never run."""
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


def ended(execution_id: int, has_next: bool, group_id: int | None) -> None:
    """What follows an execution that ended without success (failed for good, cancelled,
    expired): its later chain steps are skipped and its group fails."""
    if has_next:
        skip_after(execution_id)
    if group_id is not None:
        member_failed(group_id)


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
    """A member ended without success: the group fails and its callback never runs."""
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
