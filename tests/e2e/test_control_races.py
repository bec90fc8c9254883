"""Task control races (PostgreSQL: real row locks and the partial unique index): a cancel
against a claim, concurrent enqueues with one unique key."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection

from django_i3tasks import lifecycle
from django_i3tasks.execution import OutcomeStatus
from django_i3tasks.models import TaskExecution, TaskExecutionTry
from tests.helpers import message_of
from tests.testapp import control_tasks as ct


@pytest.mark.django_db(transaction=True)
def test_cancel_and_claim_race_exactly_one_wins(no_publish):
    """A cancel and a delivery at the same moment (PostgreSQL: real row locks). Either the
    cancel wins (nothing runs, the delivery is acknowledged) or the claim does (the task runs
    and sees the request); never a cancelled execution with a running try."""
    wins = {"cancel": 0, "claim": 0}
    for round_ in range(20):
        handle = ct.noted.delay(f"race{round_}")
        message = message_of(handle)
        barrier = threading.Barrier(2)
        answers = {}

        def do(name, call, barrier=barrier, answers=answers):
            barrier.wait()
            try:
                answers[name] = call()
            finally:
                connection.close()

        threads = [
            threading.Thread(target=do, args=("claim", lambda m=message: lifecycle.claim(m))),
            threading.Thread(target=do, args=("cancel", lambda h=handle: h.cancel())),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers["cancel"] is True
        execution = TaskExecution.objects.get(pk=handle.id)
        task_try = TaskExecutionTry.objects.get(execution_id=handle.id)
        if isinstance(answers["claim"], uuid.UUID):
            wins["claim"] += 1
            assert (execution.status, task_try.status) == ("pending", "running")
            assert execution.cancel_requested_at is not None
        else:
            wins["cancel"] += 1
            assert answers["claim"].status == OutcomeStatus.CANCELLED
            assert (execution.status, task_try.status) == ("cancelled", "cancelled")
    assert sum(wins.values()) == 20


@pytest.mark.django_db(transaction=True)
def test_concurrent_enqueues_with_one_unique_key_make_one_execution(no_publish):
    """Eight threads enqueue with the same key at the same moment (PostgreSQL: the partial
    unique index decides)."""
    for round_ in range(3):
        key = f"concurrent:{round_}"
        barrier = threading.Barrier(8)
        handles, errors = [], []

        def enqueue(key=key, barrier=barrier, handles=handles, errors=errors):
            barrier.wait()
            try:
                handles.append(ct.noted.using(unique_key=key).delay("cu"))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=enqueue) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len({h.uuid for h in handles}) == 1 and len(handles) == 8
        assert TaskExecution.objects.filter(unique_key=key).count() == 1
    assert len(no_publish) == 3
