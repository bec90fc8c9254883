"""``@TaskDecorator`` and the ``Task`` it makes of a function: the public task API.

``Task[P, R]`` keeps the function's signature, so type checkers check the arguments of
``.delay()``, ``.sync_run()`` and ``task(...)`` and know what ``.sync_run()`` returns (the
awaited value, for an ``async def`` task). Enqueueing goes through ``lifecycle``; this module
writes nothing itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload
from uuid import UUID

from . import lifecycle
from .conf import get_settings
from .exceptions import TaskUsageError
from .handles import TaskHandle
from .models import TaskGroup
from .registry import registry

#: Keyword argument of ``.delay()`` that makes the call a member of a group instead of being
#: passed to the task (``task.delay(x, __i3group__=group)``).
GROUP_KWARG = "__i3group__"

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskMetadata:
    """What a ``bind=True`` task receives as ``task_metadata=``.

    ``execution_uuid`` is ``None`` for a plain inline call (``task(...)``/``.sync_run()``).
    """

    task_name: str
    queue_name: str
    execution_uuid: UUID | None = None
    execution_id: int | None = None
    try_number: int = 1
    max_retries: int = 0
    group_id: int | None = None


class Task(Generic[P, R]):
    """A registered task. Calling it runs the function inline; ``.delay()`` enqueues it."""

    def __init__(
        self,
        func: Callable[P, R] | Callable[P, Coroutine[Any, Any, R]],
        *,
        bind: bool = False,
        queue_name: str | None = None,
        max_retries: int | None = None,
        on_success: Task[..., Any] | None = None,
    ) -> None:
        if not callable(func):
            raise TaskUsageError(f"@TaskDecorator needs a function, got {func!r}")
        if on_success is not None and not isinstance(on_success, Task):
            raise TaskUsageError(
                "on_success must be a task (a function decorated with @TaskDecorator)"
            )
        self.func = func
        self.name: str = f"{func.__module__}.{func.__qualname__}"
        self.bind = bind
        self.queue_name = queue_name
        self.max_retries = max_retries
        self.on_success = on_success
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", self.name)
        self.__module__ = func.__module__
        self.__qualname__ = getattr(func, "__qualname__", self.name)
        self.__wrapped__ = func
        registry.register(self)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    # -- inline ---------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.run(args, kwargs, self._inline_metadata())

    def sync_run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run inline in this process and return the function's value."""
        return self.run(args, kwargs, self._inline_metadata())

    def run(self, args: Sequence[Any], kwargs: dict[str, Any], metadata: TaskMetadata) -> R:
        """Run the function with ``args``/``kwargs`` (and ``task_metadata=`` when bound)."""
        if self.bind:
            kwargs = {**kwargs, "task_metadata": metadata}
        if inspect.iscoroutinefunction(self.func):
            from asgiref.sync import async_to_sync

            result: R = async_to_sync(self.func)(*args, **kwargs)
            return result
        return self.func(*args, **kwargs)  # type: ignore[return-value]

    def _inline_metadata(self) -> TaskMetadata:
        return TaskMetadata(task_name=self.name, queue_name=self.effective_queue_name)

    # -- enqueued ---------------------------------------------------------------------------

    @property
    def effective_queue_name(self) -> str:
        return self.queue_name or get_settings().default_queue.queue_name

    @property
    def effective_max_retries(self) -> int:
        if self.max_retries is not None:
            return self.max_retries
        return get_settings().default_max_retries

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Enqueue a call: check the arguments are JSON (``TypeError`` naming the argument,
        before anything is written), write the execution and its first try, publish once the
        transaction commits.

        ``__i3group__=group`` makes the call a member of a ``TaskGroup``.
        """
        group = cast("TaskGroup | None", kwargs.pop(GROUP_KWARG, None))
        return TaskHandle(lifecycle.enqueue(self, args, kwargs, group=group))

    def async_run(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """The 0.x name of ``delay``."""
        return self.delay(*args, **kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue_name: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        group: TaskGroup | None = None,
    ) -> TaskHandle[R]:
        """``.delay()`` with options: another queue, or a start time (``countdown``/``eta``).

        A delayed call is stored as *scheduled*; the beat endpoint publishes it when due
        (Pub/Sub has no delayed delivery), so its resolution is the beat's: a minute.
        """
        return TaskHandle(lifecycle.enqueue(
            self, args, dict(kwargs or {}), group=group, queue_name=queue_name,
            countdown=countdown, eta=eta,
        ))

    def map(
        self, items: Iterable[Any], *, group: TaskGroup | None = None,
        queue_name: str | None = None,
    ) -> list[TaskHandle[R]]:
        """Enqueue ``task(item)`` for every item in one go (bulk rows, batched publish).

        With ``group=`` every call is a member of that group: the bulk way to fan out.
        """
        return self._many((((item,), {}) for item in items), group, queue_name)

    def starmap(
        self, items: Iterable[Sequence[Any]], *, group: TaskGroup | None = None,
        queue_name: str | None = None,
    ) -> list[TaskHandle[R]]:
        """Like ``map``, but each item is a sequence of positional arguments: ``task(*item)``."""
        return self._many(((tuple(item), {}) for item in items), group, queue_name)

    def _many(
        self, calls: Iterable[tuple[Sequence[Any], dict[str, Any]]],
        group: TaskGroup | None, queue_name: str | None,
    ) -> list[TaskHandle[R]]:
        executions = lifecycle.enqueue_calls(
            [(self, args, kwargs) for args, kwargs in calls], group=group, queue_name=queue_name
        )
        return [TaskHandle(execution) for execution in executions]

    def build_chain(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """A handle that is written but not dispatched (e.g. a group callback); add steps
        with ``.then()``."""
        return TaskHandle(lifecycle.enqueue(self, args, kwargs, dispatch=False))


class _Decorator(Protocol):
    @overload
    def __call__(self, func: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, R], /) -> Task[P, R]: ...


@overload
def TaskDecorator(func: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
@overload
def TaskDecorator(func: Callable[P, R], /) -> Task[P, R]: ...
@overload
def TaskDecorator(
    *,
    bind: bool = False,
    queue_name: str | None = None,
    max_retries: int | None = None,
    on_success: Task[..., Any] | None = None,
) -> _Decorator: ...


def TaskDecorator(  # noqa: N802 - public name kept from earlier releases
    func: Callable[..., Any] | None = None,
    /,
    *,
    bind: bool = False,
    queue_name: str | None = None,
    max_retries: int | None = None,
    on_success: Task[..., Any] | None = None,
) -> Task[Any, Any] | _Decorator:
    """Make a function a task: ``@TaskDecorator`` or ``@TaskDecorator(max_retries=5, ...)``."""
    options: dict[str, Any] = {
        "bind": bind,
        "queue_name": queue_name,
        "max_retries": max_retries,
        "on_success": on_success,
    }
    if func is not None:
        return Task(func, **options)

    def decorate(function: Callable[..., Any]) -> Task[Any, Any]:
        return Task(function, **options)

    return decorate
