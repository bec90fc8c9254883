"""Chains: ``.then()``, ``on_success`` and ``build_chain``; steps are never lost or doubled."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from django_i3tasks import transport
from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskExecutionTry
from tests.helpers import http, push_envelope, wait_for
from tests.testapp import tasks
from tests.testapp.chain_tasks import ORDER, broken_link, collect, link, produce


def messages_for(sent, handle):
    return [m for m in sent if m.execution_id == handle.id]


def status(handle) -> str:
    return TaskExecution.objects.get(pk=handle.id).status


@pytest.mark.django_db
def test_step_waits_until_previous_succeeded_then_runs_in_order(no_publish):
    a = link.delay("a")
    b = a.then(link, "b")
    c = b.then(link, "c")
    assert [m.execution_id for m in no_publish] == [a.id]
    assert status(b) == status(c) == ExecutionStatus.WAITING
    run_message(no_publish[0])
    assert [m.execution_id for m in no_publish] == [a.id, b.id]
    run_message(no_publish[1])
    run_message(no_publish[2])
    assert [m.execution_id for m in no_publish] == [a.id, b.id, c.id]
    assert ORDER == ["a", "b", "c"]
    assert status(c) == ExecutionStatus.SUCCESS
    assert TaskExecution.objects.get(pk=c.id).previous_id == b.id


@pytest.mark.django_db
def test_step_added_after_previous_finished_is_released_by_then(no_publish):
    """The fast-first-task case: ``a`` is done before ``.then()`` is called."""
    a = link.delay("fast")
    run_message(no_publish[0])
    b = a.then(link, "after")
    assert len(messages_for(no_publish, b)) == 1
    assert status(b) == ExecutionStatus.PENDING == b.task_execution.status
    run_message(messages_for(no_publish, b)[0])
    assert ORDER == ["fast", "after"]


@pytest.mark.django_db
def test_redelivered_previous_step_does_not_release_next_twice(no_publish):
    a = link.delay("a")
    b = a.then(link, "b")
    first = no_publish[0]
    assert run_message(first).status == OutcomeStatus.SUCCESS
    assert run_message(first).status == OutcomeStatus.DUPLICATE
    assert len(messages_for(no_publish, b)) == 1
    assert TaskExecutionTry.objects.filter(execution_id=b.id).count() == 1


@pytest.mark.django_db
def test_failed_step_stops_the_chain_and_records_the_rest_as_skipped(no_publish):
    a = broken_link.delay("x")
    b = a.then(link, "y")
    c = b.then(link, "z")
    assert run_message(no_publish[0]).status == OutcomeStatus.FAILED
    assert len(no_publish) == 1
    assert status(a) == ExecutionStatus.FAILED
    assert status(b) == status(c) == ExecutionStatus.SKIPPED
    late = c.then(link, "late")
    assert late.task_execution.status == status(late) == ExecutionStatus.SKIPPED
    assert ORDER == [] and len(no_publish) == 1


@pytest.mark.django_db
def test_then_validates_arguments_before_writing(no_publish):
    a = link.delay("a")
    with pytest.raises(TypeError, match="positional argument 0"):
        a.then(link, object())
    assert TaskExecution.objects.count() == 1
    assert TaskExecution.objects.get(pk=a.id).has_next is False


@pytest.mark.django_db
def test_build_chain_writes_a_waiting_chain_and_publishes_nothing(no_publish):
    head = link.build_chain("x")
    head.then(link, "y")
    assert no_publish == []
    assert set(TaskExecution.objects.values_list("status", flat=True)) == {"waiting"}


@pytest.mark.django_db
def test_on_success_gets_the_result(no_publish):
    produce.delay("p")
    run_message(no_publish[0])
    (follow_up,) = no_publish[1:]
    assert follow_up.task_name == collect.name and follow_up.args == ["produced:p"]
    run_message(follow_up)
    assert tasks.CALLS["collect:produced:p"] == 1


@pytest.mark.django_db
def test_force_sync_runs_chains_inline(i3settings):
    i3settings(force_sync=True)
    c = link.delay("a").then(link, "b").then(collect, "c")
    assert ORDER == ["a", "b"] and tasks.CALLS["collect:c"] == 1
    assert c.task_execution.status == ExecutionStatus.SUCCESS


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


# -- end to end: real emulator, push subscription, push view over HTTP ------------------------


@pytest.mark.django_db(transaction=True)
def test_chain_end_to_end_in_order_and_redelivery_does_not_double(push_queue):
    a = link.delay("e2e-a")
    c = a.then(link, "e2e-b").then(link, "e2e-c")
    transport.flush()
    wait_for(lambda: status(c) == ExecutionStatus.SUCCESS, timeout=30)
    assert ORDER == ["e2e-a", "e2e-b", "e2e-c"]

    from django_i3tasks.lifecycle import message_for

    execution = TaskExecution.objects.get(pk=a.id)
    data, attributes = message_for(execution, execution.tries.get()).encode()
    code, _, body = http("POST", push_queue, push_envelope(data, attributes),
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
