"""The shared execution path: claims under duplicate delivery, leases, outcomes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskExecutionTry, TryStatus
from tests.helpers import message_of
from tests.testapp import tasks


def queued_message(task, *args, **kwargs):
    """Write an execution like .delay() does (messages go to the ``no_publish`` list)."""
    execution = TaskExecution.objects.get(pk=task.delay(*args, **kwargs).id)
    return message_of(execution)


@pytest.mark.django_db
def test_finished_try_is_a_duplicate(no_publish):
    message = queued_message(tasks.add, 1, 1)
    assert run_message(message).status == OutcomeStatus.SUCCESS
    again = run_message(message)
    assert again.status == OutcomeStatus.DUPLICATE and again.ack
    assert tasks.CALLS["add:1:1"] == 1


@pytest.mark.django_db
def test_retry_is_not_due_before_its_backoff(no_publish, i3settings):
    i3settings(retry_backoff_min_seconds=60, retry_backoff_max_seconds=60)
    message = queued_message(tasks.always_fails, "nd")
    no_publish.clear()
    outcome = run_message(message)
    assert outcome.status == OutcomeStatus.RETRY and outcome.ack
    (next_message,) = no_publish
    assert next_message.try_number == 2 and next_message.try_id != message.try_id
    early = run_message(next_message)
    assert early.status == OutcomeStatus.NOT_DUE and not early.ack
    assert 50 < early.retry_after <= 60
    assert tasks.CALLS["always_fails:nd"] == 1
    TaskExecutionTry.objects.filter(pk=next_message.try_id).update(
        not_before=timezone.now() - timedelta(seconds=1))
    assert run_message(next_message).status == OutcomeStatus.RETRY
    assert tasks.CALLS["always_fails:nd"] == 2


@pytest.mark.django_db
def test_running_try_with_live_lease_is_not_run_again(no_publish):
    message = queued_message(tasks.add, 2, 2)
    TaskExecutionTry.objects.filter(pk=message.try_id).update(
        status=TryStatus.RUNNING, lease_expires_at=timezone.now() + timedelta(minutes=5))
    outcome = run_message(message)
    assert outcome.status == OutcomeStatus.RUNNING and not outcome.ack
    assert tasks.CALLS["add:2:2"] == 0


@pytest.mark.django_db
def test_expired_lease_is_taken_over_and_the_old_claim_cannot_finish(no_publish):
    """A worker died mid-task: after the lease the try runs again; the old claimant's late
    finish is refused because its claim token is stale."""
    from django_i3tasks import lifecycle

    message = queued_message(tasks.add, 3, 3)
    TaskExecutionTry.objects.filter(pk=message.try_id).update(
        status=TryStatus.RUNNING, claims=1, claim_token="00000000-0000-0000-0000-000000000001",
        lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert run_message(message).status == OutcomeStatus.SUCCESS
    task_try = TaskExecutionTry.objects.get(pk=message.try_id)
    assert task_try.claims == 2
    import uuid

    stale = lifecycle.record_success(message,
                                     uuid.UUID("00000000-0000-0000-0000-000000000001"), 6)
    assert stale.status == OutcomeStatus.SUPERSEDED and not stale.ack


@pytest.mark.django_db
def test_unknown_try_is_acknowledged(no_publish):
    import dataclasses

    message = queued_message(tasks.add, 4, 4)
    ghost = dataclasses.replace(message, try_id=message.try_id + 1000)
    outcome = run_message(ghost)
    assert outcome.status == OutcomeStatus.UNKNOWN and outcome.ack
    assert TaskExecution.objects.get(pk=message.execution_id).status == ExecutionStatus.PENDING


@pytest.mark.django_db
def test_unregistered_task_fails_its_execution_for_good_naming_the_fix(no_publish):
    """A task this process does not know is never dropped silently: its execution fails at
    once, with an error that says how to register it, and a duplicate changes nothing."""
    import dataclasses

    message = dataclasses.replace(queued_message(tasks.add, 5, 5),
                                  task_name="tests.testapp.nope.task")
    outcome = run_message(message)
    assert outcome.status == OutcomeStatus.FAILED and outcome.ack
    assert outcome.detail == "django_i3tasks.exceptions.TaskNotRegistered"
    failed = TaskExecutionTry.objects.get(pk=message.try_id)
    assert failed.status == TryStatus.FAILED
    assert "'tests.testapp.nope.task' is not registered" in failed.error_message
    assert "I3TASKS.task_modules" in failed.error_message
    assert failed.execution.status == "failed"
    assert TaskExecutionTry.objects.filter(execution_id=message.execution_id).count() == 1
    assert run_message(message).status == OutcomeStatus.DUPLICATE
