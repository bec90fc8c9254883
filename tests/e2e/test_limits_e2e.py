"""Limits and timing end to end: ``.delay()`` -> emulator push -> push view over HTTP, on a
subscription with Pub/Sub's own backoff (10 s, growing to 600 s), so nothing here may wait
for a redelivery; and a pull worker killed while it holds a slot."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_i3tasks import transport
from django_i3tasks.models import TaskExecution, TaskExecutionTry
from tests.helpers import push_subscription, wait_for
from tests.testapp import limit_tasks
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_spans() -> None:
    limit_tasks.SPANS.clear()


@pytest.fixture
def slow_push(pubsub: Any, live_server: Any, i3settings: Any) -> Iterator[str]:
    """The default queue as a push subscription with Pub/Sub's default backoff."""
    yield from push_subscription(live_server, i3settings, ack_deadline_seconds=30,
                                 min_retry_backoff_seconds=10, max_retry_backoff_seconds=600)


def all_succeeded(ids: list[int]) -> bool:
    return TaskExecution.objects.filter(pk__in=ids, status="success").count() == len(ids)


def most_at_once(spans: list[tuple[str, float, float]]) -> int:
    """The largest number of spans running at one moment (an end before a start at a tie)."""
    events = sorted([(start, 1) for _, start, _ in spans] + [(end, -1) for _, _, end in spans])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_twenty_one_second_tries_with_concurrency_limit_two(slow_push):
    began = time.time()
    ids = [limit_tasks.two_at_a_time.delay(f"t{i}").id for i in range(20)]
    transport.flush()
    wait_for(lambda: all_succeeded(ids), timeout=90, interval=0.2)
    elapsed = time.time() - began
    spans = limit_tasks.spans("two_at_a_time")
    assert sorted(tag for tag, _, _ in spans) == sorted(f"t{i}" for i in range(20))
    assert most_at_once(spans) <= 2
    tries = TaskExecutionTry.objects.filter(execution_id__in=ids)
    assert tries.count() == 20 and set(tries.values_list("status", flat=True)) == {"success"}
    assert set(tries.values_list("claims", flat=True)) == {1}
    print(f"20 x 1 s, concurrency_limit=2, push: {elapsed:.1f} s")


def test_concurrency_key_one_at_a_time_per_key_two_keys_side_by_side(slow_push):
    ids = [limit_tasks.per_customer.delay(customer, f"{customer}{i}").id
           for i in range(4) for customer in ("acme", "globex")]
    transport.flush()
    wait_for(lambda: all_succeeded(ids), timeout=60, interval=0.2)
    acme, globex = (limit_tasks.spans(f"per_customer:{c}") for c in ("acme", "globex"))
    assert len(acme) == len(globex) == 4
    assert most_at_once(acme) == 1 and most_at_once(globex) == 1
    assert most_at_once(acme + globex) == 2  # the keys ran side by side


def test_rate_limit_five_a_second_over_thirty_quick_tasks(slow_push):
    ids = [limit_tasks.five_a_second.delay(f"r{i}").id for i in range(30)]
    transport.flush()
    wait_for(lambda: all_succeeded(ids), timeout=90, interval=0.2)
    starts = sorted(start for _, start, _ in limit_tasks.spans("five_a_second"))
    assert len(starts) == 30
    busiest = max(sum(1 for s in starts if first <= s < first + 1.0) for first in starts)
    assert busiest <= 5 + 1, starts  # one more for the clock edges
    assert TaskExecutionTry.objects.filter(execution_id__in=ids).exclude(
        status="success").count() == 0


def test_countdown_five_starts_within_two_seconds_without_the_beat(slow_push):
    began = time.time()
    handle = limit_tasks.stamped.using(countdown=5).delay("soon")
    transport.flush()
    wait_for(lambda: all_succeeded([handle.id]), timeout=30, interval=0.1)
    ((_, start, _),) = limit_tasks.spans("stamped")
    assert 5.0 <= start - began <= 7.0, start - began


