"""What to enqueue, validated once: ``ExecutionSpec`` and every option check of the public API.

The public API (``Task``, ``.using()``, ``.delay()``, ``map``, ``.then()``, the ``django.tasks``
backend) turns a call into an ``ExecutionSpec`` here, and the lifecycle writes specs without
checking anything again. So a bad argument or option is refused before anything is written,
with an exception under ``I3TasksError`` that names it:

- ``TaskUsageError`` (a ``TypeError``): a value of the wrong kind, arguments that do not fit
  the function's signature, arguments JSON cannot carry (``ArgumentsNotSerializable``);
- ``InvalidTaskOption`` (a ``ValueError``): a value of the right kind out of range, a payload
  over ``max_payload_bytes`` (``PayloadTooLarge``).

The model is ``django.tasks``: a task is a frozen value whose ``using()`` returns a changed copy
(``dataclasses.replace``), and the backend's ``validate_task`` checks it once.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from . import outbox
from .conf import get_queue, get_settings
from .exceptions import InvalidTaskOption, TaskUsageError
from .messages import check_payload
from .registry import registry

#: What ``expires=`` accepts: seconds or a timedelta (counted from when the execution is due:
#: its ``eta``, else now), or an aware datetime (per call only).
Expiry = float | timedelta | datetime
ExceptionTypes = tuple[type[BaseException], ...]


@dataclass(frozen=True)
class ExecutionSpec:
    """One execution to write: everything the lifecycle needs, already validated.

    ``dispatch=False`` (a chain step, a group callback) or ``previous_id`` writes it *waiting*;
    an ``eta`` in the future writes it *scheduled*; otherwise it is *pending* with its first
    try. ``expires_at`` is absolute; ``expires_after`` (the task's ``expires=`` option, for a
    waiting execution) is counted from its release and stored on the row for that moment.
    """

    task_name: str
    queue_name: str
    max_retries: int
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    eta: datetime | None = None
    expires_at: datetime | None = None
    expires_after: float | None = None
    unique_key: str | None = None
    group_id: int | None = None
    previous_id: int | None = None
    dispatch: bool = True
    #: ``.pipe()``: the previous step's value goes first in ``args`` at its release.
    pipe: bool = False
    #: A member of a ``pass_results`` group: it is numbered (``position``) when written.
    ordered: bool = False
    #: Failure handlers (``handler`` dicts) stored on the execution.
    on_failure: list[dict[str, Any]] | None = None
    #: A failure handler's execution: the id of the execution it hangs on.
    handler_of: int | None = None
    #: The task's ``concurrency_key`` for this call (``None``: no key).
    concurrency_key: str | None = None

    @property
    def waits(self) -> bool:
        """Written *waiting*: released by what comes before it."""
        return not self.dispatch or self.previous_id is not None

    def with_call(self, args: list[Any], kwargs: dict[str, Any],
                  concurrency_key: str | None) -> ExecutionSpec:
        """This spec with one call's checked arguments: ``dataclasses.replace`` without its
        per-field work, which a bulk enqueue (a ``map``, a beat minute) pays per call."""
        spec = object.__new__(ExecutionSpec)
        spec.__dict__.update(self.__dict__, args=args, kwargs=kwargs,
                             concurrency_key=concurrency_key)
        return spec


# --- values ---------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def seconds(name: str, value: Any) -> float | None:
    """A positive number of seconds (a timedelta is converted), or ``None``."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not is_number(value):
        raise TaskUsageError(f"{name} must be seconds (a number), got {value!r}")
    if value <= 0:
        raise InvalidTaskOption(f"{name} must be positive, got {value!r}")
    return float(value)


def exception_types(name: str, value: Any) -> ExceptionTypes | None:
    """An exception class or a tuple of them, as a tuple; ``None`` stays ``None``."""
    if value is None:
        return None
    items = value if isinstance(value, tuple | list) else (value,)
    if not all(isinstance(item, type) and issubclass(item, BaseException) for item in items):
        raise TaskUsageError(f"{name} must be an exception class or a tuple of them, "
                             f"got {value!r}")
    return tuple(items)


def backoff(value: Any) -> tuple[float, float] | None:
    """``retry_backoff=(min_seconds, max_seconds)``."""
    if value is None:
        return None
    if (not isinstance(value, tuple | list) or len(value) != 2
            or not all(is_number(v) for v in value)):
        raise TaskUsageError(f"retry_backoff must be (min_seconds, max_seconds), got {value!r}")
    low, high = value
    if not 0 <= low <= high:
        raise InvalidTaskOption(f"retry_backoff must satisfy 0 <= min <= max, got {value!r}")
    return float(low), float(high)


