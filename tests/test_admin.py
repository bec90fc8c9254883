"""The admin: executions with tries, result, chain and group; groups with counts; retry."""

from __future__ import annotations

import pytest
from django.urls import reverse

from django_i3tasks.execution import run_message
from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskGroup
from tests.testapp.chain_tasks import ORDER, broken_link, link, member

pytestmark = pytest.mark.django_db


def test_execution_pages_show_tries_result_chain_and_group(admin_client, no_publish):
    group = TaskGroup.create(callback=link, total_count=1)
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
    group = TaskGroup.create(callback=link, total_count=3)
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
