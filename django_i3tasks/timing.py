"""Countdowns and retries to the second: a try that is not due yet is *held* by the process
that received its message, instead of being handed back to Pub/Sub.

Pub/Sub has no delayed delivery, and its redelivery after a "not due" answer follows the
subscription's retry policy (10 s at least by default, growing to 600 s), not the task's
``countdown`` or ``retry_backoff``. So a short wait is published at once and waited out here:

- ``.delay()`` with a ``countdown``/``eta`` at most ``hold_limit(queue)`` away writes the
  execution *pending* with its first try due then (``not_before``) and publishes at once;
  a retry whose backoff is within the limit is the same (its message leaves with the failure).
- The push view (``execution.run_message(hold=...)``) sleeps until the try is due, then claims
  it; the pull worker starts a timer that runs the message then, keeping it leased.
- Longer waits stay as before: a countdown is written *scheduled* and released by the beat (to
  the minute); a retry answers "not due" and Pub/Sub's redelivery brings it back.

The cost: a held push request keeps a server thread (and the push's ack deadline) for the
wait, so the limit for push queues is the queue's ack deadline minus ``HOLD_MARGIN``; a held
pull message keeps a flow-control slot. ``docs/limits-and-timing.md`` has the design.
"""

from __future__ import annotations

import time
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured

from .conf import get_queue
from .outcome import Outcome, OutcomeStatus
from .types import PushQueue

#: Seconds of a push's ack deadline kept free for the task itself after a hold.
HOLD_MARGIN = 5.0
#: The longest wait held anywhere (Pub/Sub's longest ack deadline).
MAX_HOLD = 600.0
#: How much earlier than due a held try is looked at again: the claim decides, so a try is
#: never started early; waking up a little early only costs a second claim.
_EARLY = 0.0


def hold_limit(queue_name: str | None) -> float:
    """The longest wait the process receiving a message of ``queue_name`` holds: for a push
    queue its ack deadline (the push request timeout) minus ``HOLD_MARGIN``; for a pull
    queue ``MAX_HOLD``. ``0`` for a queue that is not configured."""
    try:
        queue = get_queue(queue_name)
    except ImproperlyConfigured:
        return 0.0
    if isinstance(queue, PushQueue):
        return max(0.0, min(MAX_HOLD, float(queue.ack_deadline_seconds) - HOLD_MARGIN))
    return MAX_HOLD


def publish_now(eta: datetime, now: datetime, queue_name: str | None) -> bool:
    """Whether a call due at ``eta`` is published at once and held until due (else it is
    written *scheduled* for the beat)."""
    return (eta - now).total_seconds() <= hold_limit(queue_name)


def holdable(outcome: Outcome, limit: float) -> float | None:
    """Seconds to hold a delivery answered ``outcome`` before claiming again, or ``None`` when
    it is not held (not a "not due", or due later than ``limit``)."""
    if outcome.status != OutcomeStatus.NOT_DUE or outcome.retry_after is None:
        return None
    if outcome.retry_after > limit:
        return None
    return max(0.0, outcome.retry_after - _EARLY)


def sleep_until_due(seconds: float) -> None:
    """Sleep ``seconds`` (a held push delivery). Its own function so tests can watch it."""
    time.sleep(seconds)
