"""Common first-contact mistakes each get a precise, early answer: every test makes the mistake
and asserts the message that names it."""

from __future__ import annotations

import dataclasses
import io
import sys

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_i3tasks.conf import get_queue
from django_i3tasks.exceptions import I3TasksError, UnknownQueue
from django_i3tasks.project_checks import check_project
from django_i3tasks.types import PullQueue, Schedule
from tests.unit.test_checks import check_settings, ids, messages

PUSH_URL = "https://tasks.example.com/i3/tasks-push/"


def with_push_endpoint(i3settings, url):
    queue = dataclasses.replace(django_settings.I3TASKS.default_queue, push_endpoint=url)
    return i3settings(default_queue=queue)


# --- task modules ------------------------------------------------------------------------------


def test_task_modules_are_imported_at_startup(i3settings):
    from django_i3tasks.apps import _import_task_modules
    from django_i3tasks.registry import registry

    name = "tests.testapp.extra_tasks"
    sys.modules.pop(name, None)
    i3settings(task_modules=(name,))
    _import_task_modules()  # what the app's ready() does when Django starts
    assert f"{name}.outside_tasks_module" in registry
    assert check_project() == []


def test_a_missing_task_module_is_an_error(i3settings):
    i3settings(task_modules=("tests.testapp.no_such_module",))
    errors = check_project()
    assert ids(errors) == ["django_i3tasks.E041"]
    assert "'tests.testapp.no_such_module'" in messages(errors)
    assert "not an importable module" in messages(errors)


def test_task_modules_without_the_tuple_comma(i3settings):
    i3settings(task_modules=("tests.testapp.extra_tasks"))  # a str: the comma is missing
    (error,) = check_project()
    assert error.id == "django_i3tasks.E041"
    assert "is the string 'tests.testapp.extra_tasks', not a tuple" in error.msg
    assert "task_modules=('tests.testapp.extra_tasks',)" in error.hint


# --- urls --------------------------------------------------------------------------------------


def test_push_endpoint_that_reaches_the_push_view_is_fine(i3settings):
    with_push_endpoint(i3settings, PUSH_URL)
    assert check_project() == []


def test_push_endpoint_with_a_wrong_path_warns(i3settings):
    with_push_endpoint(i3settings, "https://tasks.example.com/tasks-push/")
    (warning,) = check_project()
    assert warning.id == "django_i3tasks.W022"
    assert "'/tasks-push/' does not lead to the push view" in warning.msg
    assert "include('django_i3tasks.urls')" in warning.hint


def test_forgotten_urls_warn(i3settings, settings):
    settings.ROOT_URLCONF = "tests.e2e.test_mistakes"  # routes the admin only
    with_push_endpoint(i3settings, PUSH_URL)
    (warning,) = check_project()
    assert warning.id == "django_i3tasks.W022"
    assert "would get 404" in warning.msg


def _admin_only():
    from django.contrib import admin
    from django.urls import path

    return [path("admin/", admin.site.urls)]


urlpatterns = _admin_only()  # the URLconf of test_forgotten_urls_warn


# --- queues ------------------------------------------------------------------------------------


def test_unknown_queue_is_an_i3tasks_error_and_improperly_configured():
    with pytest.raises(UnknownQueue) as raised:
        get_queue("nightly")
    assert isinstance(raised.value, I3TasksError)
    assert isinstance(raised.value, ImproperlyConfigured)
    assert "Unknown i3tasks queue 'nightly'; configured: default, heavy" in str(raised.value)


@pytest.mark.django_db
def test_delay_to_an_unknown_queue_raises_unknown_queue(no_publish):
    from tests.testapp import tasks

    with pytest.raises(I3TasksError, match="'nightly'"):
        tasks.add.using(queue_name="nightly").delay(1, 2)
    assert no_publish == []


# --- PUBSUB_CONFIG -----------------------------------------------------------------------------


def test_mistyped_pubsub_config_key_says_did_you_mean(settings):
    settings.PUBSUB_CONFIG = {**settings.PUBSUB_CONFIG, "EMULATER": True}
    (error,) = check_project()
    assert error.id == "django_i3tasks.E042"
    assert error.msg == "PUBSUB_CONFIG has an unknown key 'EMULATER': did you mean 'EMULATOR'?"


def test_unknown_pubsub_config_key_without_a_close_match_warns(settings):
    settings.PUBSUB_CONFIG = {**settings.PUBSUB_CONFIG, "TOPIC_LABELS": {}}
    (warning,) = check_project()
    assert warning.id == "django_i3tasks.W023"
    assert "'TOPIC_LABELS'" in warning.msg


# --- one-tuples without their comma --------------------------------------------------------------


@pytest.mark.django_db  # Django 6's checks read the database
def test_one_queue_without_its_comma_is_a_check_not_a_crash(i3settings, settings):
    """Also with the django.tasks backend configured (the test settings do, where an API
    is installed): its checks list the queues too."""
    from django_i3tasks.checks import tasks_api_installed, uses_tasks_backend

    assert uses_tasks_backend() == tasks_api_installed()
    i3settings(other_queues=(PullQueue("heavy", "pull")))  # no comma: not a tuple
    errors = check_settings()
    assert "django_i3tasks.E005" in ids(errors)
    assert "other_queues=(PullQueue(...),)" in " ".join(e.hint or "" for e in errors)
    with pytest.raises(SystemCheckError, match="other_queues must be a tuple of queues"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


def test_one_schedule_without_its_comma(i3settings):
    i3settings(schedules=(Schedule("tests.testapp.tasks", "add", "* * * * *", args=[1, 2])))
    errors = check_settings()
    assert ids(errors) == ["django_i3tasks.E016"]
    assert "schedules=(Schedule(...),)" in errors[0].hint


# --- smaller fixes -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_try_label_names_the_execution(no_publish):
    from tests.testapp import tasks

    handle = tasks.add.delay(1, 2)
    first = handle.task_execution.tries.get()
    assert str(first) == f"try 1 of execution {handle.uuid} ({first.status})"


def test_the_emulator_says_which_kind_started_and_where():
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "django_i3tasks.testing.emulator", "--kind", "python",
         "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first, second = process.stdout.readline(), process.stdout.readline()
    finally:
        process.terminate()
        process.wait(10)
    assert first.strip() == f"PUBSUB_EMULATOR_HOST=127.0.0.1:{port}"
    assert second.startswith(f"python Pub/Sub emulator ready on 127.0.0.1:{port}")
    assert "PUBSUB_EMULATOR_HOST wins over PUBSUB_CONFIG['HOST']" in second
