"""Task groups (fan-out/join), the public side: ``TaskGroup.create(callback=..., total_count=N)``.

The callback (a task, or a chain built with ``task.build_chain()``) is written *waiting* and
released exactly once, by the transaction that counts the N-th succeeded member; a member
that fails for good fails the group and the callback never runs (see ``lifecycle``).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from . import lifecycle
from .exceptions import InvalidTaskOption, TaskUsageError
from .handles import TaskHandle
from .models import TaskGroup
from .task import Task


def create_group(*, callback: Task[..., Any] | TaskHandle[Any] | None = None,
                 total_count: int) -> TaskGroup:
    """Create a group of ``total_count`` members; ``callback`` runs once all succeeded."""
    if callback is not None and not isinstance(callback, Task | TaskHandle):
        raise TaskUsageError("callback must be a task or a handle from task.build_chain()")
    if isinstance(total_count, bool) or not isinstance(total_count, int) or total_count < 0:
        raise InvalidTaskOption(f"total_count must be an int >= 0, got {total_count!r}")
    with transaction.atomic():  # a callback written for a group that fails is rolled back
        root = callback.build_chain() if isinstance(callback, Task) else callback
        return lifecycle.create_group(root.task_execution if root else None, total_count)
