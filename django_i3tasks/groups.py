"""Task groups (fan-out/join), the public side: ``TaskGroup.create(callback=..., total_count=N)``.

The callback (a task, or a chain built with ``task.build_chain()``) is written *waiting* and
released exactly once, by the transaction that counts the N-th succeeded member; a member
that fails for good fails the group and the callback never runs (see ``lifecycle``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db import transaction

from . import lifecycle
from . import spec as specs
from .exceptions import InvalidTaskOption, TaskUsageError
from .handles import TaskHandle
from .models import TaskGroup
from .task import Task


def create_group(*, callback: Task[..., Any] | TaskHandle[Any] | None = None,
                 total_count: int, pass_results: bool = False,
                 on_failure: Task[..., Any] | None = None) -> TaskGroup:
    """Create a group of ``total_count`` members; ``callback`` runs once all succeeded.

    ``pass_results=True``: the callback (a task) gets the list of the members' values, in
    member order, as its first argument. ``on_failure`` (a task) runs once with the
    ``failure`` of the first member that ended without success (plus ``group_uuid``)."""
    if callback is not None and not isinstance(callback, Task | TaskHandle):
        raise TaskUsageError("callback must be a task or a handle from task.build_chain()")
    if isinstance(total_count, bool) or not isinstance(total_count, int) or total_count < 0:
        raise InvalidTaskOption(f"total_count must be an int >= 0, got {total_count!r}")
    specs.flag("pass_results", pass_results)
    if pass_results and not isinstance(callback, Task):
        raise TaskUsageError("pass_results=True takes a task as callback (it gets the list "
                             "of the members' values as its first argument)")
    if on_failure is not None and not isinstance(on_failure, Task):
        raise TaskUsageError("on_failure must be a task (a function decorated with "
                             "@TaskDecorator)")
    handler = (None if on_failure is None
               else specs.handler(on_failure.spec([specs.FAILURE_EXAMPLE], {})))
    with transaction.atomic():  # a callback written for a group that fails is rolled back
        if isinstance(callback, Task) and pass_results:
            spec = callback.spec([[]], {}, dispatch=False)  # checked with the list in place
            root: TaskHandle[Any] | None = TaskHandle(
                lifecycle.enqueue(dataclasses.replace(spec, args=[]))
            )
        else:
            root = callback.build_chain() if isinstance(callback, Task) else callback
        return lifecycle.create_group(root.task_execution if root else None, total_count,
                                      pass_results=pass_results, on_failure=handler)
