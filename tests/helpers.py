"""Helpers the tests share: pull from the emulator, wait for a condition, real HTTP to the
live server, push bodies as Pub/Sub sends them. Fixtures stay in ``tests/conftest.py``."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import TYPE_CHECKING, Any

import pytest

from django_i3tasks import transport
from django_i3tasks.types import Schedule

if TYPE_CHECKING:
    from django_i3tasks.backends import PubSubBackend


def pull_messages(path: str, wait: float = 2.0) -> list[Any]:
    """Pull (and ack) what is on the subscription ``path``, for ``wait`` seconds; the raw
    Pub/Sub messages."""
    transport.flush()
    subscriber = transport.subscriber_client()
    found: list[Any] = []
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            response = subscriber.pull(subscription=path, max_messages=100, timeout=5)
            if response.received_messages:
                subscriber.acknowledge(subscription=path,
                                       ack_ids=[m.ack_id for m in response.received_messages])
            found += [received.message for received in response.received_messages]
            time.sleep(0.1)
    finally:
        subscriber.close()
    return found


def pull_all(wait: float = 2.0) -> list[Any]:
    """Pull (and ack) what is on the default queue's subscription, for ``wait`` seconds."""
    from django_i3tasks.conf import get_settings, pubsub_config
    from django_i3tasks.messages import TaskMessage

    path = pubsub_config().subscription_path(get_settings().default_queue)
    return [TaskMessage.decode(message.data, dict(message.attributes))
            for message in pull_messages(path, wait)]


def subprocess_env() -> dict[str, str]:
    """The environment of a subprocess (a worker) on this test's database, topics and
    emulator: the variables ``tests/settings.py`` reads."""
    from django.db import connection

    from django_i3tasks.conf import get_settings, pubsub_config

    sqlite = connection.vendor == "sqlite"
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "I3TASKS_TEST_DB": "sqlite" if sqlite else "postgres",
        "I3TASKS_SQLITE_PATH" if sqlite else "I3TASKS_TEST_DB_NAME":
            str(connection.settings_dict["NAME"]),
        "I3TASKS_TEST_NAMESPACE": get_settings().namespace,
        "PUBSUB_EMULATOR_HOST": pubsub_config().emulator_host or "",
        "PYTHONUNBUFFERED": "1",
    }


def message_of(handle: Any) -> Any:
    """The message of an execution's latest try, as its publisher would have sent it
    (``handle``: a ``TaskHandle`` or a ``TaskExecution``)."""
    from django_i3tasks.messages import TaskMessage
    from django_i3tasks.models import TaskExecution

    execution = handle if isinstance(handle, TaskExecution) else \
        TaskExecution.objects.get(pk=handle.id)
    latest = execution.tries.order_by("-number").values_list("pk", "number")[0]
    return TaskMessage.of(execution, *latest)


def push_body_of(handle: Any) -> bytes:
    """The push body Pub/Sub would send for the latest try of ``handle`` (see ``message_of``)."""
    data, attributes = message_of(handle).encode()
    return push_envelope(data, attributes)


