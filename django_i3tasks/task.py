"""``@TaskDecorator`` and the ``Task`` it makes of a function: the public task API.

``Task[P, R]`` keeps the function's signature, so type checkers check the arguments of
``.delay()``, ``.sync_run()`` and ``task(...)`` and know what ``.sync_run()`` returns (the
awaited value, for an ``async def`` task). Enqueueing goes through ``lifecycle``; this module
writes nothing itself.

Task control (issue 12): decorator options ``time_limit``, ``retry_on``, ``give_up_on``,
``expires``, ``retry_backoff``, ``retry_jitter`` (all keyword-only, off by default except
jitter); per-call options through ``task.using(...)``; ``TaskMetadata.set_progress`` and
``is_cancelled`` for a running ``bind=True`` task.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
import uuid as uuid_module
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload
from uuid import UUID

from . import lifecycle, results
from .conf import get_settings
from .exceptions import InvalidTaskOption, TaskUsageError
from .handles import TaskHandle
from .limits import await_with_limit, call_with_limit
from .models import TaskGroup
from .registry import registry

#: Keyword argument of ``.delay()`` that makes the call a member of a group instead of being
#: passed to the task (``task.delay(x, __i3group__=group)``).
GROUP_KWARG = "__i3group__"

P = ParamSpec("P")
R = TypeVar("R")


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


class RunningTry:
    """The claim of the try a task is running: what ``set_progress`` and ``is_cancelled``
    of its ``TaskMetadata`` use.

    Progress is written at most every ``PROGRESS_INTERVAL`` seconds; a value held back is
    written with the next one, or when the try's outcome is recorded (same ``UPDATE``). The
    cancel flag is read at most every ``CANCEL_INTERVAL`` seconds, and once true stays true.
    """

    PROGRESS_INTERVAL = 0.25
    CANCEL_INTERVAL = 0.5

    def __init__(self, execution_id: int, try_id: int, token: uuid_module.UUID) -> None:
        self.execution_id = execution_id
        self.try_id = try_id
        self.token = token
        self._written_at = -math.inf
        self._held: dict[str, Any] | None = None
        self._checked_at = -math.inf
        self._cancelled = False

    def progress(self, value: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._written_at < self.PROGRESS_INTERVAL:
            self._held = value
            return
        self._written_at, self._held = now, None
        lifecycle.write_progress(self.try_id, self.token, value)

    def held_progress(self) -> dict[str, Any] | None:
        """The latest progress not written yet (recorded with the try's outcome)."""
        return self._held

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._checked_at >= self.CANCEL_INTERVAL:
            self._checked_at = now
            self._cancelled = lifecycle.cancel_requested(self.execution_id)
        return self._cancelled


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass(frozen=True)
class TaskMetadata:
    """What a ``bind=True`` task receives as ``task_metadata=``.

    ``execution_uuid`` is ``None`` for a plain inline call (``task(...)``/``.sync_run()``);
    there ``set_progress`` does nothing and ``is_cancelled`` is False.
    """

    task_name: str
    queue_name: str
    execution_uuid: UUID | None = None
    execution_id: int | None = None
    try_number: int = 1
    max_retries: int = 0
    group_id: int | None = None
    running: RunningTry | None = field(default=None, repr=False, compare=False)

    def set_progress(self, current: float, total: float | None = None, message: str = "") -> None:
        """Report progress (``TaskResult.progress``, the status endpoint, the admin).

        Cheap to call often: at most a few writes a second reach the database, and only
        while this try holds its claim. In an ``async def`` task use ``aset_progress``.
        """
        value = _progress_value(current, total, message)
        if self.running is None:
            return
        if _in_event_loop():
            raise TaskUsageError("in an async def task use 'await task_metadata.aset_progress()'")
        self.running.progress(value)

    async def aset_progress(self, current: float, total: float | None = None,
                            message: str = "") -> None:
        """``set_progress`` for ``async def`` tasks."""
        from asgiref.sync import sync_to_async

        value = _progress_value(current, total, message)
        if self.running is not None:
            await sync_to_async(self.running.progress)(value)

    def is_cancelled(self) -> bool:
        """True once ``cancel()`` was called for this execution: stop early (return, or
        raise ``TaskCancelled`` to record it as cancelled). In an ``async def`` task use
        ``ais_cancelled``."""
        if self.running is None:
            return False
        if _in_event_loop():
            raise TaskUsageError("in an async def task use 'await task_metadata.ais_cancelled()'")
        return self.running.cancelled()

    async def ais_cancelled(self) -> bool:
        """``is_cancelled`` for ``async def`` tasks."""
        from asgiref.sync import sync_to_async

        if self.running is None:
            return False
        return await sync_to_async(self.running.cancelled)()


def _progress_value(current: Any, total: Any, message: Any) -> dict[str, Any]:
    if not _number(current):
        raise TaskUsageError(f"set_progress: current must be a number, got {current!r}")
    if total is not None and not _number(total):
        raise TaskUsageError(f"set_progress: total must be None or a number, got {total!r}")
    if not isinstance(message, str):
        raise TaskUsageError(f"set_progress: message must be a str, got {message!r}")
    return {"current": current, "total": total, "message": message[:1000]}


ExceptionTypes = tuple[type[BaseException], ...]


def _exception_types(name: str, value: Any) -> ExceptionTypes | None:
    if value is None:
        return None
    items = value if isinstance(value, tuple | list) else (value,)
    if not all(isinstance(item, type) and issubclass(item, BaseException) for item in items):
        raise TaskUsageError(f"{name} must be an exception class or a tuple of them, "
                             f"got {value!r}")
    return tuple(items)


def _seconds(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not _number(value):
        raise TaskUsageError(f"{name} must be seconds (a number), got {value!r}")
    if value <= 0:
        raise InvalidTaskOption(f"{name} must be positive, got {value!r}")
    return float(value)


def _backoff(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if (not isinstance(value, tuple | list) or len(value) != 2
            or not all(_number(v) for v in value)):
        raise TaskUsageError(f"retry_backoff must be (min_seconds, max_seconds), got {value!r}")
    low, high = value
    if not 0 <= low <= high:
        raise InvalidTaskOption(f"retry_backoff must satisfy 0 <= min <= max, got {value!r}")
    return float(low), float(high)


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
        time_limit: float | None = None,
        retry_on: type[BaseException] | ExceptionTypes | None = None,
        give_up_on: type[BaseException] | ExceptionTypes | None = None,
        expires: float | timedelta | None = None,
        retry_backoff: tuple[float, float] | None = None,
        retry_jitter: bool = True,
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
        #: Seconds a try may run; past it the try fails with ``TimeLimitExceeded``.
        self.time_limit = _seconds("time_limit", time_limit)
        #: Only these errors are retried (``None``: every error).
        self.retry_on = _exception_types("retry_on", retry_on)
        #: These errors are never retried (checked before ``retry_on``).
        self.give_up_on = _exception_types("give_up_on", give_up_on)
        #: Seconds after it is due within which an execution must start, else it expires.
        self.expires = _seconds("expires", expires)
        #: ``(min, max)`` seconds of this task's retry backoff (``None``: the settings').
        self.retry_backoff = _backoff(retry_backoff)
        if not isinstance(retry_jitter, bool):
            raise TaskUsageError(f"retry_jitter must be True or False, got {retry_jitter!r}")
        self.retry_jitter = retry_jitter
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
        """Run inline in this process and return the function's value (an ``async def``
        task is run to completion). Like calling the function: no time limit, no retries."""
        return self.run(args, kwargs, self._inline_metadata())

    def run(self, args: Sequence[Any], kwargs: dict[str, Any], metadata: TaskMetadata, *,
            time_limit: float | None = None) -> R:
        """Run the function with ``args``/``kwargs`` (and ``task_metadata=`` when bound),
        stopped with ``TimeLimitExceeded`` after ``time_limit`` seconds (``limits``)."""
        if self.bind:
            kwargs = {**kwargs, "task_metadata": metadata}
        if inspect.iscoroutinefunction(self.func):
            from asgiref.sync import async_to_sync

            func = self.func

            async def limited() -> Any:
                return await await_with_limit(func(*args, **kwargs), time_limit)

            result: R = async_to_sync(limited)()
            return result
        return call_with_limit(  # type: ignore[return-value]
            lambda: self.func(*args, **kwargs), time_limit
        )

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
        expires: float | timedelta | datetime | None = None,
        unique_key: str | None = None,
    ) -> TaskHandle[R]:
        """``.delay()`` with options: another queue, or a start time (``countdown``/``eta``).

        A delayed call is stored as *scheduled*; the beat endpoint publishes it when due
        (Pub/Sub has no delayed delivery), so its resolution is the beat's: a minute.
        ``expires`` and ``unique_key`` as for ``using()``.
        """
        return self.using(
            queue_name=queue_name, countdown=countdown, eta=eta, group=group, expires=expires,
            unique_key=unique_key,
        ).delay(*args, **dict(kwargs or {}))

    def using(
        self,
        *,
        queue_name: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        unique_key: str | None = None,
        group: TaskGroup | None = None,
    ) -> TaskOptions[P, R]:
        """Options for the next ``.delay()``, in the style of ``django.tasks``'
        ``Task.using()``: ``task.using(countdown=60, unique_key="report:7").delay(7)``.

        - ``queue_name``: another configured queue.
        - ``countdown`` (seconds) / ``eta`` (aware datetime): start no earlier (the beat
          releases it, to the minute).
        - ``expires``: seconds or a timedelta counted from when it is due (``eta``, else
          now), or an aware datetime; not started by then, it never runs (status
          ``expired``). Overrides the task's ``expires=``.
        - ``unique_key``: while an execution with this key is waiting, scheduled or pending,
          ``.delay()`` returns its handle and enqueues nothing.
        - ``group``: a member of this ``TaskGroup`` (as ``__i3group__=``).
        """
        if countdown is not None and (not _number(countdown) or countdown < 0):
            raise InvalidTaskOption(f"countdown must be seconds >= 0, got {countdown!r}")
        if eta is not None and not isinstance(eta, datetime):
            raise TaskUsageError(f"eta must be a datetime, got {type(eta).__name__}")
        return TaskOptions(self, {
            "queue_name": queue_name, "countdown": countdown, "eta": eta, "expires": expires,
            "unique_key": unique_key, "group": group,
        })

    def get_result(self, execution_uuid: UUID | str) -> results.TaskResult[R]:
        """The ``TaskResult`` of this task's execution ``execution_uuid``;
        ``TaskResultDoesNotExist`` when there is none."""
        return results.get_result(execution_uuid, task_name=self.name)

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


class TaskOptions(Generic[P, R]):
    """A task with per-call options (``task.using(...)``); ``.delay()`` enqueues with them."""

    def __init__(self, task: Task[P, R], options: dict[str, Any]) -> None:
        self.task = task
        self.options = options

    def __repr__(self) -> str:
        chosen = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if v is not None)
        return f"<TaskOptions {self.task.name} {chosen}>"

    def using(self, **options: Any) -> TaskOptions[P, R]:
        """These options with some replaced."""
        merged = {**self.options, **{k: v for k, v in options.items() if v is not None}}
        return self.task.using(**merged)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        return TaskHandle(lifecycle.enqueue(self.task, args, kwargs, **self.options))


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
    time_limit: float | None = None,
    retry_on: type[BaseException] | ExceptionTypes | None = None,
    give_up_on: type[BaseException] | ExceptionTypes | None = None,
    expires: float | timedelta | None = None,
    retry_backoff: tuple[float, float] | None = None,
    retry_jitter: bool = True,
) -> _Decorator: ...


