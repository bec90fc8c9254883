"""``@TaskDecorator`` and the ``Task`` it makes of a function."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload
from uuid import UUID

from .registry import registry

if TYPE_CHECKING:
    from .chains import ChainHandle

#: Keyword arguments of ``.delay()`` that steer the call instead of being passed to the task.
GROUP_KWARG = "__i3group__"


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


class Task:
    """A registered task. Calling it runs the function inline; ``.delay()`` enqueues it."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        bind: bool = False,
        queue_name: str | None = None,
        max_retries: int | None = None,
        on_success: Task | None = None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"@TaskDecorator needs a function, got {func!r}")
        if on_success is not None and not isinstance(on_success, Task):
            raise TypeError("on_success must be a task (a function decorated with @TaskDecorator)")
        self.func = func
        self.name = f"{func.__module__}.{func.__qualname__}"
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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(args, kwargs, self._inline_metadata())

    def sync_run(self, *args: Any, **kwargs: Any) -> Any:
        """Run inline in this process and return the function's value."""
        return self(*args, **kwargs)

    def run(self, args: list | tuple, kwargs: dict[str, Any], metadata: TaskMetadata) -> Any:
        if self.bind:
            kwargs = {**kwargs, "task_metadata": metadata}
        if inspect.iscoroutinefunction(self.func):
            from asgiref.sync import async_to_sync

            return async_to_sync(self.func)(*args, **kwargs)
        return self.func(*args, **kwargs)

    def _inline_metadata(self) -> TaskMetadata:
        return TaskMetadata(task_name=self.name, queue_name=self.effective_queue_name)

    # -- enqueued ---------------------------------------------------------------------------

    @property
    def effective_queue_name(self) -> str:
        from .conf import get_settings

        return self.queue_name or get_settings().default_queue.queue_name

    @property
    def effective_max_retries(self) -> int:
        from .conf import get_settings

        if self.max_retries is not None:
            return self.max_retries
        return get_settings().default_max_retries

    def delay(self, *args: Any, **kwargs: Any) -> ChainHandle:
        """Enqueue a call: validate, write the execution and its first try, publish on commit.

        ``__i3group__=group`` makes the call a member of a ``TaskGroup``.
        """
        from .dispatch import enqueue

        group = kwargs.pop(GROUP_KWARG, None)
        return enqueue(self, args, kwargs, group=group)

    async_run = delay

    def apply_async(
        self,
        args: list | tuple = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue_name: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        group: Any = None,
    ) -> ChainHandle:
        """``.delay()`` with options: another queue, or a start time (``countdown``/``eta``).

        A delayed call is stored as *scheduled*; the beat endpoint publishes it when due
        (Pub/Sub has no delayed delivery), so its resolution is the beat's: a minute.
        """
        from .dispatch import enqueue

        return enqueue(
            self, args, dict(kwargs or {}), group=group, queue_name=queue_name,
            countdown=countdown, eta=eta,
        )

    def map(
        self, items: Iterable[Any], *, group: Any = None, queue_name: str | None = None
    ) -> list[ChainHandle]:
        """Enqueue ``task(item)`` for every item in one go (bulk rows, batched publish).

        With ``group=`` every call is a member of that group: the bulk way to fan out.
        """
        from .dispatch import enqueue_many

        return enqueue_many(
            self, (((item,), {}) for item in items), group=group, queue_name=queue_name
        )

    def starmap(
        self, items: Iterable[Sequence[Any]], *, group: Any = None, queue_name: str | None = None
    ) -> list[ChainHandle]:
        """Like ``map``, but each item is a sequence of positional arguments: ``task(*item)``."""
        from .dispatch import enqueue_many

        return enqueue_many(
            self, ((tuple(item), {}) for item in items), group=group, queue_name=queue_name
        )

    def build_chain(self, *args: Any, **kwargs: Any) -> ChainHandle:
        """A chain handle that is written but not dispatched (e.g. a group callback)."""
        from .dispatch import enqueue

        return enqueue(self, args, kwargs, dispatch=False)


@overload
def TaskDecorator(func: Callable[..., Any], /) -> Task: ...
@overload
def TaskDecorator(
    *,
    bind: bool = False,
    queue_name: str | None = None,
    max_retries: int | None = None,
    on_success: Task | None = None,
) -> Callable[[Callable[..., Any]], Task]: ...


def TaskDecorator(  # noqa: N802 - public name kept from earlier releases
    func: Callable[..., Any] | None = None,
    /,
    *,
    bind: bool = False,
    queue_name: str | None = None,
    max_retries: int | None = None,
    on_success: Task | None = None,
) -> Task | Callable[[Callable[..., Any]], Task]:
    """Make a function a task: ``@TaskDecorator`` or ``@TaskDecorator(max_retries=5, ...)``."""
    options = {
        "bind": bind,
        "queue_name": queue_name,
        "max_retries": max_retries,
        "on_success": on_success,
    }
    if func is not None:
        return Task(func, **options)

    def decorate(function: Callable[..., Any]) -> Task:
        return Task(function, **options)

    return decorate
