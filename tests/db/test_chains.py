"""Chains: ``.then()``, ``on_success`` and ``build_chain``; steps are never lost or doubled."""

from __future__ import annotations

import pytest

from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskExecutionTry
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