def TaskDecorator(  # noqa: N802 - public name kept from earlier releases
    func: Callable[..., Any] | None = None,
    /,
    *,
    bind: bool = False,
    queue_name: str | None = None,
    max_retries: int | None = None,
    on_success: Task[..., Any] | None = None,
    time_limit: float | None = None,
    retry_on: type[BaseException] | ExceptionTypes | None = None,
    give_up_on: type[BaseException] | ExceptionTypes | None = None,
    expires: float | timedelta | None = None,
    retry_backoff: tuple[float, float] | None = None,
    retry_jitter: bool = True,
) -> Task[Any, Any] | _Decorator:
    """Make a function a task: ``@TaskDecorator`` or ``@TaskDecorator(max_retries=5, ...)``.

    ``time_limit`` (seconds a try may run), ``retry_on`` (only these errors are retried),
    ``give_up_on`` (these never are), ``expires`` (seconds after it is due within which it
    must start), ``retry_backoff=(min_s, max_s)`` (this task's backoff bounds) and
    ``retry_jitter`` (on by default) are described in the README, "Task control".
    """
    options: dict[str, Any] = {
        "bind": bind,
        "queue_name": queue_name,
        "max_retries": max_retries,
        "on_success": on_success,
        "time_limit": time_limit,
        "retry_on": retry_on,
        "give_up_on": give_up_on,
        "expires": expires,
        "retry_backoff": retry_backoff,
        "retry_jitter": retry_jitter,
    }
    if func is not None:
        return Task(func, **options)

    def decorate(function: Callable[..., Any]) -> Task[Any, Any]:
        return Task(function, **options)

    return decorate
