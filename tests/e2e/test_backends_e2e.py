"""``PubSubBackend`` end to end: Django's tasks API through the real emulator's push
subscription to the live server over HTTP.

Runs on Django 6 (``django.tasks``) and on Django 4.2/5.2 with the ``django-tasks`` backport;
skipped where neither is installed.
"""

from __future__ import annotations

import time
from importlib.util import find_spec

import pytest

if find_spec("django.tasks") is None and find_spec("django_tasks") is None:
    pytest.skip(
        "Django's tasks API is not installed (Django 6's django.tasks, or the django-tasks "
        "backport on Django < 6)", allow_module_level=True,
    )

from asgiref.sync import async_to_sync

from django_i3tasks import transport
from django_i3tasks.backends import TaskResultStatus
from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskExecutionTry
from tests.helpers import api_backend, post_around_delivery, wait_for
from tests.testapp import api_tasks, tasks

pytestmark = pytest.mark.django_db(transaction=True)


def finished(result) -> bool:
    result.refresh()
    return result.is_finished


def settle(seconds: float = 2.0) -> None:
    """Give Pub/Sub time to (wrongly) deliver more; redelivery backoff is 0-1 s here."""
    time.sleep(seconds)


def test_enqueue_runs_once_through_push_and_refresh_agrees_with_get_result(push_queue):
    result = api_tasks.api_add.enqueue(20, 22)
    transport.flush()
    wait_for(lambda: finished(result))
    settle()
    assert tasks.CALLS["api_add:20:22"] == 1
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 42
    assert result.attempts == 1 and result.errors == []
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    for again in (api_backend().get_result(result.id), api_tasks.api_add.get_result(result.id)):
        assert (again.id, again.status, again.return_value, again.attempts) == (
            result.id, TaskResultStatus.SUCCESSFUL, 42, 1)
        assert again.task.func is api_tasks.api_add.func


def test_failing_task_is_failed_with_its_error(push_queue):
    result = api_tasks.api_fails.enqueue("e2e")
    transport.flush()
    wait_for(lambda: finished(result))
    settle()
    assert tasks.CALLS["api_fails:e2e"] == 1  # OPTIONS MAX_RETRIES=0: one try
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1
    (error,) = result.errors
    assert error.exception_class is ValueError
    assert "Traceback" in error.traceback and "api boom e2e" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018
    assert api_backend().get_result(result.id).status == TaskResultStatus.FAILED


def test_context_attempt_is_the_try_number(push_queue):
    result = api_tasks.api_context.enqueue("ctx")  # backend "retrying": MAX_RETRIES=1
    transport.flush()
    wait_for(lambda: finished(result), timeout=30)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {
        "attempt": 2, "id": result.id, "status": "RUNNING", "errors": 1,
    }
    assert result.attempts == 2 and len(result.errors) == 1
    assert result.errors[0].exception_class is RuntimeError
    assert result.started_at < result.last_attempted_at
    assert tasks.CALLS["api_context:ctx"] == 2


def test_duplicate_delivery_of_an_api_task_runs_once(push_queue):
    """The emulator delivers the message while the test posts the same envelope twice more."""
    result = api_tasks.api_slow.enqueue("dup", 0.5)
    execution = TaskExecution.objects.get(uuid=result.id)
    answers = post_around_delivery(push_queue, execution, lambda: finished(result))
    settle()
    assert tasks.CALLS["api_slow:dup"] == 1
    assert answers[-1] == 200 and all(code in (200, 409) for code in answers)
    assert TaskExecutionTry.objects.get(execution__uuid=result.id).claims == 1
    assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts == 1


def test_async_task_with_aenqueue_and_aget_result(push_queue):
    result = async_to_sync(api_tasks.api_async_double.aenqueue)(21)
    transport.flush()
    wait_for(lambda: TaskExecution.objects.get(uuid=result.id).status == ExecutionStatus.SUCCESS)
    fetched = async_to_sync(api_backend().aget_result)(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL and fetched.return_value == 42
    async_to_sync(result.arefresh)()
    assert result.return_value == 42
    assert tasks.CALLS["api_async_double:21"] == 1
