"""Task control in-process: the state transitions of cancel, expiry, unique keys, progress
and the retry policy through the shared runner (``run_message``), bad call options, the
status endpoint and the admin. Their races are in ``tests/e2e/test_control_races.py``, what
needs no database in ``tests/unit/test_control_options.py``."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

import django_i3tasks
from django_i3tasks import (
    TaskFailed,
    TaskGroup,
    TaskResultDoesNotExist,
    get_result,
    lifecycle,
    signals,
)
from django_i3tasks.exceptions import InvalidTaskOption, TaskUsageError
from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.models import TaskExecution, TaskExecutionTry
from tests.helpers import message_of
from tests.testapp import control_tasks as ct
from tests.testapp.tasks import CALLS


def status_of(handle) -> str:
    return TaskExecution.objects.get(pk=handle.id).status


# --- results ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_get_result_by_uuid_from_the_package_and_the_task(no_publish):
    handle = ct.noted.delay("r")
    assert django_i3tasks.get_result(handle.uuid).status == "pending"
    assert ct.noted.get_result(str(handle.uuid)).task_name == ct.noted.name
    with pytest.raises(TaskResultDoesNotExist):
        ct.sleepy.get_result(handle.uuid)  # another task's execution
    with pytest.raises(TaskResultDoesNotExist):
        get_result(uuid.uuid4())
    with pytest.raises(TaskResultDoesNotExist, match="not an execution uuid"):
        get_result("nope")
    run_message(no_publish[0])
    result = handle.get_result()
    assert (result.status, result.return_value, result.tries) == ("success", "r", 1)


@pytest.mark.django_db
def test_wait_result_inside_a_transaction_is_refused_with_a_reason(no_publish):
    with transaction.atomic():
        handle = ct.noted.delay("atomic")
        with pytest.raises(TaskUsageError, match="inside transaction.atomic"):
            handle.wait_result(timeout=1)


@pytest.mark.django_db
def test_wait_result_with_force_sync_returns_at_once(i3settings):
    i3settings(force_sync=True)
    assert ct.noted.delay("fs").wait_result(timeout=0) == "fs"
    with pytest.raises(TaskFailed, match="nothing for fs"):
        ct.fails_at_once.delay("fs").wait_result()


@pytest.mark.django_db
def test_wait_result_refuses_a_bad_timeout(no_publish):
    with pytest.raises(TaskUsageError, match="timeout"):
        ct.noted.delay("bt").wait_result(timeout="soon")


# --- cancel -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancelled_chain_step_skips_the_later_steps(no_publish):
    first = ct.noted.delay("a")
    second = first.then(ct.noted, "b")
    third = second.then(ct.noted, "c")
    assert first.cancel() is True
    assert [status_of(h) for h in (first, second, third)] == ["cancelled", "skipped", "skipped"]
    outcome = run_message(no_publish[0])  # the message arrives after the cancel
    assert outcome.status == OutcomeStatus.CANCELLED and outcome.ack
    assert CALLS["noted:a"] == 0
    late = first.then(ct.noted, "d")  # a step added after the cancel is skipped at once
    assert status_of(late) == "skipped"


@pytest.mark.django_db
def test_cancelling_a_waiting_step_skips_what_follows_it(no_publish):
    head = ct.noted.build_chain("w")
    tail = head.then(ct.noted, "w2")
    assert head.cancel() is True
    assert (status_of(head), status_of(tail)) == ("cancelled", "skipped")


@pytest.mark.django_db
def test_cancelled_group_member_fails_the_group(no_publish):
    callback = ct.noted.build_chain("callback")
    group = TaskGroup.create(callback=callback, total_count=2)
    first = ct.noted.delay("m1", __i3group__=group)
    second = ct.noted.delay("m2", __i3group__=group)
    assert first.cancel() is True
    group.refresh_from_db()
    assert group.status == "failed"
    assert status_of(callback) == "skipped"
    assert run_message(message_of(second)).status == OutcomeStatus.SUCCESS
    group.refresh_from_db()
    assert group.status == "failed" and status_of(callback) == "skipped"
    assert CALLS["noted:callback"] == 0


@pytest.mark.django_db
def test_cancel_of_a_scheduled_execution(no_publish):
    handle = ct.noted.using(countdown=3600).delay("later")
    assert status_of(handle) == "scheduled"
    assert handle.cancel() is True
    assert status_of(handle) == "cancelled"
    assert lifecycle.release(TaskExecution.objects.filter(pk=handle.id)) == []


@pytest.mark.django_db
def test_a_failure_after_a_cancel_request_is_not_retried(no_publish):
    """The task ignores the request and fails: cancelled, no next try."""
    handle = ct.fails_at_once.delay("ign")
    TaskExecution.objects.filter(pk=handle.id).update(max_retries=3)
    message = message_of(handle)
    token = lifecycle.claim(message)
    assert isinstance(token, uuid.UUID)
    assert handle.cancel() is True  # running: asked to stop
    result = handle.get_result()
    assert result.status == "running" and result.cancel_requested
    outcome = lifecycle.record_failure(message, token, LookupError("x"), retry_in=0.0)
    assert outcome.status == OutcomeStatus.CANCELLED and outcome.ack
    assert status_of(handle) == "cancelled"
    assert TaskExecutionTry.objects.filter(execution_id=handle.id).count() == 1


@pytest.mark.django_db
def test_task_finished_signal_says_cancelled_once(no_publish):
    seen = []

    def receiver(**kwargs):
        seen.append(kwargs["status"])

    signals.task_finished.connect(receiver)
    try:
        handle = ct.noted.delay("sig")
        message = message_of(handle)
        token = lifecycle.claim(message)
        assert isinstance(token, uuid.UUID)
        handle.cancel()
        lifecycle.record_failure(message, token, django_i3tasks.TaskCancelled(), retry_in=None)
        lifecycle.record_failure(message, token, django_i3tasks.TaskCancelled(), retry_in=None)
    finally:
        signals.task_finished.disconnect(receiver)
    assert seen == ["cancelled"]


# --- expiry -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_expires_option_of_the_task_and_of_the_call(no_publish):
    handle = ct.expiring.delay("e")
    execution = TaskExecution.objects.get(pk=handle.id)
    assert execution.expires_at is not None
    assert message_of(handle).expires_at == execution.expires_at
    time.sleep(0.6)
    outcome = run_message(message_of(handle))
    assert outcome.status == OutcomeStatus.EXPIRED and outcome.ack
    assert status_of(handle) == "expired" and CALLS["expiring:e"] == 0
    fresh = ct.noted.using(expires=timedelta(minutes=5)).delay("fresh")
    assert run_message(message_of(fresh)).status == OutcomeStatus.SUCCESS


@pytest.mark.django_db
def test_expiry_counts_from_the_eta(no_publish):
    eta = timezone.now() + timedelta(hours=1)
    handle = ct.noted.using(eta=eta, expires=60).delay("eta")
    assert TaskExecution.objects.get(pk=handle.id).expires_at == eta + timedelta(seconds=60)
    with pytest.raises(InvalidTaskOption, match="could never run"):
        ct.noted.using(eta=eta, expires=timezone.now() + timedelta(minutes=1)).delay("never")


@pytest.mark.django_db
def test_expired_chain_step_skips_what_follows(no_publish):
    handle = ct.noted.using(expires=0.2).delay("ex")
    after = handle.then(ct.noted, "after")
    time.sleep(0.3)
    assert run_message(message_of(handle)).status == OutcomeStatus.EXPIRED
    assert status_of(after) == "skipped"


# --- unique keys --------------------------------------------------------------------------


@pytest.mark.django_db
def test_unique_key_returns_the_open_execution(no_publish):
    first = ct.noted.using(unique_key="report:1").delay("u")
    again = ct.noted.using(unique_key="report:1").delay("u")
    assert again.uuid == first.uuid and len(no_publish) == 1
    other = ct.noted.apply_async(("u",), unique_key="report:2")
    assert other.uuid != first.uuid
    run_message(no_publish[0])
    after = ct.noted.using(unique_key="report:1").delay("u")  # finished: the key is free
    assert after.uuid != first.uuid and len(no_publish) == 3


# --- progress -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_progress_is_throttled_and_written_only_by_the_claim_holder(no_publish):
    from django_i3tasks.task import RunningTry

    handle = ct.noted.delay("pr")
    message = message_of(handle)
    token = lifecycle.claim(message)
    assert isinstance(token, uuid.UUID)
    running = RunningTry(message.execution_id, message.try_id, token)
    writes = []
    original = lifecycle.write_progress

    def counting(*args):
        writes.append(args[2])
        return original(*args)

    lifecycle.write_progress = counting
    try:
        for step in range(50):  # 50 calls in a tight loop
            running.progress({"current": step, "total": 50, "message": ""})
    finally:
        lifecycle.write_progress = original
    assert 1 <= len(writes) <= 3
    assert running.held_progress() == {"current": 49, "total": 50, "message": ""}
    stranger = RunningTry(message.execution_id, message.try_id, uuid.uuid4())
    assert lifecycle.write_progress(message.try_id, stranger.token, {"current": 99}) is False
    lifecycle.record_success(message, token, "ok", progress=running.held_progress())
    assert handle.get_result().progress.current == 49


# --- time limits, retry policy ------------------------------------------------------------


@pytest.mark.django_db
def test_a_task_that_swallows_its_time_limit_is_still_failed(no_publish):
    outcome = run_message(message_of(ct.swallows_the_limit.delay("s")))
    assert outcome.status == OutcomeStatus.FAILED
    (task_try,) = TaskExecutionTry.objects.filter(execution__task_name=ct.swallows_the_limit.name)
    assert task_try.error_type == "django_i3tasks.exceptions.TimeLimitExceeded"
    assert task_try.duration < 5


@pytest.mark.django_db
def test_an_async_task_is_cancelled_at_its_time_limit(no_publish):
    outcome = run_message(message_of(ct.async_too_long.delay("a")))
    assert outcome.status == OutcomeStatus.FAILED
    assert "TimeLimitExceeded" in outcome.detail
    assert CALLS["async_too_long:a"] == 1 and CALLS["async_too_long:a:finished"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize("options, error, words", [
    ({"countdown": -5}, InvalidTaskOption, "countdown"),
    ({"eta": "tomorrow"}, TaskUsageError, "eta must be a datetime"),
    ({"expires": "soon"}, TaskUsageError, "expires must be seconds"),
    ({"expires": 0}, InvalidTaskOption, "expires must be a positive"),
    ({"unique_key": 7}, TaskUsageError, "unique_key"),
    ({"unique_key": "x" * 256}, TaskUsageError, "unique_key"),
])
def test_bad_call_options_are_named_and_write_nothing(no_publish, options, error, words):
    with pytest.raises(error, match=words):
        ct.noted.using(**options).delay("bad")
    assert not TaskExecution.objects.exists() and no_publish == []


# --- status endpoint, admin ---------------------------------------------------------------


@pytest.mark.django_db
def test_status_endpoint_shows_progress_and_new_statuses(client, no_publish):
    handle = ct.counts_up.delay("st", 2, 0.0)
    message = message_of(handle)
    token = lifecycle.claim(message)
    assert isinstance(token, uuid.UUID)
    lifecycle.write_progress(message.try_id, token, {"current": 1, "total": 2, "message": "m"})
    body = client.get(f"/i3/tasks-status/{handle.uuid}/").json()
    assert body["state"] == "running"
    assert body["progress"] == {"current": 1, "total": 2, "message": "m"}
    handle.cancel()
    body = client.get(f"/i3/tasks-status/{handle.uuid}/").json()
    assert body["cancel_requested"] is True
    other = ct.noted.delay("st2")
    other.cancel()
    body = client.get(f"/i3/tasks-status/{other.uuid}/").json()
    assert body["status"] == "cancelled" and body["tries"][0]["status"] == "cancelled"


@pytest.mark.django_db
def test_admin_cancel_action_and_progress(admin_client, no_publish):
    waiting = ct.noted.delay("adm")
    done = ct.noted.delay("adm2")
    run_message(no_publish[1])
    url = reverse("admin:django_i3tasks_taskexecution_changelist")
    response = admin_client.post(url, {"action": "cancel",
                                       "_selected_action": [waiting.id, done.id]}, follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    assert "1 execution(s) cancelled" in text and "1 selected execution(s) had already" in text
    assert (status_of(waiting), status_of(done)) == ("cancelled", "success")
    progress = ct.counts_up.delay("adm3", 4, 0.0)
    message = message_of(progress)
    token = lifecycle.claim(message)
    lifecycle.write_progress(message.try_id, token, {"current": 1, "total": 4, "message": "go"})
    page = admin_client.get(reverse("admin:django_i3tasks_taskexecution_change",
                                    args=[progress.id]))
    assert "1 / 4 (25%) go" in page.content.decode()
