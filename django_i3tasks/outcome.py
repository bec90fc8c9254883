"""What became of one delivered message: one transport-neutral answer for the push view and
the pull worker.

``ack`` says whether Pub/Sub should forget the message (2xx for push, ack for pull) or deliver
it again (non-2xx, or a shorter ack deadline), and ``retry_after`` when that makes sense.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any


class OutcomeStatus(str, enum.Enum):
    SUCCESS = "success"
    #: The try failed and a new try was scheduled.
    RETRY = "retry_scheduled"
    #: The try failed and no retries are left: the execution failed.
    FAILED = "failed"
    #: The try already finished: a redelivered or replayed message.
    DUPLICATE = "duplicate"
    #: Another delivery is running the try (its lease has not expired).
    RUNNING = "running"
    #: The try waits for its retry backoff.
    NOT_DUE = "not_due"
    #: No such try: cleaned up, or never written.
    UNKNOWN = "unknown_try"
    #: The try was taken over by another delivery while this one ran (lease expired).
    SUPERSEDED = "superseded"
    #: The execution was cancelled: before this try was claimed, or the task stopped on a
    #: cancel request (raised ``TaskCancelled``, or failed after one). Acknowledged.
    CANCELLED = "cancelled"
    #: The execution was not started by its ``expires`` time; it never runs. Acknowledged.
    EXPIRED = "expired"
    #: Over the task's ``concurrency_limit`` or ``rate_limit``: not a try; the execution
    #: waits (``detail`` says why) and is delivered again when a slot frees.
    OVER_LIMIT = "over_limit"


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    #: Whether Pub/Sub should forget the message (2xx / ack) or deliver it again.
    ack: bool
    execution_uuid: uuid.UUID | None = None
    try_number: int | None = None
    detail: str = ""
    #: When redelivery is wanted: seconds until it makes sense.
    retry_after: float | None = None

    @classmethod
    def of(cls, message: Any, status: OutcomeStatus, ack: bool, **extra: Any) -> Outcome:
        """The outcome of the try a message (``TaskMessage``) names."""
        return cls(status, ack=ack, execution_uuid=message.execution_uuid,
                   try_number=message.try_number, **extra)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status.value}
        if self.execution_uuid is not None:
            body["execution"] = str(self.execution_uuid)
        if self.try_number is not None:
            body["try"] = self.try_number
        if self.detail:
            body["detail"] = self.detail
        if self.retry_after is not None:
            body["retry_after"] = round(self.retry_after, 3)
        return body
