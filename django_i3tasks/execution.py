"""Running one task message: the runner shared by the push view, the pull worker and the
inline/recording outboxes.

1. Look the task up in the registry (never import anything a message names). A task this
   process has not registered cannot run here: its execution fails for good with
   ``TaskNotRegistered``, which says how to register it, instead of being dropped.
2. A first try whose execution's ``expires`` time has passed is not run: the execution
   expires (``lifecycle.expire``) and the message is acknowledged.
3. Claim the try (``lifecycle.claim``): a duplicate or concurrent delivery finds nothing to
   claim and is told why, without running anything (a cancelled try: acknowledged).
4. Run the function outside any transaction, under the task's ``time_limit``.
5. Record the outcome (``lifecycle.record_success``/``record_failure``), guarded by the claim
   token: success with what follows it, or failure with the next try after the task's
   ``RetryPolicy`` backoff, or failure for good. Any exception the task raises is a failed
   try, ``SystemExit`` included; only ``KeyboardInterrupt`` (the process is being stopped)
   escapes, and the try's lease brings it back.

Retries are new messages, one per try: the current message is acknowledged, and the next
try's message is held until due by whoever receives it when its backoff is short enough
(``timing``), else answered "not due" (non-2xx for push, a longer lease for pull) until its
backoff has passed, so Pub/Sub's own redelivery does the waiting.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from . import lifecycle, outbox, timing, tracing
from .conf import get_queue, topic_id
from .exceptions import TaskNotRegistered
from .messages import TaskMessage
from .metadata import RunningTry, TaskMetadata
from .outcome import Outcome, OutcomeStatus
from .registry import registry

if TYPE_CHECKING:
    from .task import Task

__all__ = ["Outcome", "OutcomeStatus", "run_message"]

#: Raised by the task, these stop the runner instead of being recorded: the process is being
#: interrupted, and the try's lease brings the task back.
_NOT_RECORDED = (KeyboardInterrupt, GeneratorExit)


def run_message(
    message: TaskMessage, on_claim: Callable[[uuid.UUID], None] | None = None, *,
    hold: float = 0.0, sleep: bool = True,
) -> Outcome:
    """Claim, run and record the try a message names; returns once the messages it sent
    (next try, chain steps, group callback) left or failed to (``outbox.delivering``), so the
    push view does not answer, nor the worker ack, before they are out.

    ``on_claim`` receives the claim token before the task runs: the pull worker keeps it to
    give the try back (``lifecycle.release_claim``) if it must stop before the task finishes.

    ``hold``: a try due within that many seconds is waited for here, then claimed
    (``timing``: countdowns and retries to the second); a later one is answered "not due".
    With ``sleep=False`` (the pull worker, which waits on a timer instead of in a task
    thread) one due within ``hold`` is answered "not due" with ``retry_after``, unparked.
    """
    with outbox.delivering():
        return _run(message, on_claim, hold, sleep)


def not_registered(name: str) -> TaskNotRegistered:
    return TaskNotRegistered(
        f"task {name!r} is not registered in this process: define it in the tasks module of "
        f"an app in INSTALLED_APPS, or add its module to I3TASKS.task_modules, so that every "
        f"process imports it at startup"
    )


def _claim(task: Task[..., Any], message: TaskMessage, hold: float, sleep: bool
           ) -> uuid.UUID | Outcome:
    """Claim the try, admitted by the task's limits; a try due within ``hold`` seconds (a
    countdown, a retry's backoff, the next start a rate limit allows) is waited for here when
    ``sleep``, else answered "not due" with ``retry_after`` for the caller to wait."""
    limits = (lifecycle.Limits(task.concurrency_limit, task.rate) if task.limited else None)
    deadline = time.monotonic() + hold
    while True:
        claimed = lifecycle.claim(message, task.lease_seconds, limits,
                                  hold=max(0.0, deadline - time.monotonic()))
        if not sleep or not isinstance(claimed, Outcome):
            return claimed
        wait = timing.holdable(claimed, deadline - time.monotonic())
        if wait is None:
            return claimed
        timing.sleep_until_due(wait)


def _run(message: TaskMessage, on_claim: Callable[[uuid.UUID], None] | None,
         hold: float, sleep: bool) -> Outcome:
    task = registry.get(message.task_name)
    if task is None:
        return lifecycle.fail_unrunnable(message, not_registered(message.task_name))
    if (message.expires_at is not None and message.try_number == 1
            and timezone.now() >= message.expires_at):
        expired = lifecycle.expire(message)
        if expired is not None:
            return expired
    claimed = _claim(task, message, hold, sleep)
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
            # on_success's spec (its value comes when the success is recorded); a mistake in
            # it is this try's error.
            then = task.on_success.spec([None], {}) if task.on_success is not None else None
        except _NOT_RECORDED:
            raise
        except BaseException as exc:  # noqa: BLE001 - any task error is recorded, not raised
            tracing.failed(span, exc)
            policy = dataclasses.replace(task.retry_policy, max_retries=message.max_retries)
            return lifecycle.record_failure(
                message, token, exc,
                retry_in=policy.decide(exc, message.try_number,
                                       immediate=outbox.get_outbox().immediate),
                duration=time.monotonic() - began, progress=running.held_progress(),
                limited=task.limited,
            )
        return lifecycle.record_success(
            message, token, value, on_success=then, duration=time.monotonic() - began,
            progress=running.held_progress(), limited=task.limited,
        )
