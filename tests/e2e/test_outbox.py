"""The outbox: how messages leave, and what happens when Pub/Sub cannot be reached."""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import pytest
from django.utils import timezone

from django_i3tasks import beat, outbox, transport
from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskExecutionTry
from django_i3tasks.testing.emulator import free_port
from django_i3tasks.types import Schedule
from tests.helpers import http, wait_for
from tests.testapp import tasks

MINUTELY = Schedule("tests.testapp.beat_tasks", "tick", "* * * * *", ["unreachable"])


@pytest.fixture
def unreachable_pubsub(push_queue, monkeypatch):
    """Pub/Sub stops answering (the emulator's address now leads nowhere); yields a function
    that brings it back."""
    reachable = os.environ["PUBSUB_EMULATOR_HOST"]
    transport.flush()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")

    def back() -> None:
        transport.flush()
        os.environ["PUBSUB_EMULATOR_HOST"] = reachable

    yield back
    back()


def error_lines(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


@pytest.mark.django_db(transaction=True)
def test_failed_publishes_are_logged_counted_and_recovered_once(
        unreachable_pubsub, push_queue, live_server, i3settings, caplog):
    i3settings(publish_timeout_seconds=1, schedules=(MINUTELY,))
    failed_before = outbox.recent_failures()

    handle = tasks.add.delay(40, 2)
    transport.flush()
    wait_for(lambda: f"execution {handle.uuid}" in error_lines(caplog), timeout=20)
    logged = error_lines(caplog)
    assert "Could not publish task tests.testapp.tasks.add" in logged
    assert "the recovery sweep will republish it" in logged

    status, _, body = http("POST", f"{live_server.url}/i3/tasks-beat/")
    assert status == 200, body
    import json

    answer = json.loads(body)
    assert len(answer["enqueued"]) == 1 and answer["publish_failed"] == 1
    assert outbox.recent_failures() - failed_before >= 2

    status, _, body = http("GET", f"{live_server.url}/i3/tasks-health/")
    assert json.loads(body)["publish_failed_last_hour"] >= 2

    # Both rows wait, queued, for the recovery sweep; once Pub/Sub is back it runs each once.
    scheduled = TaskExecution.objects.get(uuid=answer["enqueued"][0]["execution"])
    assert {e.status for e in (TaskExecution.objects.get(pk=handle.id), scheduled)} == {
        ExecutionStatus.PENDING}
    unreachable_pubsub()
    i3settings(recovery_after_seconds=60)
    with outbox.delivering() as delivery:
        assert beat.recover_lost(timezone.now() + timedelta(seconds=61)) == 2
    assert not delivery.failed
    for execution in (handle.id, scheduled.pk):
        wait_for(lambda pk=execution: TaskExecution.objects.get(pk=pk).status
                 == ExecutionStatus.SUCCESS)
    assert tasks.CALLS["add:40:2"] == 1 and tasks.CALLS["tick:unreachable"] == 1
    assert [t.claims for t in TaskExecutionTry.objects.filter(
        execution_id__in=[handle.id, scheduled.pk])] == [1, 1]


@pytest.mark.django_db(transaction=True)
def test_a_delivery_returns_only_after_its_follow_up_messages_left(pull_queue, monkeypatch):
    """The push view answers (and the worker acks) only once the next try's message is out:
    on Cloud Run the CPU may be throttled after the answer."""
    from django_i3tasks.execution import OutcomeStatus, run_message
    from tests.helpers import message_of

    published = []
    real_publish = transport.publish_many

    def spy(*args, **kwargs):
        handover = real_publish(*args, **kwargs)
        published.append(handover)
        return handover

    handle = tasks.fails_once.delay("follow-up")
    execution = TaskExecution.objects.get(pk=handle.id)
    monkeypatch.setattr(transport, "publish_many", spy)
    outcome = run_message(message_of(execution))
    assert outcome.status == OutcomeStatus.RETRY
    assert len(published) == 1 and published[0].done()
    assert len(published[0].result()) == 1 and isinstance(published[0].result()[0], str)
