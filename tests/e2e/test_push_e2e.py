"""End to end: ``.delay()`` -> real emulator push subscription -> push view over HTTP."""

from __future__ import annotations

import time

import pytest

from django_i3tasks import transport
from django_i3tasks.models import (
    ExecutionStatus,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TryStatus,
)
from tests.helpers import post_around_delivery, wait_for
from tests.middleware import PUSHES, idle
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def execution_status(pk: int) -> str:
    return TaskExecution.objects.get(pk=pk).status


def settle(seconds: float = 2.0) -> None:
    """Give Pub/Sub time to (wrongly) deliver more; redelivery backoff is 0-1 s here."""
    time.sleep(seconds)


def test_delay_runs_once_and_records_try_and_result(push_queue):
    handle = tasks.add.delay(2, 3)
    transport.flush()
    wait_for(lambda: execution_status(handle.id) == ExecutionStatus.SUCCESS)
    settle()
    assert tasks.CALLS["add:2:3"] == 1
    execution = TaskExecution.objects.get(pk=handle.id)
    assert execution.finished_at is not None
    (only_try,) = execution.tries.all()
    assert only_try.status == TryStatus.SUCCESS and only_try.number == 1
    assert only_try.started_at <= only_try.finished_at and only_try.duration >= 0
    assert only_try.claims == 1
    assert TaskExecutionResult.objects.get(execution=execution).value == 5


def test_failing_task_runs_1_plus_max_retries_then_stops(push_queue):
    handle = tasks.always_fails.delay("e2e")
    transport.flush()
    wait_for(lambda: execution_status(handle.id) == ExecutionStatus.FAILED, timeout=30)
    wait_for(idle, timeout=10)  # the push that recorded the failure is counted
    pushes_when_failed = PUSHES[str(handle.uuid)]
    settle(3)
    assert tasks.CALLS["always_fails:e2e"] == 3
    tries = list(TaskExecutionTry.objects.filter(execution_id=handle.id).order_by("number"))
    assert [t.number for t in tries] == [1, 2, 3]
    for task_try in tries:
        assert task_try.status == TryStatus.FAILED
        assert task_try.error_type == "builtins.ValueError"
        assert task_try.error_message == "boom e2e"
        assert "Traceback" in task_try.traceback and "boom e2e" in task_try.traceback
        assert task_try.started_at and task_try.finished_at
    # Backoff is honoured: each retry starts after the previous try's not_before.
    for previous, current in zip(tries, tries[1:], strict=False):
        assert current.started_at >= current.not_before >= previous.finished_at
    # Pub/Sub stopped delivering: no push for this execution after it failed.
    assert PUSHES[str(handle.uuid)] == pushes_when_failed
    assert not hasattr(TaskExecution.objects.get(pk=handle.id), "result_cache")


def test_retry_then_success(push_queue):
    handle = tasks.fails_once.delay("again")
    transport.flush()
    wait_for(lambda: execution_status(handle.id) == ExecutionStatus.SUCCESS, timeout=30)
    statuses = list(TaskExecutionTry.objects.filter(execution_id=handle.id)
                    .order_by("number").values_list("status", flat=True))
    assert statuses == ["failed", "success"]
    assert TaskExecutionResult.objects.get(execution_id=handle.id).value == "again"


def test_same_envelope_three_times_runs_once(push_queue):
    """The emulator delivers the message while the test posts the same envelope twice more."""
    handle = tasks.slow.delay("dup", 0.5)
    execution = TaskExecution.objects.get(pk=handle.id)
    answers = post_around_delivery(
        push_queue, execution, lambda: execution_status(handle.id) == ExecutionStatus.SUCCESS)
    settle()
    assert tasks.CALLS["slow:dup"] == 1
    assert answers[-1] == 200
    assert all(code in (200, 409) for code in answers)
    assert TaskExecutionTry.objects.get(execution_id=handle.id).claims == 1


def test_bind_metadata_end_to_end(push_queue):
    handle = tasks.whoami.delay("meta")
    transport.flush()
    wait_for(lambda: execution_status(handle.id) == ExecutionStatus.SUCCESS)
    value = TaskExecutionResult.objects.get(execution_id=handle.id).value
    assert value == {"task": "tests.testapp.tasks.whoami", "try": 1,
                     "execution": str(handle.uuid), "queue": "default"}
