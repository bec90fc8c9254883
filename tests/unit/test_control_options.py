"""Task control without a database: bad decorator options and progress values are named, the
message format with and without expiry, and the time-limit checks."""

from __future__ import annotations

import json
import uuid

import pytest
from django.utils import timezone

from django_i3tasks import TaskDecorator
from django_i3tasks.checks import check_settings
from django_i3tasks.exceptions import InvalidTaskOption, TaskUsageError
from django_i3tasks.messages import TaskMessage, sign
from tests.testapp import control_tasks as ct


def test_set_progress_refuses_bad_values():
    from django_i3tasks.task import TaskMetadata

    metadata = TaskMetadata(task_name="t.t", queue_name="default")
    metadata.set_progress(1, 2, "fine")  # inline call: accepted, nothing written
    assert metadata.is_cancelled() is False
    for args in (("1",), (1, "2"), (1, 2, 3), (float("nan"),), (True,)):
        with pytest.raises(TaskUsageError, match="set_progress"):
            metadata.set_progress(*args)


def test_sync_run_of_an_async_task():
    assert ct.async_add.sync_run(1, 2) == 3


@pytest.mark.parametrize("options, error, words", [
    ({"time_limit": 0}, InvalidTaskOption, "time_limit must be positive"),
    ({"time_limit": "1"}, TaskUsageError, "time_limit must be seconds"),
    ({"retry_on": ValueError()}, TaskUsageError, "retry_on must be an exception class"),
    ({"give_up_on": (KeyError, int)}, TaskUsageError, "give_up_on must be an exception"),
    ({"expires": -1}, InvalidTaskOption, "expires must be positive"),
    ({"retry_backoff": (5, 1)}, InvalidTaskOption, "0 <= min <= max"),
    ({"retry_backoff": 5}, TaskUsageError, "retry_backoff must be"),
    ({"retry_jitter": "yes"}, TaskUsageError, "retry_jitter"),
])
def test_bad_decorator_options_are_named(options, error, words):
    with pytest.raises(error, match=words):
        TaskDecorator(**options)(lambda: None)


def test_messages_without_expiry_keep_the_0x_format_and_both_versions_are_read():
    base = {"execution_id": 1, "execution_uuid": uuid.uuid4(), "try_id": 1, "try_number": 1,
            "task_name": "a.b", "queue_name": "default"}
    plain = TaskMessage(**base)
    body = json.loads(plain.to_json())
    assert body["v"] == 1 and "expires" not in body
    data, attributes = plain.encode()
    assert TaskMessage.decode(data, attributes) == plain
    expiring = TaskMessage(**base, expires_at=timezone.now().replace(microsecond=0))
    data, attributes = expiring.encode()
    assert json.loads(data)["v"] == 2
    assert TaskMessage.decode(data, attributes) == expiring
    v1_with_expires = {**body, "expires": 1.0}
    payload = json.dumps(v1_with_expires).encode()
    with pytest.raises(Exception, match="unexpected"):
        TaskMessage.decode(payload, {"i3sig": sign(payload)})


def test_check_warns_when_lease_or_ack_deadline_is_shorter_than_a_time_limit(i3settings):
    def warnings(code):
        return " ".join(m.msg for m in check_settings() if m.id == f"django_i3tasks.{code}")

    assert warnings("W005") == warnings("W006") == ""
    i3settings(lease_seconds=1)
    assert "runs_too_long has time_limit=1 s" in warnings("W005")
    long = TaskDecorator(time_limit=120)(lambda: None)
    try:
        assert "above" not in warnings("W006") and "ack deadline" in warnings("W006")
        assert "'default' (60 s)" in warnings("W006")
    finally:
        from django_i3tasks.registry import registry

        registry._tasks.pop(long.name, None)
