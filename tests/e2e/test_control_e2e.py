"""Task control end to end: ``.delay()`` -> the emulator's push subscription -> the push view
over real HTTP (Django's live server), and, for progress, a second process reading the
database while the task runs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import transaction

from django_i3tasks import (
    ResultTimeout,
    TaskCancelled,
    TaskFailed,
    get_result,
    transport,
)
from django_i3tasks.conf import get_settings, pubsub_config
from django_i3tasks.models import TaskExecutionTry
from tests.helpers import http, pull_messages, push_envelope, subprocess_env, wait_for
from tests.middleware import PUSHES, idle
from tests.testapp import control_tasks as ct
from tests.testapp.tasks import CALLS

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def status(handle) -> str:
    return handle.get_result().status


def test_wait_result_returns_the_value_of_a_one_second_task(push_queue):
    handle = ct.sleepy.delay("w", 1)
    transport.flush()
    assert handle.wait_result(timeout=30) == "w after 1s"
    result = handle.get_result()
    assert result.status == "success" and result.tries == 1 and result.error is None
    assert result.enqueued_at <= result.started_at <= result.finished_at


def test_wait_result_on_a_failing_task_raises_with_its_error(push_queue):
    handle = ct.fails_at_once.delay("f")
    transport.flush()
    with pytest.raises(TaskFailed, match=r"builtins\.LookupError: nothing for f") as info:
        handle.wait_result(timeout=30)
    assert info.value.result.status == "failed"


def test_wait_result_gives_up_after_its_timeout(push_queue):
    handle = ct.sleepy.delay("t", 5)
    transport.flush()
    started = time.monotonic()
    with pytest.raises(ResultTimeout) as info:
        handle.wait_result(timeout=1)
    waited = time.monotonic() - started
    assert isinstance(info.value, TimeoutError)
    assert 0.9 <= waited < 4  # about a second; generous for a loaded machine
    # The task itself goes on and finishes.
    assert handle.wait_result(timeout=30) == "t after 5s"


def test_await_result_in_async_code(push_queue):
    handle = ct.async_add.delay(20, 22)
    transport.flush()
    assert asyncio.run(handle.await_result(timeout=30)) == 42
    close_async_connection()


def close_async_connection() -> None:
    """Close the connection of asgiref's sync thread (used by the async reads above)."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    asyncio.run(sync_to_async(lambda: connections.close_all())())


def test_cancel_before_delivery_the_message_comes_later_and_is_acknowledged(
    pull_queue, live_server
):
    """The default queue is provisioned as a pull subscription here, so the test holds the
    message until after the cancel, then delivers it to the push view over HTTP."""
    handle = ct.noted.delay("c")
    transport.flush()
    assert handle.cancel() is True
    path = pubsub_config().subscription_path(get_settings().default_queue)
    (message,) = pull_messages(path, wait=2)
    code, _, body = http("POST", f"{live_server.url}/i3/tasks-push/",
                         push_envelope(message.data, dict(message.attributes)),
                         {"Content-Type": "application/json"})
    assert code == 200 and json.loads(body)["status"] == "cancelled"
    assert CALLS["noted:c"] == 0
    assert status(handle) == "cancelled"
    with pytest.raises(TaskCancelled):
        handle.wait_result(timeout=5)
    assert handle.cancel() is False  # finished: nothing left to cancel


def test_cancel_while_running_is_seen_by_the_task_and_never_retried(push_queue):
    handle = ct.stops_when_cancelled.delay("r")
    transport.flush()
    wait_for(lambda: status(handle) == "running", timeout=30)
    assert handle.cancel() is True
    with pytest.raises(TaskCancelled):
        handle.wait_result(timeout=30)
    time.sleep(2)  # a retry would show up here
    assert CALLS["stops_when_cancelled:r"] == 1
    assert CALLS["stops_when_cancelled:r:saw_cancel"] == 1
    (only_try,) = TaskExecutionTry.objects.filter(execution_id=handle.id)
    assert only_try.status == "cancelled"


