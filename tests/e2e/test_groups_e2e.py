"""Groups end to end through the emulator and the push view, and members delivered concurrently
(PostgreSQL: real row locks)."""

from __future__ import annotations

import queue
import random
import threading

import pytest
from django.db import connection

from django_i3tasks import transport
from django_i3tasks.execution import run_message
from django_i3tasks.models import (
    ExecutionStatus,
    GroupStatus,
    TaskExecution,
    TaskExecutionTry,
    TaskGroup,
)
from tests.helpers import callback_messages, wait_for
from tests.testapp import tasks
from tests.testapp.chain_tasks import ORDER, link, member, member_fails

ON_POSTGRES = connection.vendor == "postgresql"


def deliver_concurrently(messages, threads: int) -> None:
    """Run every message on a pool of threads, each with its own database connection."""
    work: queue.SimpleQueue = queue.SimpleQueue()
    for message in messages:
        work.put(message)
    errors = []

    def worker():
        try:
            while True:
                try:
                    message = work.get_nowait()
                except queue.Empty:
                    return
                run_message(message)
        except Exception as exc:  # surfaced below: a thread's error must fail the test
            errors.append(exc)
        finally:
            connection.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_200_members_delivered_twice_concurrently_fire_the_callback_once(no_publish):
    """The join race: 16 threads, every member message twice, in random order (20 rounds on
    PostgreSQL; 2 smaller rounds on SQLite, which serializes writers)."""
    rounds, size, threads = (20, 200, 16) if ON_POSTGRES else (2, 50, 8)
    for round_ in range(rounds):
        no_publish.clear()
        group = TaskGroup.create(callback=link.build_chain(f"join{round_}"), total_count=size)
        member.map(range(size), group=group)
        messages = list(no_publish) * 2
        random.shuffle(messages)
        deliver_concurrently(messages, threads)
        group.refresh_from_db()
        assert group.status == GroupStatus.SUCCESS, f"round {round_}"
        assert group.succeeded_count == size
        assert len(callback_messages(no_publish, group)) == 1, f"round {round_}"
        assert TaskExecutionTry.objects.filter(execution__group=group, claims=1).count() == size


@pytest.mark.django_db(transaction=True)
def test_failing_member_among_concurrent_successes_fails_the_group(no_publish, i3settings):
    i3settings(retry_backoff_min_seconds=0, retry_backoff_max_seconds=0)
    rounds, size = (5, 60) if ON_POSTGRES else (1, 20)
    for round_ in range(rounds):
        no_publish.clear()
        group = TaskGroup.create(callback=link.build_chain(f"no{round_}"), total_count=size)
        member.map(range(size - 1), group=group)
        member_fails.delay(round_, __i3group__=group)
        first_wave = list(no_publish)
        random.shuffle(first_wave)
        deliver_concurrently(first_wave, 8)
        retries = [m for m in no_publish if m.try_number == 2]
        deliver_concurrently(retries, 1)
        group.refresh_from_db()
        assert group.status == GroupStatus.FAILED, f"round {round_}"
        assert callback_messages(no_publish, group) == []
        assert TaskExecution.objects.get(pk=group.callback_id).status == ExecutionStatus.SKIPPED
    assert ORDER == []


@pytest.mark.django_db(transaction=True)
def test_group_with_a_chain_callback_end_to_end(push_queue):
    head = link.build_chain("cb-1")
    head.then(link, "cb-2")
    group = TaskGroup.create(callback=head, total_count=5)
    member.map(range(5), group=group)
    transport.flush()
    wait_for(lambda: ORDER == ["cb-1", "cb-2"], timeout=30)
    group.refresh_from_db()
    assert group.status == GroupStatus.SUCCESS and group.succeeded_count == 5
    assert all(tasks.CALLS[f"member:{i}"] == 1 for i in range(5))


@pytest.mark.django_db(transaction=True)
def test_group_with_an_on_success_callback_end_to_end(push_queue):
    from tests.testapp.chain_tasks import produce

    group = TaskGroup.create(callback=produce.build_chain("joined"), total_count=2)
    member.delay(10, __i3group__=group)
    member.delay(11, __i3group__=group)
    transport.flush()
    wait_for(lambda: tasks.CALLS["collect:produced:joined"] == 1, timeout=30)
    assert tasks.CALLS["produce:joined"] == 1
