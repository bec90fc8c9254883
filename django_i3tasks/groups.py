"""Task groups (fan-out/join): the callback is released once all members succeeded.

A member counts when its execution turns from pending to success, which happens once per
execution inside the transaction that records the successful try; the count is an atomic
increment on the group row, and the callback is released by the one transaction that moves
the group from pending to success.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from .db import update_returning
from .dispatch import release
from .models import ExecutionStatus, GroupStatus, TaskGroup

if TYPE_CHECKING:
    from .chains import ChainHandle
    from .task import Task


def create_group(*, callback: Task | ChainHandle | None = None, total_count: int) -> TaskGroup:
    from .chains import ChainHandle
    from .task import Task

    if isinstance(total_count, bool) or not isinstance(total_count, int) or total_count < 0:
        raise ValueError(f"total_count must be an int >= 0, got {total_count!r}")
    with transaction.atomic():
        if isinstance(callback, Task):
            callback = callback.build_chain()
        if callback is not None and not isinstance(callback, ChainHandle):
            raise TypeError("callback must be a task or a handle from task.build_chain()")
        root = callback.task_execution if callback is not None else None
        if root is not None and root.status != ExecutionStatus.WAITING:
            raise ValueError("a group callback must not be dispatched yet: use build_chain()")
        group = TaskGroup.objects.create(total_count=total_count, callback=root)
        if total_count == 0:
            _succeed(group.pk, root.pk if root else None)
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


def _succeed(group_id: int, callback_id: int | None) -> None:
    updated = TaskGroup.objects.filter(pk=group_id, status=GroupStatus.PENDING).update(
        status=GroupStatus.SUCCESS, finished_at=timezone.now()
    )
    if updated and callback_id is not None:
        release([callback_id])


def member_failed(group_id: int) -> None:
    """A member exhausted its retries: the group fails and its callback never runs."""
    from .chains import skip

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

