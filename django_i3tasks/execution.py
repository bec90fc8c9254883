"""Running one task message: the runner shared by the push view, the pull worker and the
inline/recording outboxes.

1. Look the task up in the registry (never import anything a message names).
2. Claim the try (``lifecycle.claim``): a duplicate or concurrent delivery finds nothing to
   claim and is told why, without running anything.
3. Run the function outside any transaction.
4. Record the outcome (``lifecycle.record_success``/``record_failure``), guarded by the claim
   token: success with what follows it, or failure with the next try after its backoff, or
   failure for good.

Retries are new messages, one per try: the current message is acknowledged, and the next
try's message answers "not due" (non-2xx for push, a longer lease for pull) until its backoff
has passed, so Pub/Sub's own redelivery does the waiting; there is no delayed delivery to use.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from . import lifecycle, outbox
from .conf import get_settings
from .messages import TaskMessage
from .outcome import Outcome, OutcomeStatus
from .registry import registry
from .task import TaskMetadata

__all__ = ["Outcome", "OutcomeStatus", "backoff_seconds", "release_claim", "run_message"]

release_claim = lifecycle.release_claim


def backoff_seconds(try_number: int) -> float:
    """Delay before the try after ``try_number``: exponential, bounded by the settings
    (none when the outbox runs everything at once: inline, recording)."""
    conf = get_settings()
    if outbox.get_outbox().immediate:
        return 0.0
    delay = conf.retry_backoff_min_seconds * 2 ** (try_number - 1)
    return float(min(conf.retry_backoff_max_seconds, delay))


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
    claimed = lifecycle.claim(message)
    if isinstance(claimed, Outcome):
        return claimed
    token = claimed
    if on_claim is not None:
        on_claim(token)
    metadata = TaskMetadata(
        task_name=task.name,
        queue_name=message.queue_name,
        execution_uuid=message.execution_uuid,
        execution_id=message.execution_id,
        try_number=message.try_number,
        max_retries=message.max_retries,
        group_id=message.group_id,
    )
    began = time.monotonic()
    try:
        value = task.run(message.args, message.kwargs, metadata)
    except Exception as exc:  # noqa: BLE001 - any task error is recorded, not raised
        retry_in = (
            backoff_seconds(message.try_number)
            if message.try_number <= message.max_retries else None
        )
        return lifecycle.record_failure(
            message, token, exc, retry_in=retry_in, duration=time.monotonic() - began
        )
    return lifecycle.record_success(
        message, token, value, on_success=task.on_success, duration=time.monotonic() - began
    )
