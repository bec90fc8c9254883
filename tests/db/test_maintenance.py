"""Health endpoint and retention clean-up."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_i3tasks.models import (
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TryStatus,
)
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


def test_health_is_ok_then_reports_stuck_tries(client, i3settings):
    response = client.get("/i3/tasks-health/")
    assert response.status_code == 200 and response.json()["healthy"] is True
    handle = tasks.add.delay(1, 2)
    TaskExecutionTry.objects.filter(execution_id=handle.id).update(
        not_before=timezone.now() - timedelta(hours=2))
    response = client.get("/i3/tasks-health/")
    assert response.status_code == 503
    assert response.json()["stuck_queued"] == 1 and response.json()["healthy"] is False
    i3settings(status_token="tok")
    assert client.get("/i3/tasks-health/").status_code == 401


def test_clean_removes_only_old_finished_executions(i3settings):
    i3settings(force_sync=True)
    old = tasks.add.delay(1, 1).task_execution
    recent = tasks.add.delay(2, 2).task_execution
    TaskExecution.objects.filter(pk=old.pk).update(
        finished_at=timezone.now() - timedelta(days=40))
    i3settings(force_sync=False)
    pending_old = tasks.add.delay(3, 3).task_execution
    TaskExecution.objects.filter(pk=pending_old.pk).update(
        created_at=timezone.now() - timedelta(days=40))
    out = StringIO()
    call_command("i3tasks_clean", "--dry-run", stdout=out)
    assert "would delete 1" in out.getvalue()
    call_command("i3tasks_clean", stdout=out)
    remaining = set(TaskExecution.objects.values_list("pk", flat=True))
    assert remaining == {recent.pk, pending_old.pk}
    assert not TaskExecutionResult.objects.filter(execution_id=old.pk).exists()
    assert not TaskExecutionTry.objects.filter(execution_id=old.pk).exists()
    assert TaskExecutionTry.objects.get(execution_id=pending_old.pk).status == TryStatus.QUEUED
