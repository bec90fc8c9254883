"""``PubSubBackend``: Django's tasks API (``@task``, ``.enqueue()``, ``TaskResult``) on our engine.

Runs on Django 6 (``django.tasks``) and on Django 4.2/5.2 with the ``django-tasks`` backport;
skipped where neither is installed. The end-to-end tests are in
``tests/e2e/test_backends_e2e.py``.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from importlib.util import find_spec
from typing import Any

import pytest

if find_spec("django.tasks") is None and find_spec("django_tasks") is None:
    pytest.skip(
        "Django's tasks API is not installed (Django 6's django.tasks, or the django-tasks "
        "backport on Django < 6)", allow_module_level=True,
    )

import django
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_i3tasks import outbox
from django_i3tasks.backends import (
    TASKS_API,
    ApiTask,
    BaseTaskBackend,
    InvalidTask,
    PubSubBackend,
    TaskResultDoesNotExist,
    TaskResultStatus,
)
from django_i3tasks.models import ExecutionStatus, TaskExecution
from django_i3tasks.registry import registry
from tests.helpers import api_backend
from tests.testapp import api_tasks, tasks

if TASKS_API == "django.tasks":
    from django.tasks import task
else:
    from django_tasks import task

pytestmark = pytest.mark.django_db(transaction=True)


# --- the backend and its API ----------------------------------------------------------------


def test_base_class_is_the_api_of_this_django():
    expected = "django.tasks" if django.VERSION >= (6,) else "django_tasks"
    assert TASKS_API == expected
    assert BaseTaskBackend.__module__ == f"{expected}.backends.base"
    assert issubclass(PubSubBackend, BaseTaskBackend)
    flags = api_backend()
    assert (flags.supports_defer, flags.supports_async_task, flags.supports_get_result,
            flags.supports_priority) == (True, True, True, False)


def late_defined(x):
    return x


def test_a_task_is_registered_when_defined():
    name = f"{__name__}.late_defined"
    assert name not in registry
    defined = task(late_defined)
    try:
        entry = registry.get(name)
        assert isinstance(entry, ApiTask) and entry.definition is defined
        assert entry.queue_name == "default" and entry.max_retries == 0
        # A variant of the same task (``using``) is the same registered task.
        defined.using(queue_name="heavy")
        assert registry.get(name) is entry
    finally:
        registry._tasks.pop(name, None)


def test_a_task_decorator_task_cannot_also_be_an_api_task():
    with pytest.raises(InvalidTask, match="already a @TaskDecorator task"):
        task(tasks.add.func)
    assert registry.get("tests.testapp.tasks.add") is tasks.add


def test_priority_is_refused_with_djangos_message_then_the_reason():
    with pytest.raises(InvalidTask, match=r"^Backend does not support setting priority of "
                                          r"tasks\. PubSubBackend: .*no priority order"):
        api_tasks.api_add.using(priority=5)


def test_unknown_queue_is_refused_naming_the_configured_ones():
    # QUEUES set: the API's message, then the alias's queues.
    with pytest.raises(InvalidTask, match=r"^Queue 'nope' is not valid for backend\. TASKS"
                                          r"\['default'\]\['QUEUES'\] is \['default', 'heavy'\]"):
        api_tasks.api_add.using(queue_name="nope")
    # No QUEUES: every I3TASKS queue is accepted, and only those.
    with pytest.raises(InvalidTask, match=r"^Queue 'nope' is not valid for backend: it is not "
                                          r"a queue of I3TASKS \(configured: default, heavy\)"):
        api_tasks.api_context.using(queue_name="nope")


class Published(outbox.PubSubOutbox):
    """The production outbox (publish after commit), publishing into a list."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def publish(self, messages: Any) -> None:
        self.messages.extend(messages)


def test_enqueue_writes_rows_and_publishes_after_commit():
    published = Published()
    with outbox.use(published):
        with transaction.atomic():
            result = api_tasks.api_add.enqueue(2, 3)
            assert published.messages == []  # nothing leaves before the commit
        (message,) = published.messages
    assert message.execution_uuid == uuid.UUID(result.id)
    assert message.task_name == "tests.testapp.api_tasks.api_add"
    execution = TaskExecution.objects.get(uuid=result.id)
    assert (execution.status, execution.queue_name, execution.args, execution.max_retries) == (
        ExecutionStatus.PENDING, "default", [2, 3], 0)
    assert result.status == TaskResultStatus.READY and result.attempts == 0
    assert result.enqueued_at == execution.created_at and result.started_at is None
    assert result.backend == "default" and result.args == [2, 3]


