"""The race between the one-statement success and ``.then()`` on PostgreSQL: the step added while
the success statement waits for its lock is released exactly once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, connections, transaction

from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.models import (
    ExecutionStatus,
    TaskExecution,
    TaskExecutionTry,
)
from tests.helpers import message_of, wait_for
from tests.testapp.chain_tasks import link

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the autocommit success is PostgreSQL's"
)


def _waiting_for_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_then_committing_while_the_success_statement_waits_for_its_lock(no_publish):
    """The narrow interleaving: ``.then()`` holds the execution row (``has_next`` set, step
    written, not committed) while the success statement, with its snapshot already taken,
    waits for that row. The statement must see ``has_next`` once the lock is free and leave
    the recording to the transaction that releases the step; recording the success alone
    would leave the step waiting for ever."""
    a = link.delay("a")
    message = message_of(a)
    holding = threading.Event()
    release = threading.Event()
    added: list[Any] = []
    pids: list[int] = []
    outcomes: list[Any] = []

    def add_step() -> None:
        try:
            with transaction.atomic():
                added.append(a.then(link, "b"))
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    def finish() -> None:
        try:
            connection.ensure_connection()
            pids.append(connection.connection.info.backend_pid)
            outcomes.append(run_message(message))
        finally:
            connections.close_all()

    adder = threading.Thread(target=add_step)
    adder.start()
    assert holding.wait(30)
    finisher = threading.Thread(target=finish)
    finisher.start()
    wait_for(lambda: bool(pids) and _waiting_for_a_lock(pids[0]))
    time.sleep(0.1)  # still waiting: only the adder's commit can free it
    assert _waiting_for_a_lock(pids[0])
    release.set()
    adder.join()
    finisher.join()
    (b,) = added
    assert outcomes[0].status == OutcomeStatus.SUCCESS
    assert TaskExecution.objects.get(pk=a.id).status == ExecutionStatus.SUCCESS
    assert TaskExecution.objects.get(pk=b.id).status == ExecutionStatus.PENDING
    assert [m.execution_id for m in no_publish].count(b.id) == 1
    assert TaskExecutionTry.objects.filter(execution_id=b.id).count() == 1
