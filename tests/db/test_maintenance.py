"""Health endpoint and retention clean-up."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from django_i3tasks.models import (
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TryStatus,
)
from tests.helpers import assert_unlinked, point_at
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


def _old_finished() -> None:
    handle = tasks.add.using(queue_name="default").delay(1, 1)
    TaskExecution.objects.filter(pk=handle.id).update(
        status="success", finished_at=timezone.now() - timedelta(days=40))


@pytest.mark.django_db(transaction=True)
def test_clean_vacuums_on_postgres_unless_told_not_to(no_publish):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    on_postgres = connection.vendor == "postgresql"
    _old_finished()
    out = StringIO()
    with CaptureQueriesContext(connection) as captured:
        call_command("i3tasks_clean", stdout=out)
    vacuums = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("VACUUM")]
    assert "deleted 1 finished execution(s)" in out.getvalue()
    assert len(vacuums) == (3 if on_postgres else 0)
    assert ("vacuumed django_i3tasks_taskexecutionresult" in out.getvalue()) == on_postgres
    _old_finished()
    with CaptureQueriesContext(connection) as captured:
        call_command("i3tasks_clean", "--no-vacuum", stdout=StringIO())
    assert not [q for q in captured.captured_queries if q["sql"].startswith("VACUUM")]
    with CaptureQueriesContext(connection) as captured:  # nothing deleted: nothing to vacuum
        call_command("i3tasks_clean", stdout=StringIO())
    assert not [q for q in captured.captured_queries if q["sql"].startswith("VACUUM")]


def test_a_parked_execution_is_not_a_stuck_one(client, no_publish):
    """Health counts stuck tries without a join first; a parked execution keeps its queued
    try while it waits for a limit, and is taken back out of the count."""
    stuck, parked = tasks.add.delay(1, 1), tasks.add.delay(2, 2)
    TaskExecutionTry.objects.update(not_before=timezone.now() - timedelta(hours=2))
    TaskExecution.objects.filter(pk=parked.id).update(status="waiting",
                                                       wait_reason="concurrency:k")
    body = client.get("/i3/tasks-health/").json()
    assert body["stuck_queued"] == 1 and body["parked"] == {"concurrency:k": 1}
    TaskExecution.objects.filter(pk=stuck.id).update(status="waiting", wait_reason="rate:k")
    body = client.get("/i3/tasks-health/").json()
    assert body["stuck_queued"] == 0 and body["healthy"] is True


postgres_only = pytest.mark.skipif(connection.vendor != "postgresql",
                                   reason="the delete action of foreign keys on PostgreSQL")
POINTING = {  # (table, column) of every foreign key to an execution or a try
    ("django_i3tasks_taskexecutiontry", "execution_id"),
    ("django_i3tasks_taskexecutionresult", "execution_id"),
    ("django_i3tasks_taskexecutionresult", "task_try_id"),
    ("django_i3tasks_taskexecution", "previous_id"),
    ("django_i3tasks_taskexecution", "handler_of_id"),
    ("django_i3tasks_taskgroup", "callback_id"),
    ("django_i3tasks_taskgroup", "failure_handler_id"),
}


def _delete_actions() -> dict[tuple[str, str], tuple[str, bool, bool]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.conrelid::regclass::text, a.attname, c.confdeltype, c.condeferrable, "
            "c.condeferred FROM pg_constraint c JOIN pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] WHERE c.contype = 'f' "
            "AND c.confrelid::regclass::text IN "
            "('django_i3tasks_taskexecution', 'django_i3tasks_taskexecutiontry')")
        return {(table, column): (action, deferrable, deferred)
                for table, column, action, deferrable, deferred in cursor.fetchall()}


@postgres_only
def test_keys_pointing_at_executions_and_tries_restrict_deletes_and_stay_deferred() -> None:
    # 'r': RESTRICT, one check per deleted row at the end of the statement (0014).
    assert _delete_actions() == {key: ("r", True, True) for key in POINTING}


@postgres_only
def test_a_delete_that_leaves_a_try_behind_is_refused_at_the_statement(no_publish) -> None:
    handle = tasks.add.delay(1, 1)
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM django_i3tasks_taskexecution WHERE id = %s", [handle.id])
    assert TaskExecution.objects.filter(pk=handle.id).exists()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_migration_0014_reverses_to_no_action_and_back() -> None:
    call_command("migrate", "django_i3tasks", "0013", verbosity=0)
    try:
        assert {action for action, _, _ in _delete_actions().values()} == {"a"}
    finally:
        call_command("migrate", "django_i3tasks", verbosity=0)
    assert _delete_actions() == {key: ("r", True, True) for key in POINTING}


def test_deleting_an_execution_in_the_orm_takes_what_points_at_it_first(i3settings) -> None:
    i3settings(force_sync=True)
    execution = tasks.add.delay(1, 1).task_execution  # with its try and its result
    pointers = point_at(execution)
    with transaction.atomic():  # Django's collector: results, tries, unlinks, then the row
        TaskExecution.objects.filter(pk=execution.pk).delete()
    connection.check_constraints()
    assert not TaskExecutionTry.objects.filter(execution_id=execution.pk).exists()
    assert_unlinked(pointers)
