"""How task messages leave the process: one outbox object, chosen by settings.

- ``PubSubOutbox`` (the default): messages are published once the transaction that wrote
  their rows commits, so a rolled-back transaction publishes nothing and a worker never
  receives a message for rows it cannot see yet. Publishing goes through the process-wide
  batching publisher and does not block the caller. A publish that Pub/Sub does not confirm
  within ``I3TASKS.publish_timeout_seconds`` is logged (task, execution, try, error), counted
  (``recent_failures()``: the beat's answer and the health endpoint show it) and left to the
  recovery sweep: its try is still queued in the database, and the beat publishes it again
  after ``recovery_after_seconds``. Nothing is lost; it is late.
- ``InlineOutbox`` (``outbox="inline"``, or its alias ``force_sync=True``): every message is
  run at once, in this process, inside the caller's transaction. For tests.
- ``RecordingOutbox`` (``outbox="recording"``, or ``django_i3tasks.testing.recording()``):
  messages are kept, after commit, for a test to inspect and run.

``delivering()`` is how a caller that must not answer before its messages left (the push view
on Cloud Run, the worker before it acks, the beat) waits for what it published.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import transaction

from . import signals, tracing, transport
from .conf import get_queue, get_settings, topic_id
from .exceptions import InlineRunnerMissing
from .messages import TaskMessage
from .types import AnyQueue

logger = logging.getLogger(__name__)

#: Runs one message to its end in this process (``execution.run_message``). The app config
#: hands it over when Django is ready: the runner sits above this module.
Runner = Callable[[TaskMessage], Any]
_runner: Runner | None = None


def set_runner(runner: Runner) -> None:
    global _runner
    _runner = runner


def _run(message: TaskMessage) -> Any:
    if _runner is None:
        raise InlineRunnerMissing(
            "running a task inline needs Django to be set up (django.setup()) with "
            "'django_i3tasks' in INSTALLED_APPS"
        )
    return _runner(message)


@dataclass(frozen=True)
class Recorded:
    """A message (or a delayed execution, with ``eta`` and no message yet) a
    ``RecordingOutbox`` kept."""

    task_name: str
    queue_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    execution_id: int
    execution_uuid: UUID
    group_id: int | None
    try_number: int | None
    eta: datetime | None = None
    message: TaskMessage | None = None

    @classmethod
    def of(cls, message: TaskMessage) -> Recorded:
        return cls(
            task_name=message.task_name, queue_name=message.queue_name,
            args=list(message.args), kwargs=dict(message.kwargs),
            execution_id=message.execution_id, execution_uuid=message.execution_uuid,
            group_id=message.group_id, try_number=message.try_number, message=message,
        )


class Outbox:
    """Where ``lifecycle`` hands the messages of the rows it wrote. The lifecycle asks an
    outbox what it can do (the flags below), never which class it is."""

    #: Retries are due at once (no backoff): the inline and recording outboxes run
    #: everything in one go, and a test should not sleep through a backoff.
    immediate: bool = False
    #: ``send`` runs each message to its end before it returns, inside the caller's
    #: transaction: what was just written has finished when the call returns.
    runs_inline: bool = False
    #: Messages are run by this process (inline, or by a test from the recording outbox), so
    #: a task registered only here can run; through Pub/Sub it must be known to the server.
    runs_in_process: bool = False

    def send(self, messages: Sequence[TaskMessage]) -> None:
        """Hand over messages of rows written in the current transaction."""
        raise NotImplementedError

    def scheduled(self, recorded: Recorded) -> None:
        """A delayed execution was written (nothing to send until the beat releases it)."""


class PubSubOutbox(Outbox):
    def send(self, messages: Sequence[TaskMessage]) -> None:
        if messages:
            batch = list(messages)
            transaction.on_commit(lambda: self.publish(batch))

    def publish(self, messages: Sequence[TaskMessage]) -> None:
        """Publish now (not waiting); failures are logged and counted, never raised."""
        timeout = float(get_settings().publish_timeout_seconds)
        delivery = getattr(_local, "delivery", None)
        queues: dict[str, AnyQueue] = {}
        ready: list[tuple[TaskMessage, tuple[AnyQueue, bytes, dict[str, str]]]] = []
        traced = tracing.active()
        for message in messages:
            try:
                queue = queues.get(message.queue_name)
                if queue is None:
                    queue = queues[message.queue_name] = get_queue(message.queue_name)
                data, attributes = message.encode()
                if traced:
                    attributes.update(tracing.enqueue_attributes(
                        message.task_name, topic_id(queue), message.execution_uuid,
                        message.try_number))
            except Exception as exc:  # noqa: BLE001 - the rows are committed; recovery follows
                _publish_failed(message, exc)
                continue
            ready.append((message, (queue, data, attributes)))
        if not ready:
            return
        sent = [message for message, _ in ready]
        try:
            handover = transport.publish_many([item for _, item in ready], timeout)
        except Exception as exc:  # noqa: BLE001 - as above
            for message in sent:
                _publish_failed(message, exc)
            return
        with _in_flight_lock:
            _in_flight[handover] = len(sent)
        handover.add_done_callback(functools.partial(_published, messages=sent))
        if delivery is not None:
            delivery.add(handover, len(sent))


class InlineOutbox(Outbox):
    immediate = True
    runs_inline = True
    runs_in_process = True

    def send(self, messages: Sequence[TaskMessage]) -> None:
        for message in messages:
            _run(message)


@dataclass
class RecordingOutbox(Outbox):
    """Keeps what would be published, in order, until a test takes it.

    Kept at once, not after commit: a test usually runs inside a transaction that never
    commits. Whoever reads the records drops those whose rows a rollback removed.
    """

    immediate = True
    runs_in_process = True
    records: list[Recorded] = field(default_factory=list)

    def send(self, messages: Sequence[TaskMessage]) -> None:
        self.records.extend(Recorded.of(message) for message in messages)

    def scheduled(self, recorded: Recorded) -> None:
        self.records.append(recorded)

    def run(self, record: Recorded) -> Any:
        """Run one recorded message in this process (the runner of the push view)."""
        assert record.message is not None
        return _run(record.message)


_pubsub = PubSubOutbox()
_inline = InlineOutbox()
#: The process-wide recording outbox of ``outbox="recording"``.
recording = RecordingOutbox()
_forced: list[Outbox] = []


def get_outbox() -> Outbox:
    """The outbox in use: one pushed by ``use()`` (tests), else the settings' choice."""
    if _forced:
        return _forced[-1]
    conf = get_settings()
    mode = conf.outbox_mode
    if mode == "inline":
        return _inline
    if mode == "recording":
        return recording
    return _pubsub


