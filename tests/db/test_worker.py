"""The pull worker in-process on the database, without Pub/Sub: what it asks of a received
message when the database fails, when the try is not due, after a stop; and its connection
upkeep between messages."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import OperationalError, connection

from django_i3tasks import worker
from django_i3tasks.execution import Outcome, OutcomeStatus
from django_i3tasks.models import TaskExecution
from django_i3tasks.worker import Worker, WorkerOptions
from tests.helpers import Lines
from tests.testapp.worker_tasks import nap


class FakeMessage:
    """Records what the worker asks of a received message (in-process tests)."""

    def __init__(self, data: bytes = b"", attributes: dict[str, str] | None = None) -> None:
        self.data, self.attributes = data, attributes or {}
        self.message_id, self.ack_id = "m1", "a1"
        self.calls: list[tuple[str, Any]] = []

    def ack(self) -> None:
        self.calls.append(("ack", None))

    def nack(self) -> None:
        self.calls.append(("nack", None))

    def modify_ack_deadline(self, seconds: int) -> None:
        self.calls.append(("modify_ack_deadline", seconds))

    def drop(self) -> None:
        self.calls.append(("drop", None))


def _unit_worker() -> Worker:
    return Worker(WorkerOptions("heavy"), out=Lines())


@pytest.mark.django_db
def test_database_error_redelivers_later(monkeypatch, no_publish):
    nap.delay("db")
    data, attributes = no_publish[0].encode()

    def broken(*args: Any, **kwargs: Any) -> Outcome:
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(worker, "run_message", broken)
    target = _unit_worker()
    message = FakeMessage(data, attributes)
    target.handle(message)
    assert message.calls == [("modify_ack_deadline", 10), ("drop", None)]
    assert target.stats.counts["error"] == 1 and target.stats.in_flight == 0


@pytest.mark.django_db
@pytest.mark.parametrize("retry_after, deadline", [(3600, 600), (None, 10)])
def test_not_due_sets_the_deadline_to_when_it_is_due(monkeypatch, no_publish, retry_after,
                                                     deadline):
    nap.delay("later")
    data, attributes = no_publish[0].encode()
    monkeypatch.setattr(worker, "run_message", lambda *a, **k: Outcome(
        OutcomeStatus.NOT_DUE, ack=False, retry_after=retry_after))
    message = FakeMessage(data, attributes)
    target = _unit_worker()
    target._hold = 300.0  # due later than the worker holds (sooner: tests/db/test_limits.py)
    target.handle(message)
    assert message.calls == [("modify_ack_deadline", deadline), ("drop", None)]


@pytest.mark.django_db
def test_messages_after_stop_are_nacked_unread(no_publish):
    target = _unit_worker()
    target.stop("test")
    message = FakeMessage(b"anything")
    target.handle(message)
    assert message.calls == [("nack", None)]


@pytest.mark.django_db(transaction=True)
def test_connection_is_health_checked_after_idle_time_not_before_every_message(monkeypatch):
    """``CONN_HEALTH_CHECKS`` costs a query; while messages flow it is not repeated before each
    one, after an idle second it is, and a connection with errors is checked (and closed if
    broken) at once."""
    monkeypatch.setitem(connection.settings_dict, "CONN_HEALTH_CHECKS", True)
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 600)
    checks = []
    real = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(1) or real())

    def message() -> None:  # what a message does to the connection, between the tidy-ups
        worker._tidy_connections()
        TaskExecution.objects.exists()
        worker._tidy_connections()

    connection.close()
    connection.ensure_connection()  # connects with the settings above
    monkeypatch.delattr(worker._recent, "used", raising=False)
    message()
    assert len(checks) == 1  # the first message of a thread: checked
    message()
    message()
    assert len(checks) == 1  # messages in a row: not again
    worker._recent.used = time.monotonic() - worker.HEALTH_CHECK_IDLE_SECONDS - 0.1
    message()
    assert len(checks) == 2  # after an idle second: checked again
    connection.errors_occurred = True
    message()
    assert len(checks) == 3 and not connection.errors_occurred
