"""The shared execution path under concurrent delivery: 16 threads, one message, one run
(PostgreSQL: real row locks)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.models import TaskExecution, TaskExecutionTry, TryStatus
from tests.helpers import message_of
from tests.testapp import tasks


def queued_message(task, *args, **kwargs):
    """Write an execution like .delay() does (messages go to the ``no_publish`` list)."""
    execution = TaskExecution.objects.get(pk=task.delay(*args, **kwargs).id)
    return message_of(execution)


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_message_run_it_once(no_publish):
    """16 threads deliver the same message at the same moment (PostgreSQL: real row locks)."""
    for round_ in range(5):
        message = queued_message(tasks.slow, f"race{round_}", 0.2)
        barrier = threading.Barrier(16)
        outcomes = []

        def deliver(message=message, barrier=barrier, outcomes=outcomes):
            barrier.wait()
            try:
                outcomes.append(run_message(message).status)
            finally:
                connection.close()

        threads = [threading.Thread(target=deliver) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert tasks.CALLS[f"slow:race{round_}"] == 1
        assert outcomes.count(OutcomeStatus.SUCCESS) == 1
        assert set(outcomes) <= {OutcomeStatus.SUCCESS, OutcomeStatus.RUNNING,
                                 OutcomeStatus.DUPLICATE}
        task_try = TaskExecutionTry.objects.get(pk=message.try_id)
        assert task_try.claims == 1 and task_try.status == TryStatus.SUCCESS
