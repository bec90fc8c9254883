"""The admin: executions with tries, result, chain and group; groups with counts; retry."""

from __future__ import annotations

import pytest
from django.urls import reverse

from django_i3tasks.execution import run_message
from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskGroup
from tests.testapp.chain_tasks import ORDER, broken_link, link, member

pytestmark = pytest.mark.django_db


def test_execution_pages_show_tries_result_chain_and_group(admin_client, no_publish):
    group = TaskGroup.create(callback=link.build_chain("joined"), total_count=1)
    first = member.delay(7, __i3group__=group)
    second = first.then(link, "next")
    run_message(no_publish[0])
    changelist = admin_client.get(reverse("admin:django_i3tasks_taskexecution_changelist"))
    assert changelist.status_code == 200
    assert member.name.encode() in changelist.content
    filtered = admin_client.get(
        reverse("admin:django_i3tasks_taskexecution_changelist"),
        {"status__exact": "success", "task_name": member.name},
    )
    assert filtered.status_code == 200 and filtered.context["cl"].result_count == 1
    page = admin_client.get(
        reverse("admin:django_i3tasks_taskexecution_change", args=[first.id])
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert "(this one)" in html and str(second.uuid) in html  # the chain
    assert str(group.uuid) in html  # the group
    assert "Task execution tries" in html  # the tries inline
    assert ">7<" in html or "7</" in html  # the result value


def test_group_page_shows_counts_and_links_members(admin_client, no_publish):
    group = TaskGroup.create(callback=link.build_chain("joined"), total_count=3)
    member.map([1, 2], group=group)
    run_message(no_publish[0])
    page = admin_client.get(reverse("admin:django_i3tasks_taskgroup_change", args=[group.pk]))
    assert page.status_code == 200
    assert "1 of 3 succeeded, 0 failed" in page.content.decode()
    members = admin_client.get(
        reverse("admin:django_i3tasks_taskexecution_changelist"), {"group__id__exact": group.pk}
    )
    assert members.status_code == 200 and members.context["cl"].result_count == 2


def test_retry_action_runs_a_failed_execution_again_and_revives_its_chain(
    admin_client, no_publish
):
    failed = broken_link.delay("r")
    after = failed.then(link, "after-retry")
    done = link.delay("fine")
    run_message(no_publish[0])
    run_message(no_publish[1])
    assert TaskExecution.objects.get(pk=after.id).status == ExecutionStatus.SKIPPED
    response = admin_client.post(
        reverse("admin:django_i3tasks_taskexecution_changelist"),
        {"action": "retry", "_selected_action": [failed.id, done.id]},
        follow=True,
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "1 execution(s) retried." in text and "1 selected execution(s)" in text
    (retry_message,) = no_publish[2:]
    assert retry_message.execution_id == failed.id and retry_message.try_number == 2
    assert TaskExecution.objects.get(pk=after.id).status == ExecutionStatus.WAITING
    run_message(retry_message)  # fails again: no retries left, the chain is skipped again
    assert TaskExecution.objects.get(pk=failed.id).status == ExecutionStatus.FAILED
    assert TaskExecution.objects.get(pk=after.id).status == ExecutionStatus.SKIPPED
    assert ORDER == ["fine"]


def test_nothing_can_be_added_or_edited_by_hand(admin_client):
    assert admin_client.get(
        reverse("admin:django_i3tasks_taskexecution_add")
    ).status_code == 403


def _executions(count: int) -> None:
    """``count`` finished executions with two tries each, and ``count`` groups (one per
    execution) whose callback is the first execution: every column has something to show."""
    from datetime import timedelta

    from django.utils import timezone

    from django_i3tasks.models import TaskExecutionTry

    now = timezone.now()
    callback = TaskExecution.objects.create(task_name=link.name, queue_name="default",
                                            status="success", finished_at=now)
    groups = TaskGroup.objects.bulk_create(
        TaskGroup(total_count=1, succeeded_count=1, status="success", callback=callback)
        for _ in range(count)
    )
    executions = [callback, *TaskExecution.objects.bulk_create(
        TaskExecution(task_name=member.name, queue_name="default", status="success",
                      finished_at=now, group=groups[i])
        for i in range(count - 1)
    )]
    TaskExecutionTry.objects.bulk_create(
        TaskExecutionTry(execution=e, number=n, status=status, started_at=now,
                         finished_at=now + timedelta(seconds=n))
        for e in executions for n, status in ((1, "failed"), (2, "success"))
    )


@pytest.mark.parametrize("model", ["taskexecution", "taskgroup"])
def test_list_pages_use_a_constant_number_of_queries(admin_client, model):
    """20 rows or 200 rows (the whole list on one page): the same queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = reverse(f"admin:django_i3tasks_{model}_changelist")
    counts = {}
    for rows in (20, 200):
        TaskExecution.objects.all().delete()
        TaskGroup.objects.all().delete()
        _executions(rows)
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(url, {"all": ""})
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == rows
        counts[rows] = len(queries)
    assert counts[20] == counts[200], counts
    print(f"{model} list queries: {counts}")


def test_execution_page_is_read_only_and_names_its_group_once(admin_client, no_publish):
    group = TaskGroup.create(callback=link.build_chain("joined"), total_count=1)
    handle = member.delay(3, __i3group__=group)
    run_message(no_publish[0])
    url = reverse("admin:django_i3tasks_taskexecution_change", args=[handle.id])
    html = admin_client.get(url).content.decode()
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    assert "deletelink" in html  # cleanup stays possible
    assert html.count("<label>Group:</label>") == 1
    assert 'class="i3-status i3-ok">success<' in html
    assert admin_client.post(url, {}).status_code == 403  # nothing to save


def test_unknown_statuses_render_with_the_neutral_colour():
    from django_i3tasks.admin import human_duration, status_badge

    assert 'class="i3-status i3-neutral">cancelled<' in status_badge("cancelled")
    assert 'class="i3-status i3-bad">failed<' in status_badge("failed")
    from datetime import datetime, timedelta

    start = datetime(2026, 1, 1)
    assert human_duration(start, start + timedelta(seconds=0.0421)) == "0.042 s"
    assert human_duration(start, start + timedelta(seconds=245)) == "4 min 05 s"
    assert human_duration(start, start + timedelta(hours=2, minutes=3)) == "2 h 03 min"
    assert human_duration(start, None) == "-"
