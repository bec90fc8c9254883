"""Groups: the callback fires exactly once after N distinct members succeeded; bulk fan-out."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_i3tasks.execution import run_message
from django_i3tasks.models import (
    ExecutionStatus,
    GroupStatus,
    TaskExecution,
    TaskExecutionTry,
    TaskGroup,
)
from tests.helpers import callback_messages
from tests.testapp import tasks
from tests.testapp.chain_tasks import ORDER, link, member, member_fails

ON_POSTGRES = connection.vendor == "postgresql"


@pytest.mark.django_db
@pytest.mark.parametrize("total", [-1, True, 1.5, "3"])
def test_total_count_must_be_a_non_negative_int(total):
    with pytest.raises(ValueError, match="total_count"):
        TaskGroup.create(total_count=total)


@pytest.mark.django_db
def test_callback_must_be_a_task_or_an_undispatched_chain(no_publish):
    with pytest.raises(TypeError, match="callback"):
        TaskGroup.create(callback=print, total_count=1)
    with pytest.raises(ValueError, match="build_chain"):
        TaskGroup.create(callback=link.delay("already"), total_count=1)
    assert TaskGroup.objects.count() == 0


@pytest.mark.django_db
def test_empty_group_fires_at_once(no_publish):
    group = TaskGroup.create(callback=link.build_chain("joined"), total_count=0)
    assert group.status == GroupStatus.SUCCESS
    assert len(callback_messages(no_publish, group)) == 1


@pytest.mark.django_db
def test_redelivered_member_counts_once(no_publish):
    group = TaskGroup.create(callback=link.build_chain("joined"), total_count=2)
    first = member.delay(1, __i3group__=group)
    member.delay(2, __i3group__=group)
    message_1, message_2 = no_publish
    assert message_1.execution_id == first.id and message_1.group_id == group.pk
    run_message(message_1)
    run_message(message_1)
    group.refresh_from_db()
    assert group.succeeded_count == 1 and group.status == GroupStatus.PENDING
    assert callback_messages(no_publish, group) == []
    run_message(message_2)
    group.refresh_from_db()
    assert group.succeeded_count == 2 and group.status == GroupStatus.SUCCESS
    assert group.finished_at is not None
    assert len(callback_messages(no_publish, group)) == 1
    run_message(message_2)
    assert len(callback_messages(no_publish, group)) == 1


@pytest.mark.django_db
def test_member_exhausting_retries_fails_the_group_and_the_callback_never_runs(no_publish):
    head = link.build_chain("never")
    head.then(link, "never-2")
    group = TaskGroup.create(callback=head, total_count=3)
    member.delay(1, __i3group__=group)
    member_fails.delay(2, __i3group__=group)
    member.delay(3, __i3group__=group)
    run_message(no_publish[0])
    run_message(no_publish[1])  # try 1 fails, try 2 is scheduled
    retry = no_publish[-1]
    assert retry.try_number == 2
    TaskExecutionTry.objects.filter(pk=retry.try_id).update(not_before="2000-01-01T00:00Z")
    run_message(retry)
    run_message(no_publish[2])  # the last member succeeds after the group failed
    group.refresh_from_db()
    assert group.status == GroupStatus.FAILED
    assert group.failed_count == 1 and group.succeeded_count == 1
    assert callback_messages(no_publish, group) == []
    assert set(TaskExecution.objects.filter(task_name=link.name).values_list("status", flat=True)
               ) == {ExecutionStatus.SKIPPED}
    assert ORDER == []


@pytest.mark.django_db
def test_force_sync_group_runs_its_callback_inline(i3settings):
    i3settings(force_sync=True)
    group = TaskGroup.create(callback=link.build_chain("joined"), total_count=3)
    for index in range(3):
        member.delay(index, __i3group__=group)
    group.refresh_from_db()
    assert group.status == GroupStatus.SUCCESS and ORDER == ["joined"]


# -- bulk fan-out --------------------------------------------------------------------------


@pytest.mark.django_db
def test_bulk_fan_out_costs_a_few_statements_not_one_per_member(no_publish):
    group = TaskGroup.create(callback=link.build_chain("joined"), total_count=1000)
    with CaptureQueriesContext(connection) as captured:
        handles = member.map(range(1000), group=group)
    statements = len(captured.captured_queries)
    # PostgreSQL: 500 rows per INSERT; SQLite: as many as its 999 query parameters allow.
    assert statements <= (6 if ON_POSTGRES else 45), statements
    assert len(handles) == len(no_publish) == 1000
    assert TaskExecution.objects.filter(group=group, status="pending").count() == 1000
    assert TaskExecutionTry.objects.filter(execution__group=group).count() == 1000
    assert sorted(m.args[0] for m in no_publish) == list(range(1000))
    assert {m.group_id for m in no_publish} == {group.pk}


@pytest.mark.django_db
def test_bulk_fan_out_validates_every_call_before_writing(no_publish):
    with pytest.raises(TypeError, match="call 7"):
        member.starmap([(i,) for i in range(7)] + [(object(),)])
    assert TaskExecution.objects.count() == 0 and no_publish == []


@pytest.mark.django_db
def test_starmap_spreads_positional_arguments(i3settings):
    i3settings(force_sync=True)
    handles = tasks.add.starmap([(1, 2), (3, 4)])
    assert [h.task_execution.status for h in handles] == ["success", "success"]
    assert tasks.CALLS["add:1:2"] == tasks.CALLS["add:3:4"] == 1
