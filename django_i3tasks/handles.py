"""``TaskHandle``: what ``.delay()`` returns — the execution, and ``.then()`` to chain.

``ChainHandle`` is its 0.x name and stays an alias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, ParamSpec, TypeVar
from uuid import UUID

from . import lifecycle
from .models import TaskExecution

if TYPE_CHECKING:
    from .task import Task

#: The return type of the task whose execution a handle stands for.
R = TypeVar("R")
P = ParamSpec("P")
T = TypeVar("T")


class TaskHandle(Generic[R]):
    """One enqueued execution of a task returning ``R``."""

    def __init__(self, execution: TaskExecution) -> None:
        self.task_execution = execution

    def __repr__(self) -> str:
        return f"<TaskHandle {self.task_execution.task_name} {self.uuid}>"

    @property
    def id(self) -> int:
        return self.task_execution.pk

    @property
    def uuid(self) -> UUID:
        return self.task_execution.uuid

    #: The 0.1 names of ``id`` and ``uuid``.
    task_execution_id = id
    task_uuid = uuid

    def then(self, task: Task[P, T], *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Run ``task(*args, **kwargs)`` after this step succeeded; returns the new step.

        A step added right after ``.delay()`` is never lost, even when this one finished
        before ``.then()`` was called; a step after a failed one is recorded as skipped.
        """
        return TaskHandle(lifecycle.add_step(self.task_execution, task, args, kwargs))


#: The 0.x name of ``TaskHandle``.
ChainHandle = TaskHandle
