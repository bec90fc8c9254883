"""Each named statement of ``django_i3tasks.queries``, run against the database on its own."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from django_i3tasks import db, queries
from django_i3tasks.models import (
    ScheduleSlot,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
)
from tests.helpers import assert_unlinked, point_at

pytestmark = pytest.mark.django_db
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql",
                                   reason="a PostgreSQL statement (data-modifying CTEs)")


def _queued(**try_fields: object) -> TaskExecutionTry:
    execution = TaskExecution.objects.create(task_name="tests.q", queue_name="default")
    return TaskExecutionTry.objects.create(execution=execution, number=1, **try_fields)


def _claim(task_try: TaskExecutionTry, token: uuid.UUID) -> int:
    now = timezone.now()
    field = TaskExecutionTry._meta.get_field("claim_token")
    with connection.cursor() as cursor:
        cursor.execute(queries.claim_try(connection), [
            "running", now, now + timedelta(seconds=60),
            field.get_db_prep_value(token, connection), task_try.pk,
            task_try.execution_id, task_try.number, "queued", now, "running", now,
        ])
        # Where the statement returns the try's not_before, the row says whether it won.
        return len(cursor.fetchall()) if connection.features.can_return_columns_from_insert \
            else cursor.rowcount


def test_claim_try_claims_a_due_try_once_and_an_expired_lease_again() -> None:
    task_try = _queued()
    first = uuid.uuid4()
    assert _claim(task_try, first) == 1
    assert _claim(task_try, uuid.uuid4()) == 0  # running, lease not expired
    task_try.refresh_from_db()
    assert (task_try.status, task_try.claim_token, task_try.claims) == ("running", first, 1)
    TaskExecutionTry.objects.filter(pk=task_try.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert _claim(task_try, uuid.uuid4()) == 1  # its worker died
    later = _queued(not_before=timezone.now() + timedelta(hours=1))
    assert _claim(later, uuid.uuid4()) == 0  # not due yet


@postgres_only
@pytest.mark.parametrize("has_next", [False, True])
def test_succeed_try_records_try_result_and_execution_in_one_statement(has_next: bool) -> None:
    task_try = _queued()
    token = uuid.uuid4()
    assert _claim(task_try, token) == 1
    TaskExecution.objects.filter(pk=task_try.execution_id).update(has_next=has_next)
    column, cast, value = db.prepared(TaskExecutionResult, "value", {"v": 1}, "default")
    sql = queries.succeed_try(connection, progress_cast=None, value_column=column,
                              value_cast=cast, unless_next=True)
    now = timezone.now()
    row = db.fetch_one(sql, [task_try.execution_id, "success", now, task_try.pk, token,
                             "running", task_try.execution_id, value, False, now, "success",
                             now, task_try.execution_id, "pending"], "default")
    task_try.refresh_from_db()
    if has_next:  # a chain step waits: nothing changes, the caller records in a transaction
        assert row == (False, False, True)
        assert task_try.status == "running" and not TaskExecutionResult.objects.exists()
    else:
        assert row == (True, True, False)
        assert task_try.status == "success"
        assert TaskExecutionResult.objects.get(task_try=task_try).value == {"v": 1}
        assert TaskExecution.objects.get(pk=task_try.execution_id).status == "success"


@postgres_only
def test_insert_linked_writes_a_parent_and_its_child_in_one_statement() -> None:
    execution = TaskExecution(task_name="tests.q", queue_name="default")
    first = TaskExecutionTry(execution=execution, number=1)
    assert db.insert_linked(execution, first, "execution")
    assert TaskExecutionTry.objects.get(pk=first.pk).execution_id == execution.pk


@postgres_only
def test_insert_many_linked_matches_parents_to_children_in_order() -> None:
    rows = [{"uuid": uuid.uuid4(), "task_name": f"tests.q{n}", "queue_name": "default"}
            for n in range(7)]
    pairs = db.insert_many_linked(TaskExecution, rows, {"status": "pending"}, "uuid",
                                  TaskExecutionTry, "execution", {"number": 1})
    assert pairs is not None and len(pairs) == 7
    for row, (execution_id, try_id) in zip(rows, pairs, strict=True):
        assert TaskExecution.objects.get(pk=execution_id).uuid == row["uuid"]
        assert TaskExecutionTry.objects.get(pk=try_id).execution_id == execution_id


def test_insert_new_skips_rows_that_exist_and_returns_only_what_it_wrote() -> None:
    slot = timezone.now().replace(second=0, microsecond=0)
    rows = [{"schedule_key": key, "slot": slot, "created_at": slot} for key in ("a", "b")]
    assert db.count_new(ScheduleSlot, rows[:1], ["schedule_key", "slot"]) == 1
    written = db.insert_new(ScheduleSlot, rows, ["schedule_key", "slot"], ["schedule_key"])
    assert written == [("b",)]
    assert ScheduleSlot.objects.count() == 2


def test_lock_concurrency_key_reads_the_executions_key() -> None:
    execution = TaskExecution.objects.create(task_name="tests.q", queue_name="default",
                                             concurrency_key="customer:7")
    with connection.cursor() as cursor:
        cursor.execute(queries.lock_concurrency_key(connection, 7), [execution.pk])
        assert cursor.fetchone()[0] == "customer:7"


def test_advance_schedule_states_moves_forward_never_back() -> None:
    from django_i3tasks.models import ScheduleState

    now = timezone.now().replace(microsecond=0)
    early = ScheduleState.objects.create(key="a", spec="UTC * * * * *", next_fire=now)
    late = ScheduleState.objects.create(key="b", spec="UTC * * * * *",
                                        next_fire=now + timedelta(hours=1))
    field = ScheduleState._meta.get_field("next_fire")
    later = field.get_db_prep_value(now + timedelta(minutes=5), connection)
    rows = [(early.pk, later, None, None), (late.pk, later, None, None)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            fields = [ScheduleState._meta.get_field(n)
                      for n in ("id", "next_fire", "last_slot", "spec")]
            document, picks = db.json_rows(
                fields, [(early.pk, now + timedelta(minutes=5), None, None),
                         (late.pk, now + timedelta(minutes=5), None, None)], connection)
            cursor.execute(queries.advance_schedule_states(connection, picks=picks), [document])
        else:
            cursor.execute(queries.advance_schedule_states(connection, rows=2),
                           [value for row in rows for value in row])
    early.refresh_from_db()
    late.refresh_from_db()
    assert early.next_fire == now + timedelta(minutes=5)
    assert late.next_fire == now + timedelta(hours=1)  # never moved back


def test_delete_executions_removes_the_batch_and_unlinks_what_points_at_it() -> None:
    task_try = _queued()
    execution = task_try.execution
    TaskExecutionResult.objects.create(execution=execution, task_try=task_try, value=1)
    pointers = point_at(execution)
    gone = TaskExecution.objects.create(task_name="tests.q", queue_name="default",
                                        previous=execution)  # in the batch too
    with transaction.atomic(), connection.cursor() as cursor:
        for sql, params in queries.delete_executions(connection, [execution.pk, gone.pk]):
            cursor.execute(sql, params)
    connection.check_constraints()  # nothing points at a deleted row
    assert not TaskExecution.objects.filter(pk__in=[execution.pk, gone.pk]).exists()
    assert not TaskExecutionTry.objects.filter(execution_id=execution.pk).exists()
    assert_unlinked(pointers)


@postgres_only
def test_try_timings_and_window_tries_read_finished_tries() -> None:
    now = timezone.now()
    task_try = _queued(not_before=now - timedelta(seconds=3))
    TaskExecutionTry.objects.filter(pk=task_try.pk).update(
        status="success", started_at=now - timedelta(seconds=2), finished_at=now)
    with connection.cursor() as cursor:
        cursor.execute(queries.try_timings(connection), [now - timedelta(minutes=1)])
        ((task, count, durations, delays),) = cursor.fetchall()
        assert (task, count) == ("tests.q", 1)
        assert round(durations[0]) == 2 and round(delays[0]) == 1
        cursor.execute(queries.window_tries(connection), [60, now - timedelta(minutes=1)])
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    # GROUPING(): per task, outcome and minute, per task and run-time bin, per task and
    # queue-delay bin (2 s and 1 s: bins 152 and 138 of 20 per factor e over 1 ms).
    assert sorted(rows) == [3, 25, 26]
    assert rows[3][:3] == ("success", int(now.timestamp() // 60), "tests.q")
    assert rows[25][3:] == (152, None, 1) and rows[26][3:] == (None, 138, 1)
