"""Projects written against 0.0.x/0.1.x keep working: their imports, settings and handles."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest


def test_every_0x_documented_name_imports_from_its_0x_path():
    from django_i3tasks.models import TaskExecution, TaskGroup
    from django_i3tasks.types import I3TasksSettings, PullQueue, PushQueue, Queue, Schedule
    from django_i3tasks.utils import TaskDecorator

    assert Queue is PushQueue
    assert callable(TaskDecorator) and hasattr(TaskGroup, "create")
    assert TaskExecution._meta.app_label == "django_i3tasks"
    assert {I3TasksSettings, PullQueue, Schedule}


def test_the_package_names_are_the_same_objects():
    import django_i3tasks
    from django_i3tasks import handles, task, utils

    assert django_i3tasks.TaskDecorator is utils.TaskDecorator is task.TaskDecorator
    assert django_i3tasks.ChainHandle is django_i3tasks.TaskHandle is handles.TaskHandle
    with pytest.raises(AttributeError):
        django_i3tasks.NotAThing  # noqa: B018


def test_0x_settings_load_positionally_with_their_old_fields():
    from django_i3tasks.types import I3TasksSettings, PullQueue, Queue, Schedule

    conf = I3TasksSettings(
        "tasks.old", Queue("default", "default", "http://localhost:8000/i3/tasks-push/"),
        (PullQueue("heavy", "heavy-pull"),),
        (Schedule("app.tasks", "nightly", "0 3 * * *", [], {}),),
        retry_minimum_backoff_seconds=5, retry_maximum_backoff_seconds=60,
        run_queue_create_command_on_startup=True, register_client_teardown=True,
        health_token="h3alth", autoclean_older_than=timedelta(days=7),
        health_window_minutes=30,
    )
    assert [(q.min_retry_backoff_seconds, q.max_retry_backoff_seconds) for q in conf.queues] == [
        (5, 60), (5, 60)]
    assert conf.status_token == "h3alth" and conf.retention_days == 7
    # A queue's own value wins over the 0.1 global one.
    own = I3TasksSettings("tasks.old", Queue("d", "d", min_retry_backoff_seconds=30),
                          retry_minimum_backoff_seconds=5)
    assert own.default_queue.min_retry_backoff_seconds == 30


def test_0x_settings_survive_replace():
    from django.conf import settings

    from django_i3tasks.types import I3TasksSettings

    conf = dataclasses.replace(settings.I3TASKS, health_token="x")
    assert isinstance(conf, I3TasksSettings) and conf.status_token == "x"