def test_retries_follow_retry_backoff_not_the_subscriptions(slow_push):
    began = time.time()
    handle = limit_tasks.fails_twice.delay("r")
    transport.flush()
    wait_for(lambda: all_succeeded([handle.id]), timeout=40, interval=0.1)
    spans = limit_tasks.spans("fails_twice")
    assert len(spans) == 3
    assert spans[-1][2] - began <= 6.0, [s - began for _, s, _ in spans]
    # retry_backoff=(1, 2) without jitter: 1 s, then 2 s; never earlier.
    assert spans[1][1] - spans[0][2] >= 0.95 and spans[2][1] - spans[1][2] >= 1.95
    assert list(TaskExecutionTry.objects.filter(execution_id=handle.id).order_by("number")
                .values_list("status", flat=True)) == ["failed", "failed", "success"]


@pytest.fixture
def heavy_worker(pubsub: Any, i3settings: Any) -> Iterator[Any]:
    """The pull queue ``heavy`` (Pub/Sub's default backoff) and a function starting
    ``manage.py i3tasks_worker`` for it in a subprocess (killed afterwards)."""
    from django_i3tasks.provisioning import ensure_pubsub
    from django_i3tasks.testing.processes import OutputProcess
    from django_i3tasks.types import PullQueue
    from tests.helpers import subprocess_env

    i3settings(other_queues=(PullQueue("heavy", "pull", ack_deadline_seconds=10),))
    ensure_pubsub()
    started: list[OutputProcess] = []

    def start() -> OutputProcess:
        process = OutputProcess(
            [sys.executable, "-m", "django", "i3tasks_worker", "--queue", "heavy"],
            subprocess_env(), ROOT)
        started.append(process)
        process.wait_for_line("i3tasks_worker pid=", timeout=30)
        return process

    yield start
    for process in started:
        process.kill()


def test_countdown_and_retries_on_time_on_a_pull_queue(heavy_worker):
    heavy_worker()
    began = time.time()
    later = limit_tasks.heavy_stamped.using(countdown=5).delay("later")
    failing = limit_tasks.heavy_fails_twice.delay("pulled")
    transport.flush()
    wait_for(lambda: all_succeeded([later.id, failing.id]), timeout=40, interval=0.1)
    started = TaskExecutionTry.objects.get(execution_id=later.id).started_at.timestamp()
    assert 5.0 <= started - began <= 7.0, started - began
    tries = list(TaskExecutionTry.objects.filter(execution_id=failing.id).order_by("number"))
    assert [t.status for t in tries] == ["failed", "failed", "success"]
    assert tries[-1].finished_at.timestamp() - began <= 6.0
    assert (tries[1].started_at - tries[0].finished_at).total_seconds() >= 0.95
    assert (tries[2].started_at - tries[1].finished_at).total_seconds() >= 1.95


def test_a_sigkilled_worker_frees_its_slot_after_the_lease(heavy_worker):
    first = heavy_worker()
    holder = limit_tasks.slot_holder.delay("held", 60.0)
    transport.flush()
    wait_for(lambda: Effect.objects.filter(key="held").exists(), timeout=30)
    first.kill()  # SIGKILL while the task holds the only slot
    killed_at = time.time()
    lease_end = TaskExecutionTry.objects.get(execution_id=holder.id).lease_expires_at.timestamp()
    waiting = limit_tasks.slot_holder.delay("next", 0.0)
    transport.flush()
    heavy_worker()
    wait_for(lambda: all_succeeded([waiting.id, holder.id]), timeout=90, interval=0.2)
    started = TaskExecutionTry.objects.get(execution_id=waiting.id).started_at.timestamp()
    assert started >= lease_end - 0.05, (started - killed_at, lease_end - killed_at)
    assert Effect.objects.filter(key="next").count() == 1