@contextmanager
def use(outbox: Outbox) -> Iterator[Outbox]:
    """Send every message through ``outbox`` inside the block, in every thread (the live
    server's included): a test helper, not for production code."""
    _forced.append(outbox)
    try:
        yield outbox
    finally:
        _forced.remove(outbox)


def send(messages: Sequence[TaskMessage]) -> None:
    get_outbox().send(messages)


# --- waiting for publishes, and failures ------------------------------------------------


_local = threading.local()
#: Handovers to the transport not settled yet, with their message counts, process-wide (for
#: the wait at exit).
_in_flight: dict[futures.Future, int] = {}
_in_flight_lock = threading.Lock()


class _FailureLog:
    """Times of failed publishes in this process (the beat and health endpoint report them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: deque[float] = deque(maxlen=100_000)

    def add(self) -> None:
        with self._lock:
            self._times.append(time.monotonic())

    def since(self, seconds: float) -> int:
        cutoff = time.monotonic() - seconds
        with self._lock:
            return sum(1 for moment in self._times if moment >= cutoff)


failures = _FailureLog()


def recent_failures(seconds: float = 3600.0) -> int:
    """Failed publishes of this process in the last ``seconds``."""
    return failures.since(seconds)


def _recovery_hint(what: str = "it") -> str:
    try:
        after = get_settings().recovery_after_seconds
    except Exception:  # noqa: BLE001 - only words for a log line
        return f"the recovery sweep will republish {what}"
    return f"the recovery sweep will republish {what} after {after} s"


def _publish_failed(message: TaskMessage, exc: BaseException) -> None:
    failures.add()
    if signals.publish_failed.has_listeners():
        signals.publish_failed.send(
            sender=None, execution_uuid=message.execution_uuid, task_name=message.task_name,
            queue_name=message.queue_name, try_number=message.try_number,
            error_type=type(exc).__name__)
    logger.error(
        "Could not publish task %s (execution %s, try %s): %s: %s; the publisher resends it "
        "once Pub/Sub answers, else %s",
        message.task_name, message.execution_uuid, message.try_number,
        type(exc).__name__, " ".join(str(exc).split())[:300], _recovery_hint(),
    )


def _outcomes(handover: futures.Future, count: int) -> list[Any]:
    """Per message of a settled handover: its Pub/Sub id or the exception that failed it."""
    if handover.cancelled():
        return [futures.CancelledError("publish cancelled")] * count
    exc = handover.exception()
    return [exc] * count if exc is not None else handover.result()


def _published(handover: futures.Future, messages: list[TaskMessage]) -> None:
    with _in_flight_lock:
        _in_flight.pop(handover, None)
    for message, outcome in zip(messages, _outcomes(handover, len(messages)), strict=True):
        if isinstance(outcome, BaseException):
            _publish_failed(message, outcome)


@dataclass
class Delivery:
    """The publishes made inside one ``delivering()`` block."""

    #: The handovers to the transport (one future each) and how many messages each carried.
    handovers: dict[futures.Future, int] = field(default_factory=dict)
    #: Publishes that failed or were not confirmed in time (set when the block ends).
    failed: int = 0

    def add(self, handover: futures.Future, count: int) -> None:
        self.handovers[handover] = count

    @property
    def messages(self) -> int:
        """Messages handed over inside the block."""
        return sum(self.handovers.values())

    @property
    def published(self) -> int:
        return self.messages - self.failed

    def wait(self, timeout: float) -> int:
        """Wait for the publishes; how many failed or were not confirmed within ``timeout``."""
        if not self.handovers:
            return 0
        done, not_done = futures.wait(list(self.handovers), timeout=timeout)
        failed = sum(
            isinstance(outcome, BaseException)
            for handover in done
            for outcome in _outcomes(handover, self.handovers[handover])
        )
        unconfirmed = sum(self.handovers[handover] for handover in not_done)
        if unconfirmed:
            logger.error(
                "%d task message(s) were not confirmed by Pub/Sub within %.0f s; %s",
                unconfirmed, timeout, _recovery_hint("them"),
            )
        self.failed = failed + unconfirmed
        return self.failed


@contextmanager
def delivering(timeout: float | None = None) -> Iterator[Delivery]:
    """Collect what this thread publishes inside the block, and wait for it when the block
    ends (at most ``timeout``, by default ``publish_timeout_seconds`` plus a little).

    Used where an answer must not go out before its messages left: on Cloud Run the CPU may be
    throttled once the response is sent, and a publish left in the batch would sit there.
    Nested blocks hand their publishes to the outer one, which waits.
    """
    outer = getattr(_local, "delivery", None)
    _local.delivery = delivery = Delivery()
    try:
        yield delivery
    finally:
        _local.delivery = outer
    if outer is not None:
        outer.handovers.update(delivery.handovers)
        return
    if timeout is None:
        timeout = float(get_settings().publish_timeout_seconds) + 5.0
    delivery.wait(timeout)


def flush() -> None:
    """Send every batched message now and drop the client (management commands, tests)."""
    transport.flush()


def _wait_at_exit() -> None:
    """At interpreter exit: send what is batched and wait (bounded) for unconfirmed publishes,
    so a short script that called ``.delay()`` says so when its messages did not leave."""
    transport.flush()
    with _in_flight_lock:
        pending = dict(_in_flight)
    if not pending:
        return
    try:
        timeout = float(get_settings().publish_timeout_seconds) + 1.0
    except Exception:  # noqa: BLE001 - settings may be gone at exit
        timeout = 31.0
    Delivery(handovers=pending).wait(timeout)  # logs what stays unconfirmed


atexit.register(_wait_at_exit)
