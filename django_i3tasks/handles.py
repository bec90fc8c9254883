"""``TaskHandle``: what ``.delay()`` returns — the execution, ``.then()`` and ``.pipe()`` to
chain, ``.on_failure()``, its result (``get_result``, ``wait_result``, ``await_result``) and
``cancel()``.

``ChainHandle`` is its 0.x name and stays an alias. A handle knows tasks only as ``Step``: a
callable that turns a call into an ``ExecutionSpec``, which ``Task`` is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar
from uuid import UUID

from . import lifecycle, results
from . import spec as specs
from .models import TaskExecution
from .spec import ExecutionSpec

#: The return type of the task whose execution a handle stands for.
R = TypeVar("R")
P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Step(Protocol[P, T_co]):
    """What ``.then()`` takes: a task (``Task[P, T]``), seen by the spec it makes of a call."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T_co: ...

    def spec(self, args: Sequence[Any], kwargs: dict[str, Any], *, dispatch: bool = True,
             previous_id: int | None = None) -> ExecutionSpec: ...


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

    def then(self, task: Step[P, T], *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Run ``task(*args, **kwargs)`` after this step succeeded; returns the new step.

        A step added right after ``.delay()`` is never lost, even when this one finished
        before ``.then()`` was called; a step after a failed one is recorded as skipped.
        """
        spec = task.spec(args, kwargs, previous_id=self.id)
        return TaskHandle(lifecycle.add_step(self.task_execution, spec))

    def pipe(self, task: Step[Concatenate[R, P], T], *args: P.args,
             **kwargs: P.kwargs) -> TaskHandle[T]:
        """Run ``task(<this step's value>, *args, **kwargs)`` after this step succeeded;
        returns the new step. The value is handed over as this step recorded it (JSON; a
        value stored as its ``repr`` arrives as that string), by the transaction that
        records the success; the signature is checked now, with the value's place taken."""
        spec = task.spec([None, *args], kwargs, previous_id=self.id)
        spec = dataclasses.replace(spec, args=list(spec.args[1:]), pipe=True)
        return TaskHandle(lifecycle.add_step(self.task_execution, spec))

    def on_failure(self, task: Step[Concatenate[dict[str, Any], P], Any], *args: P.args,
                   **kwargs: P.kwargs) -> TaskHandle[R]:
        """Run ``task(failure, *args, **kwargs)`` once if this step fails for good, is
        cancelled or expires, or is skipped because an earlier step of its chain failed
        (``failure`` then describes that step). Enqueued at once when that already happened.
        Returns this handle."""
        spec = task.spec([specs.FAILURE_EXAMPLE, *args], kwargs)
        lifecycle.attach_failure_handler(self.id, specs.handler(spec))
        return self

    def get_result(self) -> results.TaskResult[R]:
        """The execution's ``TaskResult``, read fresh from the database."""
        return results.get_result(self.uuid)

    def wait_result(self, timeout: float | None = None) -> R:
        """Wait for the task and return its value. ``TaskFailed`` (error type and message in
        ``str()``) when it failed, ``TaskCancelled`` when it was cancelled or expired,
        ``ResultTimeout`` (a ``TimeoutError``) after ``timeout`` seconds. Polls the database
        with growing intervals; never inside a transaction."""
        value: R = results.wait(self.uuid, timeout)
        return value

    async def await_result(self, timeout: float | None = None) -> R:
        """``wait_result`` for async code."""
        value: R = await results.await_(self.uuid, timeout)
        return value

    def cancel(self) -> bool:
        """Cancel the execution: True when it will not run (it had not started), or it is
        running and was asked to stop (``task_metadata.is_cancelled()`` turns true); False
        when it had already finished. Later chain steps are skipped, a group fails."""
        return lifecycle.cancel(self.id)


#: The 0.x name of ``TaskHandle``.
ChainHandle = TaskHandle