def max_retries(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskUsageError(f"max_retries must be an int, got {value!r}")
    if not 0 <= value <= 1000:
        raise InvalidTaskOption(f"max_retries must be from 0 to 1000, got {value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TaskUsageError(f"{name} must be True or False, got {value!r}")
    return value


def countdown(value: Any) -> float | None:
    if value is not None and (not is_number(value) or value < 0):
        raise InvalidTaskOption(f"countdown must be seconds >= 0, got {value!r}")
    return None if value is None else float(value)


def eta(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TaskUsageError(f"eta must be a datetime, got {type(value).__name__}")
    if timezone.is_naive(value):
        raise InvalidTaskOption("eta must be an aware datetime")
    return value


def task_expiry(value: Any) -> float | None:
    """The decorator's ``expires=``: seconds or a timedelta (a datetime is per call only)."""
    if isinstance(value, datetime):
        raise TaskUsageError("@TaskDecorator(expires=) takes seconds or a timedelta; give a "
                             "datetime per call with task.using(expires=...)")
    return seconds("expires", value)


def call_expiry(value: Any) -> Expiry | None:
    """``using(expires=)``: like the decorator's, or an aware datetime."""
    if isinstance(value, datetime):
        if timezone.is_naive(value):
            raise InvalidTaskOption("expires must be an aware datetime")
        return value
    if value is None:
        return None
    if not isinstance(value, timedelta) and not is_number(value):
        raise TaskUsageError(
            f"expires must be seconds, a timedelta or a datetime, got {type(value).__name__}"
        )
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if number <= 0:
        raise InvalidTaskOption(f"expires must be a positive number of seconds, got {value!r}")
    return float(number)


def unique_key(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 255):
        raise TaskUsageError(f"unique_key must be a str of 1-255 characters, got {value!r}")
    return value


def optional_str(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TaskUsageError(f"{name} must be a str, got {value!r}")
    return value


def registered(name: str, module: str) -> None:
    """``TaskUsageError`` for a task that a server process would not know: registered only
    after Django started, and sent through Pub/Sub (the inline and recording outboxes run it
    in this process, where it is known)."""
    if registry.known_at_startup(name) or outbox.get_outbox().runs_in_process:
        return
    raise TaskUsageError(
        f"{name} was registered after Django started, so a push or worker process would not "
        f"know it and could not run it. Define it in an installed app's tasks module, or add "
        f"{module!r} to I3TASKS.task_modules (modules imported at startup)."
    )


def queue_name(value: Any) -> str | None:
    """A configured queue's name (``None``: the task's, else the default queue)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TaskUsageError(f"queue_name must be a str, got {value!r}")
    return get_queue(value).queue_name


def group_id(group: Any, model: type | None = None) -> int | None:
    """The id of a ``TaskGroup`` (``__i3group__=``, ``group=``)."""
    if group is None:
        return None
    if model is not None and not isinstance(group, model):
        raise TaskUsageError(f"__i3group__ must be a TaskGroup, got {type(group).__name__}")
    pk = getattr(group, "pk", None)
    if not isinstance(pk, int):
        raise TaskUsageError("the group must be saved (TaskGroup.create) before members join it")
    return pk


# --- failure handlers -------------------------------------------------------------------------

#: What a failure handler's first argument looks like, to check its signature beforehand.
FAILURE_EXAMPLE: dict[str, Any] = {
    "execution_uuid": "", "task_name": "", "status": "failed", "error": None, "tries": 0,
}


def handler(spec: ExecutionSpec) -> dict[str, Any]:
    """A failure handler as stored on an execution or group: the spec of its call, validated
    with ``FAILURE_EXAMPLE`` first, without that argument (the real failure comes later)."""
    return {"task_name": spec.task_name, "queue_name": spec.queue_name,
            "max_retries": spec.max_retries, "args": list(spec.args[1:]),
            "kwargs": dict(spec.kwargs)}


def handler_call(stored: dict[str, Any], failure: dict[str, Any],
                 handler_of: int | None) -> ExecutionSpec:
    """The spec of a stored handler's call with ``failure`` as its first argument."""
    return ExecutionSpec(
        task_name=stored["task_name"], queue_name=stored["queue_name"],
        max_retries=stored["max_retries"], args=[failure, *stored["args"]],
        kwargs=dict(stored["kwargs"]), handler_of=handler_of,
    )


# --- calls ------------------------------------------------------------------------------------


def bind_arguments(name: str, signature: inspect.Signature, args: Sequence[Any],
                   kwargs: dict[str, Any], *, bound: bool = False) -> None:
    """``TaskUsageError`` (a ``TypeError``) when ``args``/``kwargs`` do not fit the task
    function's ``signature``: checked at ``.delay()``, as calling the function would, instead
    of failing every try later. A ``bind=True`` task's ``task_metadata`` is supplied by the
    runner."""
    if bound and "task_metadata" in kwargs:
        raise TaskUsageError(f"{name}: task_metadata is given by the runner, not by the call")
    shape = (id(signature), len(args), tuple(kwargs), bound)
    problem = _SHAPES.get(shape, _UNKNOWN)
    if problem is _UNKNOWN:
        problem = _misfit(signature, len(args), kwargs, bound)
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        _SHAPES[shape] = problem
        _SIGNATURES[id(signature)] = signature  # alive, so its id is never reused
    if problem is not None:
        raise TaskUsageError(f"{name}{signature}: {problem}")


#: Whether a call of a shape (signature, number of positional arguments, keyword names,
#: bound) fits: binding depends on the shape, never on the values, so a ``map`` or a beat
#: minute of 10,000 calls of one shape binds once.
_SHAPES: dict[tuple[int, int, tuple[str, ...], bool], str | None] = {}
_SIGNATURES: dict[int, inspect.Signature] = {}
_MAX_SHAPES = 4096
_UNKNOWN: Any = object()


def _misfit(signature: inspect.Signature, positional: int, keywords: dict[str, Any],
            bound: bool) -> str | None:
    """Why the call does not fit ``signature``, or ``None``."""
    keywords = dict.fromkeys(keywords)
    if bound:
        keywords["task_metadata"] = None
    try:
        signature.bind(*([None] * positional), **keywords)
    except TypeError as exc:
        return str(exc)
    return None


def payload(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """``ArgumentsNotSerializable`` naming the first argument JSON cannot carry,
    ``PayloadTooLarge`` past ``I3TASKS.max_payload_bytes``."""
    check_payload(name, args, kwargs, get_settings().max_payload_bytes)


def expiry_time(expires: Expiry | None, due: datetime) -> datetime | None:
    """When an execution due at ``due`` expires, for a validated ``expires``."""
    if expires is None or isinstance(expires, datetime):
        return expires
    if isinstance(expires, timedelta):
        expires = expires.total_seconds()
    return due + timedelta(seconds=expires)


def when(countdown_seconds: float | None, at: datetime | None,
         expires: Expiry | None, *, waits: bool, now: datetime
         ) -> tuple[datetime | None, datetime | None]:
    """``(eta, expires_at)`` of a call; ``InvalidTaskOption`` when it could never run."""
    if countdown_seconds is not None and at is not None:
        raise TaskUsageError("give countdown or eta, not both")
    if countdown_seconds is not None:
        at = now + timedelta(seconds=countdown_seconds)
    expires_at = None if waits and expires is None else expiry_time(expires, at or now)
    if expires_at is not None and at is not None and expires_at <= at:
        raise InvalidTaskOption(
            f"expires ({expires_at.isoformat()}) is not after eta ({at.isoformat()}): "
            "the task could never run"
        )
    return at, expires_at


# --- limits -----------------------------------------------------------------------------------

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def concurrency_limit(value: Any) -> int | None:
    """``concurrency_limit``: tries of the task (per key) running at once, 1 or more."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskUsageError(f"concurrency_limit must be an int, got {value!r}")
    if value < 1:
        raise InvalidTaskOption(f"concurrency_limit must be at least 1, got {value!r}")
    return value


def rate_limit(value: Any) -> tuple[int, float] | None:
    """``rate_limit="N/s"`` (or ``/m``, ``/h``): ``(N, period seconds)``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TaskUsageError(f"rate_limit must be a str like '10/s', got {value!r}")
    count, _, unit = value.strip().partition("/")
    if not count.strip().isdigit() or unit.strip() not in _PERIODS:
        raise InvalidTaskOption(f"rate_limit must be 'N/s', 'N/m' or 'N/h', got {value!r}")
    if int(count) < 1:
        raise InvalidTaskOption(f"rate_limit must allow at least 1 start, got {value!r}")
    return int(count), _PERIODS[unit.strip()]


def key_function(value: Any) -> Any:
    if value is not None and not callable(value):
        raise TaskUsageError(f"concurrency_key must be a function of the task's arguments, "
                             f"got {value!r}")
    return value


#: Longest ``concurrency_key`` value (the column's size).
MAX_KEY = 200


def concurrency_key_of(name: str, key: Any, args: Sequence[Any], kwargs: dict[str, Any]
                       ) -> str | None:
    """The call's key: ``key(*args, **kwargs)``, a str or ``None``; ``TaskUsageError`` when
    it raises or returns anything else (checked at ``.delay()``, before anything is
    written)."""
    if key is None:
        return None
    try:
        value = key(*args, **kwargs)
    except Exception as exc:
        raise TaskUsageError(f"{name}: concurrency_key raised {type(exc).__name__}: {exc}"
                             ) from exc
    if value is not None and (not isinstance(value, str) or len(value) > MAX_KEY):
        raise TaskUsageError(f"{name}: concurrency_key must return a str of at most "
                             f"{MAX_KEY} characters or None, got {value!r}")
    return value
