"""Running one task message: the runner shared by the push view, the pull worker and the
inline/recording outboxes.

1. Look the task up in the registry (never import anything a message names).
2. A first try whose execution's ``expires`` time has passed is not run: the execution
   expires (``lifecycle.expire``) and the message is acknowledged.
3. Claim the try (``lifecycle.claim``): a duplicate or concurrent delivery finds nothing to
   claim and is told why, without running anything (a cancelled try: acknowledged).
4. Run the function outside any transaction, under the task's ``time_limit``.
5. Record the outcome (``lifecycle.record_success``/``record_failure``), guarded by the claim
   token: success with what follows it, or failure with the next try after its backoff, or
   failure for good.

Retries are new messages, one per try: the current message is acknowledged, and the next
try's message answers "not due" (non-2xx for push, a longer lease for pull) until its backoff
has passed, so Pub/Sub's own redelivery does the waiting; there is no delayed delivery to use.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable

from django.utils import timezone

from . import lifecycle, outbox, tracing
from .conf import get_queue, get_settings, topic_id
from .exceptions import TaskCancelled
from .messages import TaskMessage
from .outcome import Outcome, OutcomeStatus
from .registry import registry
from .task import RunningTry, Task, TaskMetadata

__all__ = [
    "Outcome", "OutcomeStatus", "backoff_seconds", "release_claim", "retry_delay", "run_message",
]

release_claim = lifecycle.release_claim


def backoff_seconds(
    try_number: int, bounds: tuple[float, float] | None = None, *, jitter: bool = False,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before the try after ``try_number``: exponential, within ``bounds`` (a task's
    ``retry_backoff``, else the settings' min and max); none when the outbox runs everything
    at once (inline, recording).

    ``base = min * 2 ** (try_number - 1)``; with jitter ``base * U(0.75, 1.25)``; the result
    is clamped to ``[min, max]``. Jitter spreads the retries of tasks that failed together
    (a database or API outage) so they do not all come back in the same second.
    """
    if outbox.get_outbox().immediate:
        return 0.0
    if bounds is None:
        conf = get_settings()
        bounds = (conf.retry_backoff_min_seconds, conf.retry_backoff_max_seconds)
    low, high = bounds
    delay = low * 2.0 ** min(try_number - 1, 64)
    if jitter:
        delay *= 0.75 + 0.5 * rand()
    return float(min(high, max(low, delay)))


def retry_delay(task: Task, exc: BaseException, try_number: int, max_retries: int
                ) -> float | None:
    """Seconds until the next try after ``try_number`` failed with ``exc``, or ``None`` when
    there is none: no retries left, ``give_up_on`` matches, ``retry_on`` is set and does not
    match, or the task raised ``TaskCancelled``."""
    if try_number > max_retries or isinstance(exc, TaskCancelled):
        return None
    if task.give_up_on is not None and isinstance(exc, task.give_up_on):
        return None
    if task.retry_on is not None and not isinstance(exc, task.retry_on):
        return None
    return backoff_seconds(try_number, task.retry_backoff, jitter=task.retry_jitter)


def run_message(
    message: TaskMessage, on_claim: Callable[[uuid.UUID], None] | None = None
) -> Outcome:
    """Claim, run and record the try a message names; returns once the messages it sent
    (next try, chain steps, group callback) left or failed to (``outbox.delivering``), so the
    push view does not answer, nor the worker ack, before they are out.

    ``on_claim`` receives the claim token before the task runs: the pull worker keeps it to
    give the try back (``lifecycle.release_claim``) if it must stop before the task finishes.
    """
    with outbox.delivering():
        return _run(message, on_claim)


def _run(message: TaskMessage, on_claim: Callable[[uuid.UUID], None] | None) -> Outcome:
    task = registry.get(message.task_name)
    if task is None:
        return Outcome(
            OutcomeStatus.REJECTED,
            ack=True,
            execution_uuid=message.execution_uuid,
            detail=f"task {message.task_name!r} is not registered",
        )
    if (message.expires_at is not None and message.try_number == 1
            and timezone.now() >= message.expires_at):
        expired = lifecycle.expire(message)
        if expired is not None:
            return expired
    claimed = lifecycle.claim(message)
    if isinstance(claimed, Outcome):
        return claimed
    token = claimed
    if on_claim is not None:
        on_claim(token)
    running = RunningTry(message.execution_id, message.try_id, token)
    metadata = TaskMetadata(
        task_name=task.name,
        queue_name=message.queue_name,
        execution_uuid=message.execution_uuid,
        execution_id=message.execution_id,
        try_number=message.try_number,
        max_retries=message.max_retries,
        group_id=message.group_id,
        running=running,
    )
    began = time.monotonic()
    # The try's CONSUMER span (when a tracer provider is configured): what the recording
    # publishes (retry, chain step, group callback) continues its trace.
    with tracing.run_span(task.name, lambda: topic_id(get_queue(message.queue_name)),
                          message.execution_uuid, message.try_number, message.trace) as span:
        try:
            value = task.run(message.args, message.kwargs, metadata, time_limit=task.time_limit)
        except Exception as exc:  # noqa: BLE001 - any task error is recorded, not raised
            tracing.failed(span, exc)
            return lifecycle.record_failure(
                message, token, exc,
                retry_in=retry_delay(task, exc, message.try_number, message.max_retries),
                duration=time.monotonic() - began, progress=running.held_progress(),
            )
        return lifecycle.record_success(
            message, token, value, on_success=task.on_success,
            duration=time.monotonic() - began, progress=running.held_progress(),
        )