def test_rolled_back_enqueue_leaves_nothing():
    published = Published()
    with outbox.use(published):
        with pytest.raises(RuntimeError), transaction.atomic():
            result = api_tasks.api_add.enqueue(1, 1)
            raise RuntimeError("rollback")
    assert published.messages == []
    with pytest.raises(TaskResultDoesNotExist):
        api_backend().get_result(result.id)


def test_arguments_must_be_json_before_anything_is_written():
    with pytest.raises(TypeError, match="JSON"):
        api_tasks.api_add.enqueue(object(), 1)
    assert not TaskExecution.objects.exists()


def test_queues_map_to_i3tasks_queues(i3settings, no_publish):
    heavy = api_tasks.api_heavy.enqueue("h")
    assert TaskExecution.objects.get(uuid=heavy.id).queue_name == "heavy"
    # The API's "default" is I3TASKS.default_queue, whatever its name.
    conf = i3settings()
    i3settings(default_queue=type(conf.default_queue)("main", "push"))
    result = api_tasks.api_add.enqueue(1, 2)
    assert TaskExecution.objects.get(uuid=result.id).queue_name == "main"


def test_run_after_is_a_delayed_execution(no_publish):
    when = timezone.now() + timedelta(hours=1)
    result = api_tasks.api_add.using(run_after=when).enqueue(4, 4)
    execution = TaskExecution.objects.get(uuid=result.id)
    assert (execution.status, execution.eta) == (ExecutionStatus.SCHEDULED, when)
    assert result.status == TaskResultStatus.READY
    assert no_publish == []  # the beat releases it when due


def test_beat_releases_run_after_and_runs_schedules_of_api_tasks(i3settings):
    from django_i3tasks.beat import run_beat
    from django_i3tasks.types import Schedule

    i3settings(force_sync=True, schedules=(
        Schedule("tests.testapp.api_tasks", "api_add", "* * * * *", [7, 8]),))
    when = timezone.now() + timedelta(minutes=5)
    delayed = api_tasks.api_add.using(run_after=when).enqueue(1, 2)
    assert tasks.CALLS["api_add:1:2"] == 0
    run_beat(now=when + timedelta(minutes=1))
    delayed.refresh()
    assert delayed.status == TaskResultStatus.SUCCESSFUL and delayed.return_value == 3
    (scheduled,) = TaskExecution.objects.filter(args=[7, 8])
    result = api_backend().get_result(str(scheduled.uuid))
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 15


def test_get_result_of_unknown_ids():
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(TaskResultDoesNotExist):
            api_backend().get_result(unknown)
    # An execution of a @TaskDecorator task is not a result of this API.
    with outbox.use(outbox.RecordingOutbox()):
        handle = tasks.add.delay(1, 2)
    with pytest.raises(TaskResultDoesNotExist, match="not a task of Django's tasks API"):
        api_backend().get_result(str(handle.uuid))


def test_inline_outbox_results(i3settings):
    """``force_sync``: enqueue runs at once; the result read back is final."""
    i3settings(force_sync=True)
    ok = api_tasks.api_add.enqueue(5, 6)
    assert ok.status == TaskResultStatus.SUCCESSFUL and ok.return_value == 11
    failed = api_tasks.api_fails.enqueue("inline")
    assert failed.status == TaskResultStatus.FAILED and failed.attempts == 1
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value  # noqa: B018


def test_check_names_queue_and_option_mismatches():
    bad = {"default": {
        "BACKEND": "django_i3tasks.backends.PubSubBackend",
        "QUEUES": ["default", "ghost"],
        "OPTIONS": {"MAX_RETRIES": -1, "PRIORITY": 3},
    }}
    with override_settings(TASKS=bad), pytest.raises(CommandError) as failure:
        call_command("check")
    text = str(failure.value)
    assert "django_i3tasks.E104" in text and "'ghost', which is not a queue of I3TASKS" in text
    assert "django_i3tasks.E102" in text and "'PRIORITY'" in text
    assert "django_i3tasks.E103" in text
    call_command("check")  # the suite's own TASKS are consistent with I3TASKS
