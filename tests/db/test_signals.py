"""Signals: receivers see enqueued/started/finished with the right fields, once per change,
also when a message is delivered twice."""

from __future__ import annotations

import pytest
from django.db import transaction

from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.models import ExecutionStatus, TaskExecution
from tests.helpers import message_of
from tests.testapp import tasks


@pytest.mark.django_db
def test_enqueued_is_sent_after_commit_with_the_task_as_sender(events, no_publish,
                                                               django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            handle = tasks.add.delay(1, 2)
            assert events.of("enqueued") == [], "not before the transaction commits"
    (enqueued,) = events.of("enqueued")
    assert enqueued == {
        "execution_uuid": handle.uuid, "execution_id": handle.id,
        "task_name": "tests.testapp.tasks.add", "queue_name": "default", "group_id": None,
    }
    assert [sender for kind, sender, _ in events.sent] == [tasks.add]


@pytest.mark.django_db
def test_rolled_back_enqueue_sends_nothing(events, no_publish, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            tasks.add.delay(1, 2)
            raise RuntimeError("roll back")
    assert events.of("enqueued") == []


@pytest.mark.django_db
def test_started_and_finished_once_per_try_with_fields(events, no_publish, i3settings):
    i3settings(retry_backoff_min_seconds=0)
    handle = tasks.fails_once.delay("sig")
    first = message_of(handle)
    assert run_message(first).status == OutcomeStatus.RETRY
    assert run_message(first).status == OutcomeStatus.DUPLICATE  # delivered again
    second = no_publish[-1]
    assert run_message(second).status == OutcomeStatus.SUCCESS
    assert run_message(second).status == OutcomeStatus.DUPLICATE

    started = events.of("started")
    assert [s["try_number"] for s in started] == [1, 2]
    assert all(s["execution_uuid"] == handle.uuid and s["task_name"] == tasks.fails_once.name
               and s["queue_name"] == "default" for s in started)
    finished = events.of("finished")
    assert [(f["try_number"], f["status"]) for f in finished] == [
        (1, "retry_scheduled"), (2, "success")]
    retry, success = finished
    assert retry["error_type"] == "builtins.RuntimeError" and retry["error_message"]
    assert retry["retry_in"] is not None and retry["duration"] >= 0
    assert success["error_type"] == "" and success["return_value"] == "sig"


@pytest.mark.django_db
def test_failed_for_good_is_finished_failed(events, no_publish, i3settings):
    i3settings(retry_backoff_min_seconds=0)
    handle = tasks.always_fails.delay("sig")
    for _ in range(3):  # max_retries=2
        run_message(message_of(handle))
    assert [f["status"] for f in events.of("finished")] == [
        "retry_scheduled", "retry_scheduled", "failed"]
    assert TaskExecution.objects.get(pk=handle.id).status == ExecutionStatus.FAILED
