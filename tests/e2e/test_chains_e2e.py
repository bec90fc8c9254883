"""Chains end to end (the emulator, a push subscription, the push view over HTTP), and
``.then()`` racing the previous step's success."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from django_i3tasks import transport
from django_i3tasks.execution import run_message
from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskExecutionTry
from tests.helpers import http, push_body_of, wait_for
from tests.testapp import tasks
from tests.testapp.chain_tasks import ORDER, collect, link, produce


def messages_for(sent, handle):
    return [m for m in sent if m.execution_id == handle.id]


def status(handle) -> str:
    return TaskExecution.objects.get(pk=handle.id).status


@pytest.mark.django_db(transaction=True)
def test_then_racing_the_previous_step_releases_it_exactly_once(no_publish):
    """``.then()`` and the previous step's success commit at the same moment, 40 times."""
    for round_ in range(40):
        a = link.delay(f"a{round_}")
        message = messages_for(no_publish, a)[0]
        barrier = threading.Barrier(2)
        added = []

        def finish(message=message, barrier=barrier):
            barrier.wait()
            try:
                run_message(message)
            finally:
                connection.close()

        def add_step(a=a, barrier=barrier, added=added, round_=round_):
            barrier.wait()
            try:
                added.append(a.then(link, f"b{round_}"))
            finally:
                connection.close()

        threads = [threading.Thread(target=finish), threading.Thread(target=add_step)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        (b,) = added
        assert len(messages_for(no_publish, b)) == 1, f"round {round_}"
        assert TaskExecutionTry.objects.filter(execution_id=b.id).count() == 1
        assert status(b) == ExecutionStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_chain_end_to_end_in_order_and_redelivery_does_not_double(push_queue):
    a = link.delay("e2e-a")
    c = a.then(link, "e2e-b").then(link, "e2e-c")
    transport.flush()
    wait_for(lambda: status(c) == ExecutionStatus.SUCCESS, timeout=30)
    assert ORDER == ["e2e-a", "e2e-b", "e2e-c"]

    execution = TaskExecution.objects.get(pk=a.id)
    code, _, body = http("POST", push_queue, push_body_of(execution),
                         {"Content-Type": "application/json"})
    assert code == 200 and b'"duplicate"' in body
    assert TaskExecution.objects.filter(task_name=link.name, args=["e2e-b"]).count() == 1
    b = TaskExecution.objects.get(task_name=link.name, args=["e2e-b"])
    assert b.tries.count() == 1
    assert tasks.CALLS["link:e2e-b"] == 1 and tasks.CALLS["link:e2e-c"] == 1


@pytest.mark.django_db(transaction=True)
def test_fast_first_step_end_to_end(push_queue):
    a = link.delay("quick")
    transport.flush()
    wait_for(lambda: status(a) == ExecutionStatus.SUCCESS)
    b = a.then(link, "later")
    transport.flush()
    wait_for(lambda: status(b) == ExecutionStatus.SUCCESS)
    assert ORDER == ["quick", "later"]


@pytest.mark.django_db(transaction=True)
def test_on_success_end_to_end(push_queue):
    produce.delay("e2e")
    transport.flush()
    wait_for(lambda: tasks.CALLS["collect:produced:e2e"] == 1, timeout=30)
    follow_up = TaskExecution.objects.get(task_name=collect.name)
    wait_for(lambda: status(follow_up) == ExecutionStatus.SUCCESS)
    assert follow_up.result.value == "produced:e2e"
