"""``@TaskDecorator`` and the ``Task`` it makes of a function: the public task API.

``Task[P, R]`` keeps the function's signature, so type checkers check the arguments of
``.delay()``, ``.sync_run()`` and ``task(...)`` and know what ``.sync_run()`` returns (the
awaited value, for an ``async def`` task).

A ``Task`` is a frozen value: its fields are the decorator's options and the per-call options
of ``using()``, which returns a changed copy (``dataclasses.replace``, as ``django.tasks``
does). Every call is turned into an ``ExecutionSpec`` by ``spec`` (all validation, once,
before anything is written) and handed to ``lifecycle``; this module writes nothing itself.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload
from uuid import UUID

from django.utils import timezone

from . import lifecycle, results
from . import spec as specs
from .conf import get_settings
from .exceptions import TaskUsageError
from .handles import TaskHandle
from .limits import await_with_limit, call_with_limit
from .metadata import RunningTry, TaskMetadata
from .models import TaskGroup
from .registry import registry
from .retry import RetryPolicy
from .spec import ExceptionTypes, ExecutionSpec, Expiry

__all__ = ["GROUP_KWARG", "RunningTry", "Task", "TaskDecorator", "TaskMetadata"]

#: Keyword argument of ``.delay()`` that makes the call a member of a group instead of being
#: passed to the task (``task.delay(x, __i3group__=group)``).
GROUP_KWARG = "__i3group__"

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, eq=False, repr=False)
class Task(Generic[P, R]):
    """A registered task. Calling it runs the function inline; ``.delay()`` enqueues it.

    Decorator options: ``bind``, ``queue_name``, ``max_retries``, ``on_success``,
    ``on_failure`` (a task run once with the ``failure`` dict when an execution ends
    without success),
    ``time_limit`` (seconds a try may run), ``retry_on`` (only these errors are retried),
    ``give_up_on`` (these never are), ``expires`` (seconds after it is due within which it
    must start), ``retry_backoff=(min_s, max_s)`` and ``retry_jitter``; limits
    (``concurrency_limit``, ``concurrency_key``, ``rate_limit``) and ``lease_seconds``
    (``docs/limits-and-timing.md``). Per call, through
    ``using()``: ``queue_name``, ``countdown``, ``eta``, ``expires``, ``unique_key``,
    ``group``.
    """

    func: Callable[P, R] | Callable[P, Coroutine[Any, Any, R]]
    _: KW_ONLY
    bind: bool = False
    queue_name: str | None = None
    max_retries: int | None = None
    on_success: Task[..., Any] | None = None
    time_limit: float | None = None
    retry_on: type[BaseException] | ExceptionTypes | None = None
    give_up_on: type[BaseException] | ExceptionTypes | None = None
    expires: float | timedelta | None = None
    retry_backoff: tuple[float, float] | None = None
    retry_jitter: bool = True
    on_failure: Task[..., Any] | None = None
    #: Limits (``lifecycle.admission``, ``docs/limits-and-timing.md``): at most
    #: ``concurrency_limit`` tries running at once, per ``concurrency_key(*args, **kwargs)``
    #: when given; at most ``rate_limit`` ("N/s", "N/m", "N/h") starts per period.
    concurrency_limit: int | None = None
    concurrency_key: Callable[..., str | None] | None = None
    rate_limit: str | None = None
    #: Seconds a claimed try is leased (overrides ``I3TASKS.lease_seconds``).
    lease_seconds: float | None = None
    # Per call (``using()``); ``call_expires`` is ``using(expires=...)``.
    countdown: float | None = None
    eta: datetime | None = None
    call_expires: Expiry | None = None
    unique_key: str | None = None
    group: TaskGroup | None = None
    #: The dotted path the task is registered and enqueued under.
    name: str = field(init=False)
    #: ``rate_limit`` parsed: ``(starts, period seconds)``.
    rate: tuple[int, float] | None = field(init=False)
    _signature: inspect.Signature | None = field(init=False)

    def __post_init__(self) -> None:
        func = self.func
        if not callable(func):
            raise TaskUsageError(f"@TaskDecorator needs a function, got {func!r}")
        for option in ("on_success", "on_failure"):
            if getattr(self, option) is not None and not isinstance(getattr(self, option), Task):
                raise TaskUsageError(
                    f"{option} must be a task (a function decorated with @TaskDecorator)"
                )
        values = {
            "name": f"{func.__module__}.{getattr(func, '__qualname__', repr(func))}",
            "bind": specs.flag("bind", self.bind),
            "queue_name": specs.optional_str("queue_name", self.queue_name),
            "max_retries": specs.max_retries(self.max_retries),
            "time_limit": specs.seconds("time_limit", self.time_limit),
            "retry_on": specs.exception_types("retry_on", self.retry_on),
            "give_up_on": specs.exception_types("give_up_on", self.give_up_on),
            "expires": specs.task_expiry(self.expires),
            "retry_backoff": specs.backoff(self.retry_backoff),
            "retry_jitter": specs.flag("retry_jitter", self.retry_jitter),
            "countdown": specs.countdown(self.countdown),
            "eta": specs.eta(self.eta),
            "call_expires": specs.call_expiry(self.call_expires),
            "unique_key": specs.unique_key(self.unique_key),
            "concurrency_limit": specs.concurrency_limit(self.concurrency_limit),
            "concurrency_key": specs.key_function(self.concurrency_key),
            "rate": specs.rate_limit(self.rate_limit),
            "lease_seconds": specs.seconds("lease_seconds", self.lease_seconds),
            "_signature": _signature_of(func),
            "__doc__": func.__doc__,
            "__name__": getattr(func, "__name__", repr(func)),
            "__module__": func.__module__,
            "__qualname__": getattr(func, "__qualname__", repr(func)),
            "__wrapped__": func,
        }
        if self.group is not None:
            specs.group_id(self.group, TaskGroup)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def register(self) -> Task[P, R]:
        """Put the task in the registry (what the decorator does); returns it."""
        registry.register(self)
        return self

    # -- inline ---------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.run(args, kwargs, self._inline_metadata())

    def sync_run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run inline in this process and return the function's value (an ``async def``
        task is run to completion). Like calling the function: no time limit, no retries,
        and exempt from ``concurrency_limit``/``rate_limit`` (nothing is claimed, so nothing
        is counted: the caller runs it on purpose, here and now)."""
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

    # -- options ----------------------------------------------------------------------------

    @property
    def effective_queue_name(self) -> str:
        return self.queue_name or get_settings().default_queue.queue_name

    @property
    def effective_max_retries(self) -> int:
        if self.max_retries is not None:
            return self.max_retries
        return get_settings().default_max_retries

    @property
    def limited(self) -> bool:
        """Whether a try must be admitted (``concurrency_limit`` or ``rate_limit``)."""
        return self.concurrency_limit is not None or self.rate is not None

    @property
    def retry_policy(self) -> RetryPolicy:
        """When a failed try of this task is retried (``retry.RetryPolicy``)."""
        return RetryPolicy(
            max_retries=self.effective_max_retries,
            retry_on=cast("ExceptionTypes | None", self.retry_on),
            give_up_on=cast("ExceptionTypes | None", self.give_up_on),
            backoff=self.retry_backoff, jitter=self.retry_jitter,
        )

    def using(
        self,
        *,
        queue_name: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: Expiry | None = None,
        unique_key: str | None = None,
        group: TaskGroup | None = None,
    ) -> Task[P, R]:
        """This task with options for the calls made through it, in the style of
        ``django.tasks``' ``Task.using()``: ``task.using(countdown=60).delay(7)``. Options
        not given keep their value.

        - ``queue_name``: another configured queue.
        - ``countdown`` (seconds) / ``eta`` (aware datetime): start no earlier; within the
          queue's hold limit it starts to the second (``timing``), beyond it the beat
          releases it, to the minute.
        - ``expires``: seconds or a timedelta counted from when it is due (``eta``, else
          now), or an aware datetime; not started by then, it never runs (status
          ``expired``). Overrides the task's ``expires=``.
        - ``unique_key``: while an execution with this key is waiting, scheduled or pending,
          ``.delay()`` returns its handle and enqueues nothing.
        - ``group``: a member of this ``TaskGroup`` (as ``__i3group__=``).
        """
        changes: dict[str, Any] = {
            "queue_name": queue_name, "countdown": countdown, "eta": eta,
            "call_expires": expires, "unique_key": unique_key, "group": group,
        }
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # -- enqueued ---------------------------------------------------------------------------

    def spec(self, args: Sequence[Any], kwargs: dict[str, Any], *, dispatch: bool = True,
             previous_id: int | None = None) -> ExecutionSpec:
        """The validated ``ExecutionSpec`` of a call: ``TypeError`` (``TaskUsageError``) for
        arguments that do not fit the function or are not JSON, and for a task a server
        would not know, before anything is written."""
        template = self._template(dispatch=dispatch, previous_id=previous_id)
        return self._call(template, args, kwargs)

    def specs(self, calls: Sequence[tuple[Sequence[Any], dict[str, Any]]]
              ) -> list[ExecutionSpec]:
        """``spec`` of many calls (``map``, the beat): the options are checked once, the
        arguments of each call; an error names the call's index."""
        template = self._template()
        checked = []
        for index, (args, kwargs) in enumerate(calls):
            try:
                checked.append(self._call(template, args, kwargs))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"call {index}: {exc}") from None
        return checked

    def _template(self, *, dispatch: bool = True, previous_id: int | None = None
                  ) -> ExecutionSpec:
        """The spec of a call without its arguments: everything but ``args``/``kwargs``."""
        specs.registered(self.name, self.func.__module__)
        waits = not dispatch or previous_id is not None
        expires = self.call_expires
        if expires is None and not waits:
            expires = self.expires
        eta, expires_at = specs.when(self.countdown, self.eta, expires, waits=waits,
                                     now=timezone.now())
        return ExecutionSpec(
            task_name=self.name, queue_name=specs.queue_name(self.effective_queue_name) or "",
            max_retries=self.effective_max_retries, eta=eta, expires_at=expires_at,
            expires_after=cast("float | None", self.expires) if waits and expires is None
            else None,
            unique_key=self.unique_key, group_id=specs.group_id(self.group),
            previous_id=previous_id, dispatch=dispatch,
            ordered=self.group is not None and self.group.pass_results,
            on_failure=None if self.on_failure is None else [specs.handler(
                self.on_failure.spec([specs.FAILURE_EXAMPLE], {})
            )],
        )

    def _call(self, template: ExecutionSpec, args: Sequence[Any], kwargs: dict[str, Any]
              ) -> ExecutionSpec:
        args, kwargs = list(args), dict(kwargs)
        specs.payload(self.name, args, kwargs)
        if self._signature is not None:
            specs.bind_arguments(self.name, self._signature, args, kwargs, bound=self.bind)
        key = specs.concurrency_key_of(self.name, self.concurrency_key, args, kwargs)
        return template.with_call(args, kwargs, key)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Enqueue a call: check the arguments (``TypeError`` naming the problem, before
        anything is written), write the execution and its first try, publish once the
        transaction commits.

        ``__i3group__=group`` makes the call a member of a ``TaskGroup``.
        """
        group = cast("TaskGroup | None", kwargs.pop(GROUP_KWARG, None))
        task = self if group is None else self.using(group=group)
        return TaskHandle(lifecycle.enqueue(task.spec(args, kwargs)))

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
        expires: Expiry | None = None,
        unique_key: str | None = None,
    ) -> TaskHandle[R]:
        """``.delay()`` with options (Celery's spelling of ``using(...).delay(...)``)."""
        task = self.using(queue_name=queue_name, countdown=countdown, eta=eta, group=group,
                          expires=expires, unique_key=unique_key)
        return TaskHandle(lifecycle.enqueue(task.spec(args, dict(kwargs or {}))))

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
        return self._many([((item,), {}) for item in items], group, queue_name)

    def starmap(
        self, items: Iterable[Sequence[Any]], *, group: TaskGroup | None = None,
        queue_name: str | None = None,
    ) -> list[TaskHandle[R]]:
        """Like ``map``, but each item is a sequence of positional arguments: ``task(*item)``."""
        return self._many([(tuple(item), {}) for item in items], group, queue_name)

    def _many(
        self, calls: list[tuple[Sequence[Any], dict[str, Any]]],
        group: TaskGroup | None, queue_name: str | None,
    ) -> list[TaskHandle[R]]:
        task = self.using(group=group, queue_name=queue_name)
        return [TaskHandle(e) for e in lifecycle.enqueue_many(task.specs(calls))]

    def build_chain(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """A handle that is written but not dispatched (e.g. a group callback); add steps
        with ``.then()``."""
        return TaskHandle(lifecycle.enqueue(self.spec(args, kwargs, dispatch=False)))


def _signature_of(func: Callable[..., Any]) -> inspect.Signature | None:
    """The function's signature, read once (``.delay()`` binds every call to it)."""
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None  # a builtin without a signature: calls are not checked


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
    on_failure: Task[..., Any] | None = None,
    concurrency_limit: int | None = None,
    concurrency_key: Callable[..., str | None] | None = None,
    rate_limit: str | None = None,
    lease_seconds: float | None = None,
) -> _Decorator: ...


def TaskDecorator(  # noqa: N802 - public name kept from earlier releases
    func: Callable[..., Any] | None = None, /, **options: Any
) -> Task[Any, Any] | _Decorator:
    """Make a function a task: ``@TaskDecorator`` or ``@TaskDecorator(max_retries=5, ...)``.

    The options are the fields of ``Task`` (``docs/tasks.md``, ``docs/control.md``); an
    unknown one is a ``TypeError`` naming it, at import time.
    """
    unknown = set(options) - _DECORATOR_OPTIONS
    if unknown:
        raise TaskUsageError(f"@TaskDecorator got unknown option(s): {', '.join(sorted(unknown))}"
                             f"; it takes {', '.join(sorted(_DECORATOR_OPTIONS))}")
    if func is not None:
        return Task(func, **options).register()

    def decorate(function: Callable[..., Any]) -> Task[Any, Any]:
        return Task(function, **options).register()

    return decorate


#: The decorator's options: the fields of ``Task`` that are not per call.
_DECORATOR_OPTIONS = frozenset(
    f.name for f in dataclasses.fields(Task)
    if f.init and f.name not in ("func", "countdown", "eta", "call_expires", "unique_key", "group")
)