PROGRESS_READER = """
import json, sys, time, django
django.setup()
from django_i3tasks import get_result
print("ready", flush=True)
execution_uuid = sys.stdin.readline().strip()
seen, deadline = [], time.monotonic() + 40
while time.monotonic() < deadline:
    result = get_result(execution_uuid)
    if result.progress is not None and (not seen or seen[-1] != result.progress.current):
        seen.append(result.progress.current)
    if result.is_finished:
        break
    time.sleep(0.05)
print(json.dumps({"seen": seen, "status": result.status}))
"""


def test_progress_is_read_by_another_process_while_the_task_runs(push_queue):
    reader = subprocess.Popen(
        [sys.executable, "-c", PROGRESS_READER], env=subprocess_env(), cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline().strip() == "ready"  # Django is set up over there
        handle = ct.counts_up.delay("p", 5, 0.5)
        transport.flush()
        reader.stdin.write(f"{handle.uuid}\n")
        reader.stdin.flush()
        out, err = reader.communicate(timeout=90)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["status"] == "success"
    assert len(report["seen"]) >= 2, report
    assert report["seen"] == sorted(report["seen"])
    final = handle.get_result().progress
    assert final is not None and (final.current, final.total, final.message) == (5, 5, "step 5")


def test_time_limit_stops_a_ten_second_task_and_retries_it_per_policy(push_queue):
    handle = ct.runs_too_long.delay("tl")
    transport.flush()
    with pytest.raises(TaskFailed, match="TimeLimitExceeded") as info:
        handle.wait_result(timeout=60)
    assert info.value.result.tries == 2  # max_retries=1
    tries = list(TaskExecutionTry.objects.filter(execution_id=handle.id).order_by("number"))
    for task_try in tries:
        assert task_try.status == "failed"
        assert task_try.error_type == "django_i3tasks.exceptions.TimeLimitExceeded"
        assert task_try.duration < 5  # stopped at about 1 s, not after 10 s
    time.sleep(2)
    assert CALLS["runs_too_long:tl"] == 2
    assert CALLS["runs_too_long:tl:finished"] == 0


def test_give_up_on_runs_exactly_one_try(push_queue):
    handle = ct.gives_up.delay("g")
    transport.flush()
    with pytest.raises(TaskFailed, match="KeyError"):
        handle.wait_result(timeout=30)
    time.sleep(2)
    assert CALLS["gives_up:g"] == 1
    assert handle.get_result().tries == 1


def test_retry_on_that_does_not_match_runs_exactly_one_try(push_queue):
    handle = ct.retries_connection_errors.delay("v", "value")
    transport.flush()
    with pytest.raises(TaskFailed, match="ValueError"):
        handle.wait_result(timeout=30)
    time.sleep(2)
    assert CALLS["retries_connection_errors:v"] == 1
    assert handle.get_result().tries == 1


def test_retry_on_that_matches_is_retried(push_queue):
    handle = ct.retries_connection_errors.delay("c", "connection")
    transport.flush()
    assert handle.wait_result(timeout=30) is None
    assert handle.get_result().tries == 2


def test_an_expired_task_never_runs_and_its_message_is_acknowledged(push_queue):
    # Held in a transaction past its expiry: the message is only published at commit.
    with transaction.atomic():
        handle = ct.noted.using(expires=0.5).delay("x")
        time.sleep(1.0)
    transport.flush()
    wait_for(lambda: status(handle) == "expired", timeout=30)
    wait_for(idle, timeout=10)  # the push that recorded the expiry is counted
    pushes = PUSHES[str(handle.uuid)]
    assert pushes >= 1
    time.sleep(3)  # acknowledged: Pub/Sub does not deliver it again
    assert PUSHES[str(handle.uuid)] == pushes
    assert CALLS["noted:x"] == 0
    with pytest.raises(TaskCancelled, match="expired"):
        handle.wait_result(timeout=5)


def test_an_async_task_result_is_recorded(push_queue):
    handle = ct.async_add.delay(2, 3)
    transport.flush()
    assert handle.wait_result(timeout=30) == 5
    assert get_result(handle.uuid).return_value == 5


def test_an_async_task_uses_the_orm_and_reports_progress(push_queue):
    from tests.testapp.models import Effect

    handle = ct.async_progress.delay("o")
    transport.flush()
    assert handle.wait_result(timeout=30) == "o"
    assert Effect.objects.filter(key="async_progress:o").count() == 1
    assert handle.get_result().progress.message == "half"
