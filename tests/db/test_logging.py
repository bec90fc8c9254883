"""Logging never writes task arguments, results or error messages at INFO and above.

Error messages often quote arguments (``ValueError(f"bad {value}")``), so failures are logged
with the execution uuid, task name and error type only; the message and traceback stay in the
try's row, where the admin and the status endpoint show them to whoever may see them.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from django.test import Client

from django_i3tasks.execution import run_message
from django_i3tasks.messages import SIGNATURE_ATTRIBUTE, TaskMessage, sign
from django_i3tasks.models import TaskExecution, TaskExecutionTry
from tests.helpers import push_envelope
from tests.testapp import tasks

pytestmark = pytest.mark.django_db

SECRET_ARG = "sekrit-arg-5d1e0c"
SECRET_KWARG = "sekrit-kwarg-93ab77"
_formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything logged at DEBUG and above, by any logger."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django_i3tasks")
    return caplog


def text(caplog: pytest.LogCaptureFixture, minimum: int) -> str:
    """Every record at ``minimum`` or above as it would be written, tracebacks included."""
    return "\n".join(_formatter.format(r) for r in caplog.records if r.levelno >= minimum)


def assert_no_secret(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    written = text(caplog, logging.INFO)
    for secret in secrets:
        assert secret not in written, f"{secret!r} was logged at INFO or above:\n{written}"


def test_success_logs_name_and_uuid_not_arguments_or_result(logs, i3settings):
    i3settings(force_sync=True)
    handle = tasks.add.delay(SECRET_ARG, SECRET_KWARG)
    assert handle.task_execution.result.value == SECRET_ARG + SECRET_KWARG
    info = text(logs, logging.INFO)
    assert "tests.testapp.tasks.add" in info and str(handle.uuid) in info
    assert_no_secret(logs, SECRET_ARG, SECRET_KWARG)
    # The capture does see the value when it is logged: at DEBUG, on purpose.
    assert SECRET_ARG + SECRET_KWARG in text(logs, logging.DEBUG)


def test_failure_logs_type_and_uuid_not_the_exception_message(logs, i3settings):
    i3settings(force_sync=True)
    handle = tasks.always_fails.delay(SECRET_ARG)
    execution = TaskExecution.objects.get(pk=handle.id)
    assert execution.status == "failed"
    tries = list(TaskExecutionTry.objects.filter(execution=execution).order_by("number"))
    assert len(tries) == 3
    # The row keeps the whole error for the admin and the status endpoint.
    assert all(SECRET_ARG in t.error_message and SECRET_ARG in t.traceback for t in tries)
    errors = [r for r in logs.records if r.levelno >= logging.ERROR]
    assert errors, "a task that failed for good must log an error"
    error_text = text(logs, logging.ERROR)
    assert str(handle.uuid) in error_text
    assert "tests.testapp.tasks.always_fails" in error_text
    assert "ValueError" in error_text
    warnings = text(logs, logging.WARNING)
    assert warnings.count("outcome=retry_scheduled") == 2
    assert_no_secret(logs, SECRET_ARG)


def test_push_view_logs_no_arguments(logs, no_publish):
    """The push path too: a retried failure, an unregistered task and a refused message."""
    client = Client(raise_request_exception=False)
    tasks.always_fails.delay(SECRET_ARG)
    data, attributes = no_publish[-1].encode()
    response = client.post("/i3/tasks-push/", push_envelope(data, attributes),
                           content_type="application/json")
    assert response.status_code == 200 and response.json()["status"] == "retry_scheduled"
    assert "ValueError" in text(logs, logging.WARNING)

    unknown = TaskMessage(
        execution_id=10**9, execution_uuid=uuid.uuid4(), try_id=10**9, try_number=1,
        task_name="tests.testapp.tasks.not_registered", queue_name="default",
        args=[SECRET_ARG], kwargs={"password": SECRET_KWARG}, max_retries=0)
    data, attributes = unknown.encode()
    response = client.post("/i3/tasks-push/", push_envelope(data, attributes),
                           content_type="application/json")
    assert response.json()["status"] == "unknown_try"  # its execution does not exist

    body = json.loads(unknown.to_json())
    body["task"] = "tests.testapp.tasks.add"
    body["args"] = {"not": SECRET_ARG}
    data = json.dumps(body).encode()
    response = client.post("/i3/tasks-push/",
                           push_envelope(data, {SIGNATURE_ATTRIBUTE: sign(data)}),
                           content_type="application/json")
    assert response.json()["error"] == "bad_schema"
    assert SECRET_ARG not in response.content.decode()
    assert_no_secret(logs, SECRET_ARG, SECRET_KWARG)


def test_run_message_failure_for_good(logs, no_publish, i3settings):
    i3settings(retry_backoff_min_seconds=0, retry_backoff_max_seconds=0)
    tasks.always_fails.delay(SECRET_ARG)
    message = no_publish[-1]
    for _ in range(3):
        outcome = run_message(message)
        message = no_publish[-1]
    assert outcome.status.value == "failed"
    assert SECRET_ARG not in json.dumps(outcome.as_json())
    error_text = text(logs, logging.ERROR)
    assert str(message.execution_uuid) in error_text
    assert_no_secret(logs, SECRET_ARG)
