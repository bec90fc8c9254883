"""System checks name every bad setting."""

import dataclasses

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_i3tasks.checks import check_settings
from django_i3tasks.types import PullQueue, PushQueue, Queue, Schedule


def ids(errors):
    return sorted({e.id for e in errors})


def messages(errors):
    return " | ".join(e.msg for e in errors)


def test_valid_settings_have_no_errors():
    assert check_settings() == []


def test_queue_is_push_queue_alias():
    assert Queue is PushQueue


def test_missing_i3tasks(settings):
    del settings.I3TASKS
    assert ids(check_settings()) == ["django_i3tasks.E001"]


def test_wrong_type(settings):
    settings.I3TASKS = {"namespace": "x"}
    assert ids(check_settings()) == ["django_i3tasks.E002"]


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"namespace": "1bad"}, "namespace"),
        ({"default_queue": PullQueue("q", "s")}, "default_queue must be a PushQueue"),
        ({"other_queues": (PushQueue("default", "x"),)}, "used twice"),
        ({"default_queue": PushQueue("bad name", "s")}, "queue_name"),
        ({"default_queue": PushQueue("q", "s", ack_deadline_seconds=5)}, "ack_deadline_seconds"),
        ({"default_queue": PushQueue("q", "s", push_endpoint="ftp://x")}, "push_endpoint"),
        ({"default_queue": PushQueue("q", "s", min_retry_backoff_seconds=30,
                                     max_retry_backoff_seconds=10)}, "retry backoff"),
        ({"default_max_retries": -1}, "default_max_retries"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"force_sync": "yes"}, "force_sync"),
        ({"retry_backoff_min_seconds": 10, "retry_backoff_max_seconds": 1},
         "retry_backoff_min_seconds is above"),
        ({"schedules": (Schedule("tests.testapp.tasks", "add", "61 * * * *"),)}, "cron"),
        ({"schedules": (Schedule("tests.testapp.tasks", "nope", "* * * * *"),)},
         "not a registered task"),
        ({"schedules": (Schedule("tests.testapp.side_effect", "not_a_task", "* * * * *"),)},
         "not a registered task"),
        ({"schedules": (Schedule("tests.testapp.tasks", "add", "* * * * *",
                                 timezone="Mars/Base"),)}, "timezone"),
        ({"schedules": (Schedule("tests.testapp.tasks", "add", "* * * * *"),
                        Schedule("tests.testapp.tasks", "add", "* * * * *"))}, "listed twice"),
    ],
)
def test_bad_fields_are_named(settings, change, expected):
    settings.I3TASKS = dataclasses.replace(django_settings.I3TASKS, **change)
    errors = check_settings()
    assert errors, f"no error for {change}"
    assert expected in messages(errors)


@pytest.mark.parametrize(
    "config, expected",
    [
        (None, "PUBSUB_CONFIG is missing"),
        ({"PROJECT_ID": "x"}, "PROJECT_ID"),
        ({"PROJECT_ID": "my-project", "CREDENTIALS": "/nonexistent.json"}, "CREDENTIALS"),
    ],
)
def test_bad_pubsub_config(settings, config, expected):
    settings.PUBSUB_CONFIG = config
    assert expected in messages(check_settings())


def test_manage_py_check_fails_with_the_field_name(settings):
    settings.I3TASKS = dataclasses.replace(django_settings.I3TASKS, lease_seconds=-5)
    with pytest.raises(SystemCheckError, match="lease_seconds"):
        call_command("check")
