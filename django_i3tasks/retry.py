"""The retry policy of a task: whether a failed try is tried again, and when.

One value per task (``Task.retry_policy``), built from the decorator's ``retry_on``,
``give_up_on``, ``retry_backoff`` and ``retry_jitter``; the execution's ``max_retries`` is
fixed when it is enqueued, so the runner passes it in. ``decide`` is the only place a retry is
decided.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .conf import get_settings
from .exceptions import TaskCancelled


def backoff_seconds(
    try_number: int, bounds: tuple[float, float] | None = None, *, jitter: bool = False,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before the try after ``try_number``: exponential, within ``bounds`` (a task's
    ``retry_backoff``, else the settings' min and max).

    ``base = min * 2 ** (try_number - 1)``; with jitter ``base * U(0.75, 1.25)``; the result
    is clamped to ``[min, max]``. Jitter spreads the retries of tasks that failed together
    (a database or API outage) so they do not all come back in the same second.
    """
    if bounds is None:
        conf = get_settings()
        bounds = (conf.retry_backoff_min_seconds, conf.retry_backoff_max_seconds)
    low, high = bounds
    delay = low * 2.0 ** min(try_number - 1, 64)
    if jitter:
        delay *= 0.75 + 0.5 * rand()
    return float(min(high, max(low, delay)))


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed try is retried: at most ``max_retries`` times, only for ``retry_on``
    errors (``None``: every error), never for ``give_up_on`` ones (checked first), after an
    exponential ``backoff`` (``None``: the settings' bounds), with ``jitter``."""

    max_retries: int = 0
    retry_on: tuple[type[BaseException], ...] | None = None
    give_up_on: tuple[type[BaseException], ...] | None = None
    backoff: tuple[float, float] | None = None
    jitter: bool = True

    def decide(self, exc: BaseException, try_number: int, *, immediate: bool = False
               ) -> float | None:
        """Seconds until the try after ``try_number`` (which failed with ``exc``), or
        ``None`` to give up: no retries left, ``give_up_on`` matches, ``retry_on`` is set and
        does not match, or the task raised ``TaskCancelled``. ``immediate`` (the inline and
        recording outboxes run everything in one go) retries at once."""
        if try_number > self.max_retries or isinstance(exc, TaskCancelled):
            return None
        if self.give_up_on is not None and isinstance(exc, self.give_up_on):
            return None
        if self.retry_on is not None and not isinstance(exc, self.retry_on):
            return None
        if immediate:
            return 0.0
        return backoff_seconds(try_number, self.backoff, jitter=self.jitter)
