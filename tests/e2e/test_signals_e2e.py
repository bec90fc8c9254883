"""Signals once per change when a message is delivered many times at once, or twice over HTTP."""

from __future__ import annotations

import threading

import pytest

from django_i3tasks import transport
from django_i3tasks.execution import run_message
from django_i3tasks.models import ExecutionStatus, TaskExecution
from tests.helpers import http, message_of, push_body_of, wait_for
from tests.testapp import tasks


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_deliveries_send_one_started_and_one_finished(events, no_publish):
    handle = tasks.slow.delay("sig-race", 0.3)
    message = message_of(handle)
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        try:
            run_message(message)
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(events.of("started")) == 1 and len(events.of("finished")) == 1


@pytest.mark.django_db(transaction=True)
def test_push_delivered_twice_over_http_sends_each_signal_once(events, push_queue):
    handle = tasks.add.delay(20, 22)
    transport.flush()
    wait_for(lambda: TaskExecution.objects.get(pk=handle.id).status == ExecutionStatus.SUCCESS)
    status, _, body = http("POST", push_queue, push_body_of(handle),
                           {"Content-Type": "application/json"})
    assert status == 200 and b"duplicate" in body
    assert [e["execution_uuid"] for e in events.of("enqueued")] == [handle.uuid]
    assert len(events.of("started")) == 1
    (finished,) = events.of("finished")
    assert finished["status"] == "success" and finished["return_value"] == 42