def post_around_delivery(url: str, handle: Any, done: Callable[[], Any]) -> list[int]:
    """Publish what is queued and post the push body of ``handle`` twice at once while the
    emulator delivers it too, then once more after ``done()``; the HTTP statuses of the three
    posts."""
    body = push_body_of(handle)
    transport.flush()
    answers = post_at_once(url, body, 2)
    wait_for(done)
    # Once more after it finished: a duplicate, acknowledged.
    return answers + post_at_once(url, body, 1)


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail the test with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A real HTTP request; returns status, headers and body (also for 4xx/5xx)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def start_and_join(threads: list[threading.Thread]) -> None:
    """Start every thread, then wait for all of them (so they run at once)."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def post_at_once(url: str, body: bytes, times: int) -> list[int]:
    """POST the same push body ``times`` times at once (threads); the HTTP statuses."""
    statuses: list[int] = []

    def post() -> None:
        statuses.append(http("POST", url, body, {"Content-Type": "application/json"})[0])

    threads = [threading.Thread(target=post) for _ in range(times)]
    start_and_join(threads)
    return statuses


def push_envelope(data: bytes, attributes: dict[str, str] | None = None) -> bytes:
    """A push body as Pub/Sub sends it."""
    import base64

    return json.dumps({
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes or {},
            "messageId": uuid.uuid4().hex,
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": "projects/i3tasks-test/subscriptions/test",
    }).encode()


class Events:
    """Everything the three signals sent, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: list[tuple[str, Any, dict[str, Any]]] = []

    def receiver(self, name: str):
        def receive(sender: Any, signal: Any = None, **kwargs: Any) -> None:
            with self.lock:
                self.sent.append((name, sender, kwargs))
        return receive

    def of(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [kwargs for kind, _, kwargs in self.sent if kind == name]


def drain(sent: list) -> None:
    """Run every message sent, also the retries they cause (backoff ignored)."""
    from django.utils import timezone

    from django_i3tasks.execution import run_message
    from django_i3tasks.models import TaskExecutionTry

    while sent:
        message = sent.pop(0)
        TaskExecutionTry.objects.filter(pk=message.try_id).update(not_before=timezone.now())
        run_message(message)


class Lines:
    """A stream (``stdout``/``stderr`` of a command or worker) that keeps what is written, by
    line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.extend(text.splitlines())

    def flush(self) -> None:
        pass


def api_backend(alias: str = "default") -> PubSubBackend:
    """Django's tasks API backend ``alias``, checked to be ours (a ``PubSubBackend``)."""
    from django_i3tasks.backends import TASKS_API, PubSubBackend

    if TASKS_API == "django.tasks":
        from django.tasks import task_backends
    else:
        from django_tasks import task_backends
    found = task_backends[alias]
    assert isinstance(found, PubSubBackend)
    return found


def callback_messages(sent: list[Any], group: Any) -> list[Any]:
    """The messages among ``sent`` that run ``group``'s callback."""
    return [m for m in sent if m.execution_id == group.callback_id]


# -- the beat: schedules of the test app's ``tick`` and times in UTC ------------------------

UTC = dt_timezone.utc
MINUTELY = Schedule("tests.testapp.beat_tasks", "tick", "* * * * *", ["minutely"])
HOURLY = Schedule("tests.testapp.beat_tasks", "tick", "0 * * * *", ["hourly"])
DAILY = Schedule("tests.testapp.beat_tasks", "tick", "30 3 * * *", ["daily"])


def at(text: str) -> datetime:
    """``text`` (ISO 8601, no zone) as a UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def this_minute() -> tuple[str, str]:
    """The current minute as Cloud Scheduler writes it, and as the beat answers it."""
    from django.utils import timezone

    minute = timezone.now().astimezone(UTC).replace(second=0, microsecond=0)
    return minute.strftime("%Y-%m-%dT%H:%M:%SZ"), minute.isoformat()


def executions(tag: str) -> int:
    """How many executions of the beat's ``tick`` there are with argument ``tag``."""
    from django_i3tasks.models import TaskExecution
    from tests.testapp.beat_tasks import tick

    return TaskExecution.objects.filter(task_name=tick.name, args=[tag]).count()


def point_at(execution: Any) -> list[Any]:
    """Rows that point at ``execution`` without being deleted with it: a next step
    (``previous``), a failure handler (``handler_of``), a group naming it as ``callback`` and
    ``failure_handler``; ``assert_unlinked`` checks them after a delete."""
    from django_i3tasks.models import TaskExecution, TaskGroup

    return [
        TaskExecution.objects.create(task_name="tests.q", queue_name="default",
                                     previous=execution),
        TaskExecution.objects.create(task_name="tests.q", queue_name="default",
                                     handler_of=execution),
        TaskGroup.objects.create(total_count=1, callback=execution, failure_handler=execution),
    ]


def assert_unlinked(pointers: list[Any]) -> None:
    """Each row of ``point_at`` is still there, its link to the deleted execution NULL."""
    step, handler, group = pointers
    for row in pointers:
        row.refresh_from_db()
    assert step.previous_id is None and handler.handler_of_id is None
    assert group.callback_id is None and group.failure_handler_id is None


def push_subscription(live_server: Any, i3settings: Callable[..., Any],
                      **queue: Any) -> Iterator[str]:
    """Provision the default queue as a push subscription to the live server's push view,
    with ``queue``'s settings (ack deadline, backoff); yield the push URL and delete the
    subscription afterwards, so the emulator stops pushing to a server that is gone."""
    import dataclasses

    from django_i3tasks import transport
    from django_i3tasks.conf import get_settings, pubsub_config
    from django_i3tasks.provisioning import ensure_pubsub

    url = f"{live_server.url}/i3/tasks-push/"
    configured = dataclasses.replace(get_settings().default_queue, push_endpoint=url, **queue)
    i3settings(default_queue=configured)
    ensure_pubsub()
    yield url
    transport.flush()
    subscriber = transport.subscriber_client()
    try:
        subscriber.delete_subscription(
            subscription=pubsub_config().subscription_path(configured))
    finally:
        subscriber.close()
