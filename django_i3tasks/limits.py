"""Time limits: stop a task that runs past its ``time_limit``.

- ``async def`` tasks are awaited under ``asyncio.wait_for``: at the limit the coroutine is
  cancelled (``CancelledError`` at its current ``await``) and ``TimeLimitExceeded`` is raised.
- Sync tasks run in the caller's thread (so they keep its database connection); a timer
  thread raises ``TimeLimitExceeded`` *in that thread* at the limit, with CPython's
  ``PyThreadState_SetAsyncExc``. The exception is raised between two bytecodes of Python code:
  a blocking C call (``time.sleep(60)``, a socket read without timeout, a long database query)
  finishes first, and only then is the task interrupted.

Either way a task that went past its limit is never recorded as a success: if it swallowed
the exception and returned, ``TimeLimitExceeded`` is raised when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .exceptions import TimeLimitExceeded

T = TypeVar("T")


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> int:
    return int(ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    ))


class _Alarm:
    """Raises ``TimeLimitExceeded`` in one thread after ``seconds``, unless disarmed first."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.thread_id = threading.get_ident()
        self.lock = threading.Lock()
        self.done = False
        self.fired = False
        self.timer = threading.Timer(seconds, self.fire)
        self.timer.daemon = True

    def fire(self) -> None:
        with self.lock:
            if not self.done:
                self.fired = True
                _set_async_exc(self.thread_id, TimeLimitExceeded)

    def disarm(self) -> None:
        """Stop the timer; if it fired, make sure no exception is left pending in the thread
        (it would surface in whatever runs next) and raise it here instead."""
        with self.lock:
            self.done = True
            self.timer.cancel()
            fired = self.fired
            if fired:
                _set_async_exc(self.thread_id, None)
        if fired:
            raise TimeLimitExceeded(f"time limit of {self.seconds:g} s exceeded")


def call_with_limit(func: Callable[[], T], seconds: float | None) -> T:
    """``func()`` in this thread, interrupted by ``TimeLimitExceeded`` after ``seconds``."""
    if seconds is None:
        return func()
    alarm = _Alarm(seconds)
    alarm.timer.start()
    try:
        try:
            result = func()
        finally:
            alarm.disarm()
    except TimeLimitExceeded as exc:
        if not str(exc):  # raised by the timer inside the task: say which limit
            raise TimeLimitExceeded(f"time limit of {seconds:g} s exceeded") from None
        raise
    return result


async def await_with_limit(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``await awaitable``, cancelled with ``TimeLimitExceeded`` after ``seconds``.

    A ``TimeoutError`` the task raises itself stays what it is (not taken for the limit)."""
    if seconds is None:
        return await awaitable
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise TimeLimitExceeded(f"time limit of {seconds:g} s exceeded")
    return task.result()
