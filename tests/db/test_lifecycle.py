"""The lifecycle's recording of a success on PostgreSQL: one statement in autocommit when
nothing follows the try, a transaction when something does (a chain step, a group, a project
receiver). The race between the two paths and ``.then()`` is in
``tests/e2e/test_lifecycle_races.py``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection

from django_i3tasks import signals
from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.models import (
    ExecutionStatus,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TaskGroup,
    TryStatus,
)
from tests.helpers import message_of
from tests.testapp import tasks
from tests.testapp.chain_tasks import link, produce

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the autocommit success is PostgreSQL's"
)


@contextmanager
def statements() -> Iterator[list[tuple[str, bool]]]:
    """Each data statement this connection runs, with whether a transaction was open."""
    seen: list[tuple[str, bool]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append((sql, connection.in_atomic_block))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield seen


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_plain_success_is_recorded_without_a_transaction(no_publish):
    # With the metrics' receivers connected (prometheus-client is installed for the tests):
    # the queue delay comes from the claim's RETURNING, not from a statement of its own.
    message = message_of(tasks.add.delay(2, 3))
    with statements() as seen:
        outcome = run_message(message)
    assert outcome.status == OutcomeStatus.SUCCESS
    assert [atomic for _, atomic in seen] == [False, False], seen  # claim, record
    assert "FOR NO KEY UPDATE" in seen[1][0]
    execution = TaskExecution.objects.get(pk=message.execution_id)
    assert execution.status == ExecutionStatus.SUCCESS and execution.finished_at is not None
    assert execution.tries.get().status == TryStatus.SUCCESS
    assert TaskExecutionResult.objects.get(execution=execution).value == 5


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_project_receiver_of_task_finished_still_runs_inside_the_transaction(no_publish):
    inside: list[bool] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        inside.append(connection.in_atomic_block)

    signals.task_finished.connect(receiver)
    try:
        assert not signals.package_receivers_only(signals.task_finished)
        run_message(message_of(tasks.add.delay(2, 3)))
    finally:
        signals.task_finished.disconnect(receiver)
    assert inside == [True]
    assert signals.package_receivers_only(signals.task_finished)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_step_added_before_the_success_is_released_in_the_transaction(no_publish):
    a = link.delay("a")
    b = a.then(link, "b")
    with statements() as seen:
        assert run_message(message_of(a)).status == OutcomeStatus.SUCCESS
    assert any(atomic for _, atomic in seen), "a waiting step needs the transaction"
    assert TaskExecution.objects.get(pk=a.id).status == ExecutionStatus.SUCCESS
    assert TaskExecution.objects.get(pk=b.id).status == ExecutionStatus.PENDING
    assert [m.execution_id for m in no_publish].count(b.id) == 1
    assert TaskExecutionTry.objects.filter(execution_id=a.id).get().status == TryStatus.SUCCESS
    assert TaskExecutionResult.objects.filter(execution_id=a.id).count() == 1


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_group_members_and_on_success_keep_the_transaction(no_publish):
    with statements() as seen:
        run_message(message_of(produce.delay("p")))
    assert any(atomic for _, atomic in seen), "on_success is enqueued with the success"
    group = TaskGroup.create(callback=link.build_chain("done"), total_count=1)
    with statements() as seen:
        run_message(message_of(link.delay("m", __i3group__=group)))
    assert any(atomic for _, atomic in seen), "the group is counted with the success"
    group.refresh_from_db()
    assert group.callback.status == ExecutionStatus.PENDING


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_held_back_progress_is_written_by_the_one_statement(no_publish):
    from django_i3tasks import lifecycle

    message = message_of(tasks.add.delay(1, 1))
    token = lifecycle.claim(message)
    with statements() as seen:
        outcome = lifecycle.record_success(
            message, token, 2, progress={"current": 9, "total": 10, "message": "x"}
        )
    assert outcome.status == OutcomeStatus.SUCCESS
    assert [atomic for _, atomic in seen] == [False]
    done = TaskExecutionTry.objects.get(pk=message.try_id)
    assert done.status == TryStatus.SUCCESS
    assert done.progress == {"current": 9, "total": 10, "message": "x"}
