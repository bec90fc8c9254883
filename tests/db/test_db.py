"""The database helpers: hand-written statements write what the ORM would write."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext

from django_i3tasks import db
from django_i3tasks.models import TaskExecution, TaskExecutionTry

pytestmark = pytest.mark.django_db

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="insert_linked writes on PostgreSQL only"
)


def _execution(**fields: object) -> TaskExecution:
    values: dict[str, object] = dict(
        task_name="tests.db", queue_name="default", args=[1, "two", {"3": None}],
        kwargs={"when": "now", "deep": [True, 1.5]}, status="pending", max_retries=3,
        eta=datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt_timezone.utc), unique_key="",
    )
    values.update(fields)
    return TaskExecution(**values)


def _columns(execution: TaskExecution) -> dict[str, object]:
    row = TaskExecution.objects.values().get(pk=execution.pk)
    row.pop("id")
    row.pop("uuid")
    return row


@postgres_only
def test_insert_linked_writes_what_the_orm_writes() -> None:
    linked = _execution()
    first_try = TaskExecutionTry(execution=linked, number=1)
    assert db.insert_linked(linked, first_try, "execution")
    saved = _execution()
    saved.save(force_insert=True)
    TaskExecution.objects.filter(pk=saved.pk).update(created_at=linked.created_at)

    assert _columns(linked) == _columns(saved)
    assert TaskExecution.objects.get(pk=linked.pk).uuid == linked.uuid
    assert first_try.pk and first_try.execution_id == linked.pk
    assert TaskExecutionTry.objects.get(pk=first_try.pk).execution_id == linked.pk
    assert not linked._state.adding and first_try.execution is linked


@postgres_only
def test_insert_linked_prepares_values_as_the_orm_does() -> None:
    naive = datetime(2030, 1, 2, 3, 4, 5)  # the ORM makes it aware (with a warning)
    linked = _execution(eta=naive, max_retries=True)
    with pytest.warns(RuntimeWarning, match="naive datetime"):
        assert db.insert_linked(linked, TaskExecutionTry(execution=linked, number=1),
                                "execution")
    stored = TaskExecution.objects.get(pk=linked.pk)
    assert stored.eta == naive.replace(tzinfo=dt_timezone.utc)
    assert stored.max_retries == 1  # a bool for an integer column is prepared as an int


@postgres_only
def test_insert_linked_refuses_what_the_orm_refuses_and_writes_nothing() -> None:
    linked = _execution(task_name="x" * 300)  # the column is varchar(255)
    with pytest.raises(DataError), transaction.atomic():
        db.insert_linked(linked, TaskExecutionTry(execution=linked, number=1), "execution")
    assert not TaskExecution.objects.exists()
    assert not TaskExecutionTry.objects.exists()


@postgres_only
def test_bound_cursor_statements_are_seen_by_django() -> None:
    """Query logging and execute wrappers see the statements of the parameter-binding
    cursor (SQL counts and tools such as the debug toolbar depend on it)."""
    wrapped: list[str] = []

    def wrapper(execute, sql, params, many, context):  # noqa: ANN001, ANN202
        wrapped.append(sql)
        return execute(sql, params, many, context)

    key = uuid.uuid4()
    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(wrapper):
        with db.bound_cursor(connection) as cursor:
            cursor.execute("SELECT %s::uuid, %s::int", [key, 7])
            assert cursor.fetchone() == (key, 7)
    assert len(captured.captured_queries) == 1
    assert wrapped == ["SELECT %s::uuid, %s::int"]


def test_insert_linked_leaves_other_databases_to_the_caller() -> None:
    linked = _execution()
    written = db.insert_linked(linked, TaskExecutionTry(execution=linked, number=1),
                               "execution")
    assert written == (connection.vendor == "postgresql")
    assert TaskExecution.objects.count() == int(written)


def test_json_value_writes_timestamps_and_ids_as_text() -> None:
    moment = datetime(2030, 1, 2, tzinfo=dt_timezone.utc) + timedelta(microseconds=5)
    key = uuid.uuid4()
    assert db._json_value(moment) == moment.isoformat()
    assert db._json_value(key) == str(key)
    with pytest.raises(TypeError, match="cannot send object"):
        db._json_value(object())


def test_json_rows_writes_each_object_as_given_even_when_remembering() -> None:
    """A repeated object is written once and reused; equal values of other objects are
    written as they are (an equal instant in another zone, a Decimal of another scale)."""
    from decimal import Decimal

    utc = datetime(2030, 1, 2, 12, tzinfo=dt_timezone.utc)
    elsewhere = utc.astimezone(dt_timezone(timedelta(hours=2)))
    key = uuid.uuid4()
    rows = [[utc, elsewhere, Decimal("1.0"), key], [utc, elsewhere, Decimal("1.00"), key]]
    document, _ = db.json_rows([], rows, connection)
    assert document == (
        f'[["{utc.isoformat()}","{elsewhere.isoformat()}","1.0","{key}"],'
        f'["{utc.isoformat()}","{elsewhere.isoformat()}","1.00","{key}"]]'
    )
