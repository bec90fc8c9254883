"""Quiet in production: designed answers are not errors, one line per try, Google's loggers
in the project's handlers (docs/logging.md).

Django's request handler logs every 5xx at ERROR on ``django.request`` (an e-mail to ADMINS
each, a Sentry event each) unless the response is marked as logged; the push view answers
503 and 409 on purpose, so it logs those itself, once, and marks them.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.test import Client

from django_i3tasks import logs, transport, views
from django_i3tasks.execution import Outcome
from django_i3tasks.models import ExecutionStatus, TaskExecution
from tests.e2e.test_worker import Running, heavy  # noqa: F401 - the fixture
from tests.helpers import http, message_of, push_envelope, wait_for
from tests.testapp import tasks
from tests.testapp.worker_tasks import nap

transactional = pytest.mark.django_db(transaction=True)
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger, from every thread (the live server's too)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django_i3tasks")
    return caplog


def records(caplog: pytest.LogCaptureFixture, name: str, minimum: int = logging.DEBUG
            ) -> list[logging.LogRecord]:
    """The records of logger ``name`` and its children at ``minimum`` or above."""
    return [r for r in caplog.records
            if (r.name == name or r.name.startswith(name + ".")) and r.levelno >= minimum]


def answers(caplog: pytest.LogCaptureFixture, status: str) -> list[logging.LogRecord]:
    return [r for r in records(caplog, "django_i3tasks.answers")
            if f" {status}: " in r.getMessage() or r.getMessage().endswith(f" {status}")]


def post(url: str, message: Any) -> tuple[int, dict[str, str], bytes]:
    data, attributes = message.encode()
    return http("POST", url, push_envelope(data, attributes), JSON)


# --- designed answers -------------------------------------------------------------------


@transactional
def test_early_retry_deliveries_are_info_not_django_request_errors(push_queue, logged,
                                                                   i3settings):
    """Through the emulator's push subscription: the retry's message comes back (0-1 s
    backoff) before its 8 s are over, several times; each time 503 not_due. (The push view
    holds a try due within its queue's ack deadline minus 5 s, here 10 - 5: so only the
    first 3 s of the backoff are answered not_due.)"""
    i3settings(retry_backoff_min_seconds=8, retry_backoff_max_seconds=8)
    handle = tasks.fails_once.delay("early")
    transport.flush()
    wait_for(lambda: TaskExecution.objects.get(pk=handle.id).status == ExecutionStatus.SUCCESS,
             timeout=30)
    early = answers(logged, "not_due")
    assert early, "the retry was never delivered early: the test shows nothing"
    assert all(r.levelno == logging.INFO and r.status_code == 503 for r in early)
    assert all(f"execution={handle.uuid} try=2" in r.getMessage() for r in early)
    assert records(logged, "django.request") == []
    assert records(logged, "", logging.ERROR) == []


@transactional
def test_not_due_answer_over_http_is_one_info_line(live_server, no_publish, logged,
                                                   i3settings):
    i3settings(retry_backoff_min_seconds=60, retry_backoff_max_seconds=60)
    url = f"{live_server.url}/i3/tasks-push/"
    handle = tasks.fails_once.delay("late")
    status, _, body = post(url, no_publish[-1])
    assert status == 200 and b"retry_scheduled" in body
    retry = message_of(handle)
    assert retry.try_number == 2
    logged.clear()

    status, headers, body = post(url, retry)

    assert status == 503 and b'"not_due"' in body and int(headers["Retry-After"]) >= 59
    (line,) = answers(logged, "not_due")
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith("POST /i3/tasks-push/ 503 not_due: ")
    assert f"task={tasks.fails_once.name} execution={handle.uuid} try=2" in line.getMessage()
    assert records(logged, "django.request") == []
    assert [r for r in logged.records if r.levelno >= logging.WARNING] == []


@transactional
def test_running_elsewhere_is_409_at_info(live_server, no_publish, logged):
    url = f"{live_server.url}/i3/tasks-push/"
    tasks.slow.delay("busy", 1.5)
    message = no_publish[-1]
    first = threading.Thread(target=post, args=(url, message))
    first.start()
    wait_for(lambda: tasks.CALLS["slow:busy"] == 1, timeout=10)
    status, _, body = post(url, message)
    first.join()
    assert status == 409 and b'"running"' in body
    (line,) = answers(logged, "running")
    assert line.levelno == logging.INFO
    assert records(logged, "django.request") == []


@pytest.mark.django_db
def test_database_unavailable_is_one_warning_without_traceback(monkeypatch, no_publish, logged):
    def broken(*args: Any, **kwargs: Any) -> Outcome:
        raise OperationalError("server closed the connection unexpectedly\nDETAIL: more")

    monkeypatch.setattr(views, "run_message", broken)
    tasks.add.delay(1, 2)
    data, attributes = no_publish[-1].encode()
    response = Client().post("/i3/tasks-push/", push_envelope(data, attributes),
                             content_type="application/json")
    assert response.status_code == 503 and response.json()["error"] == "database_unavailable"
    (line,) = answers(logged, "database_unavailable")
    assert line.levelno == logging.WARNING
    assert "OperationalError: server closed the connection unexpectedly" in line.getMessage()
    assert "DETAIL" not in line.getMessage()
    above_debug = [r for r in logged.records if r.levelno > logging.DEBUG]
    assert above_debug == [line] and line.exc_info is None
    assert records(logged, "django.request") == []


@pytest.mark.django_db
def test_refused_and_wrong_method_answers_are_warnings_not_django_request(logged):
    client = Client()
    assert client.get("/i3/tasks-push/").status_code == 405
    assert client.post("/i3/tasks-beat/", HTTP_X_CLOUDSCHEDULER_SCHEDULETIME="yesterday"
                       ).status_code == 400
    assert client.post("/i3/tasks-push/", b"not json", content_type="application/json"
                       ).status_code == 400
    assert client.get(f"/i3/tasks-status/{uuid.uuid4()}/").status_code == 404
    lines = records(logged, "django_i3tasks.answers")
    assert [(r.status_code, r.levelname) for r in lines] == [
        (405, "WARNING"), (400, "WARNING"), (400, "WARNING"), (404, "INFO")]
    assert records(logged, "django.request") == []


@transactional
def test_unexpected_error_still_reaches_django_request_at_error(live_server, no_publish,
                                                                logged, monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> Outcome:
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "run_message", broken)
    tasks.add.delay(1, 2)
    status, _, body = post(f"{live_server.url}/i3/tasks-push/", no_publish[-1])
    assert status == 500 and b"internal_error" in body
    (request_error,) = records(logged, "django.request")
    assert request_error.levelno == logging.ERROR and request_error.status_code == 500
    (package_error,) = records(logged, "django_i3tasks.views", logging.ERROR)
    assert package_error.exc_info and package_error.exc_info[0] is RuntimeError
    assert records(logged, "django_i3tasks.answers") == []


def test_designed_answer_marks_once_and_a_marked_response_is_not_logged_again(logged):
    from django.http import JsonResponse

    response = JsonResponse({}, status=503)
    assert logs.designed_answer(response, "first", level=logging.WARNING) is response
    logs.designed_answer(response, "second")
    assert [r.getMessage() for r in records(logged, "django_i3tasks.answers")] == [
        "503 first"]
    assert response._has_been_logged is True


# --- one line per try -------------------------------------------------------------------


@transactional
def test_a_successful_push_try_writes_exactly_one_info_line(live_server, no_publish, logged):
    handle = tasks.add.delay(2, 3)
    logged.clear()
    status, _, _ = post(f"{live_server.url}/i3/tasks-push/", no_publish[-1])
    assert status == 200
    (line,) = [r for r in logged.records if r.levelno >= logging.INFO]
    assert line.name == "django_i3tasks.tasks" and line.levelno == logging.INFO
    message = line.getMessage()
    assert message.startswith(f"task={tasks.add.name} execution={handle.uuid} try=1 "
                              "outcome=success duration=")
    assert message.endswith("s")
    # Start and the returned value: DEBUG only.
    debug = [r.getMessage() for r in records(logged, "django_i3tasks.tasks", logging.DEBUG)
             if r.levelno == logging.DEBUG]
    assert any("outcome=started" in m for m in debug) and any("returned 5" in m for m in debug)


@transactional
def test_the_pull_worker_writes_one_line_per_try(heavy, logged):  # noqa: F811
    running = Running(concurrency=2)
    try:
        handles = [nap.delay(f"quiet-{index}") for index in range(3)]
        transport.flush()
        wait_for(lambda: TaskExecution.objects.filter(status="success").count() == 3,
                 timeout=30)
    finally:
        assert running.stop() == 0
    lines = [r for r in logged.records
             if r.levelno >= logging.INFO and r.name.startswith("django_i3tasks")]
    assert sorted(r.getMessage().split(" duration=")[0] for r in lines) == sorted(
        f"task={nap.name} execution={h.uuid} try=1 outcome=success" for h in handles)


# --- Google's loggers -------------------------------------------------------------------


@pytest.fixture
def google_loggers() -> Any:
    """Google's loggers as a fresh process has them (pytest attaches its capture handler to
    a logger that does not propagate, so an earlier test's client leaves one on "google");
    given back as they were afterwards."""
    names = ("google", *logs.GOOGLE_LOGGERS)
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate)
             for n in names}
    for name in names:
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    yield
    for name, (handlers, propagate) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


@pytest.mark.django_db
@pytest.mark.parametrize("route", [True, False], ids=["default", "no-routing"])
def test_the_worker_command_routes_google_loggers_to_the_project(google_loggers, logged,
                                                                 route):
    from google.api_core import client_logging

    # What the client library does when it builds its first client, unless the project
    # configured the "google" logger.
    client_logging.setup_logging()
    assert logging.getLogger("google").propagate is False
    pull = logging.getLogger("google.cloud.pubsub_v1.subscriber._protocol.streaming_pull_manager")
    pull.warning("before the worker command")
    assert not [r for r in logged.records if r.name.startswith("google")]

    extra = [] if route else ["--no-google-log-routing"]
    with pytest.raises(CommandError):  # the command stops at once: there is no such queue
        call_command("i3tasks_worker", "--queue", "no-such-queue", *extra)
    pull.warning("Background thread did not exit.")
    logging.getLogger("google.api_core.bidi").warning("stream error")

    got = [(r.name, r.getMessage()) for r in logged.records if r.name.startswith("google")]
    if route:
        assert got == [(pull.name, "Background thread did not exit."),
                       ("google.api_core.bidi", "stream error")]
        # Calling it again routes nothing twice.
        logs.route_google_loggers()
        pull.warning("once")
        assert sum(r.getMessage() == "once" for r in logged.records) == 1
    else:
        assert got == []


def test_a_google_logger_the_project_configured_is_left_alone(google_loggers):
    own = logging.NullHandler()
    logging.getLogger("google.api_core").addHandler(own)
    assert logs.route_google_loggers() == ["google.cloud.pubsub_v1"]
    assert logging.getLogger("google.api_core").handlers[-1] is own
    assert logging.getLogger("google.api_core").propagate is True


@pytest.mark.django_db
def test_the_beat_command_routes_google_loggers_too(google_loggers, no_publish):
    from io import StringIO

    assert logging.getLogger("google.cloud.pubsub_v1").propagate is True
    call_command("i3tasks_beat", "--once", stdout=StringIO())
    for name in logs.GOOGLE_LOGGERS:
        target = logging.getLogger(name)
        assert target.propagate is False
        assert any(isinstance(h, logs.ToProjectHandlers) for h in target.handlers)
