"""The pull worker, through the real client library and emulator.

Multi-process behaviour (sharing, signals, leases) runs ``manage.py i3tasks_worker`` as
subprocesses on the test's database and namespace; the rest drives ``Worker`` in-process.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from django_i3tasks import transport
from django_i3tasks.conf import get_settings, pubsub_config
from django_i3tasks.messages import TaskMessage
from django_i3tasks.models import TaskExecution, TaskExecutionTry
from django_i3tasks.testing.processes import OutputProcess
from django_i3tasks.types import PullQueue
from django_i3tasks.worker import Worker, WorkerError, WorkerOptions
from tests.helpers import Lines, pull_messages, subprocess_env, wait_for
from tests.testapp.models import Effect
from tests.testapp.worker_tasks import nap, nap_fails

ROOT = Path(__file__).resolve().parents[2]
transactional = pytest.mark.django_db(transaction=True)


class WorkerProcess(OutputProcess):
    """``manage.py i3tasks_worker`` in a subprocess on this test's database and topics."""

    def __init__(self, *args: str) -> None:
        super().__init__(
            [sys.executable, "-m", "django", "i3tasks_worker", "--queue", "heavy",
             "--status-interval", "1", *args],
            subprocess_env(), ROOT,
        )

    def wait_started(self) -> None:
        self.wait_for_line("i3tasks_worker pid=", timeout=30)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def exit_code(self, timeout: float) -> int:
        code = self.wait(timeout)
        if code is None:
            pytest.fail(f"worker did not exit within {timeout} s:\n{self.output}")
        return code

    def final_stats(self) -> dict[str, str]:
        line = next(line for line in reversed(self.lines) if line.startswith("stopped: "))
        return dict(part.split("=", 1) for part in line.removeprefix("stopped: ").split())


@pytest.fixture
def processes() -> Any:
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        process = WorkerProcess(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def heavy(pubsub: Any, i3settings: Any) -> Any:
    """Provision the test namespace; ``heavy`` gets a 10 s ack deadline (the minimum)."""
    from django_i3tasks.provisioning import ensure_pubsub

    def provision(**fields: Any) -> PullQueue:
        queue = PullQueue("heavy", "pull", ack_deadline_seconds=10, **fields)
        i3settings(other_queues=(queue,))
        ensure_pubsub()
        return queue

    provision()
    return provision


def effects() -> Counter[str]:
    return Counter(Effect.objects.values_list("key", flat=True))


def succeeded() -> int:
    return TaskExecution.objects.filter(status="success").count()


# --- several processes ------------------------------------------------------------------


@transactional
def test_three_workers_share_a_thousand_tasks_and_run_each_once(heavy, processes):
    workers = [processes("--concurrency", "8") for _ in range(3)]
    for process in workers:
        process.wait_started()
    nap.starmap([(f"k{i}",) for i in range(1000)])
    transport.flush()
    wait_for(lambda: succeeded() == 1000, timeout=120, interval=0.5)
    for process in workers:
        process.signal()
    assert [process.exit_code(30) for process in workers] == [0, 0, 0]
    counts = effects()
    assert len(counts) == 1000 and set(counts.values()) == {1}
    assert TaskExecutionTry.objects.exclude(claims=1).count() == 0
    shares = Counter(Effect.objects.values_list("pid", flat=True))
    assert len(shares) == 3, shares
    assert min(shares.values()) >= 50, shares  # each worker did a real share of the work
    processed = sum(int(process.final_stats()["processed"]) for process in workers)
    assert processed == 1000


@transactional
def test_sigterm_lets_running_tasks_finish_and_the_rest_go_to_another_worker(heavy, processes):
    first = processes("--concurrency", "20", "--grace-period", "15")
    first.wait_started()
    nap.starmap([(f"s{i}", 2.0) for i in range(40)])
    transport.flush()
    wait_for(lambda: TaskExecutionTry.objects.filter(status="running").count() == 20,
             timeout=30)
    began = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.exit_code(20) == 0, first.output
    assert time.monotonic() - began < 15
    stats = first.final_stats()
    assert stats["processed"] == "20" and stats["in_flight"] == "0", first.output
    assert succeeded() == 20  # every running task finished before the exit
    second = processes("--concurrency", "20")
    wait_for(lambda: succeeded() == 40, timeout=60, interval=0.2)
    second.signal(signal.SIGINT)
    assert second.exit_code(20) == 0
    counts = effects()
    assert len(counts) == 40 and set(counts.values()) == {1}
    assert TaskExecutionTry.objects.exclude(claims=1).count() == 0


@transactional
def test_grace_period_over_gives_the_task_back(heavy, processes):
    first = processes("--concurrency", "2", "--grace-period", "1")
    first.wait_started()
    handle = nap.delay("long", 6.0)
    transport.flush()
    wait_for(lambda: TaskExecutionTry.objects.filter(status="running").exists(), timeout=30)
    began = time.monotonic()
    first.signal()
    assert first.exit_code(15) == 0, first.output
    assert time.monotonic() - began < 6, "it waited for the task instead of the grace period"
    assert "giving back 1 running task" in first.output
    attempt = TaskExecutionTry.objects.get(execution_id=handle.id)
    assert attempt.status == "queued"  # given back: no need to wait for the lease
    second = processes("--concurrency", "2")
    wait_for(lambda: succeeded() == 1, timeout=40, interval=0.2)
    second.signal()
    assert second.exit_code(20) == 0
    assert effects() == {"long": 1}  # the first run was cut short before its effect
    assert TaskExecutionTry.objects.get(execution_id=handle.id).claims == 2


@transactional
def test_second_signal_exits_at_once(heavy, processes):
    first = processes("--concurrency", "2", "--grace-period", "60")
    first.wait_started()
    nap.delay("stuck", 30.0)
    transport.flush()
    wait_for(lambda: TaskExecutionTry.objects.filter(status="running").exists(), timeout=30)
    first.signal(signal.SIGTERM)
    wait_for(lambda: "stopping (SIGTERM)" in first.output, timeout=10)
    began = time.monotonic()
    first.signal(signal.SIGINT)
    assert first.exit_code(10) == 1
    assert time.monotonic() - began < 5
    assert "second SIGINT: exiting now" in first.output


@transactional
def test_task_longer_than_the_ack_deadline_is_not_delivered_again(heavy, processes):
    first = processes("--concurrency", "2")
    first.wait_started()
    handle = nap.delay("slow", 16.0)  # the subscription's ack deadline is 10 s
    transport.flush()
    wait_for(lambda: succeeded() == 1, timeout=60, interval=0.5)
    time.sleep(2)  # a redelivery due to an expired lease would arrive by now
    first.signal()
    assert first.exit_code(20) == 0
    stats = first.final_stats()
    assert stats["received"] == "1" and stats["deferred"] == "0", first.output
    assert TaskExecutionTry.objects.get(execution_id=handle.id).claims == 1
    assert effects() == {"slow": 1}
    # The live status line, once a second, showed the task in flight while it ran.
    status = [line for line in first.lines if line.startswith("queue=heavy ")]
    assert len(status) >= 10 and any("in_flight=1 " in line for line in status), first.output


# --- in-process -------------------------------------------------------------------------


class Running:
    """A ``Worker`` run in a thread of this process."""

    def __init__(self, **options: Any) -> None:
        self.worker = Worker(WorkerOptions(queue_name="heavy", status_interval=0.5,
                                           **options), out=Lines())
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.worker.run()

    def stop(self, timeout: float = 30) -> int | None:
        self.worker.stop("test")
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        return self.code


def _publish(data: bytes, **attributes: str) -> None:
    queue = get_settings().other_queues[0]
    transport.publisher_client().publish(
        pubsub_config().topic_path(queue), data, **attributes).result(timeout=30)


def _signed(task_name: str, queue_name: str) -> tuple[bytes, dict[str, str]]:
    import uuid

    return TaskMessage(execution_id=1, execution_uuid=uuid.uuid4(), try_id=1, try_number=1,
                       task_name=task_name, queue_name=queue_name).encode()


def _poison_messages() -> list[tuple[bytes, dict[str, str]]]:
    """Undecodable, unsigned, signed for another queue."""
    return [
        (b"\xff not json", {}),
        (b'{"task": "os.system"}', {}),
        _signed(nap.name, "default"),
    ]


@transactional
@pytest.mark.parametrize("dead_letter", [False, True], ids=["acked", "dead-lettered"])
def test_poison_messages_are_handled_once(heavy, dead_letter):
    from google.pubsub_v1 import types as pb

    from django_i3tasks.provisioning import dead_letter_path

    queue = heavy(dead_letter_topic=f"{get_settings().namespace}-dead") if dead_letter \
        else get_settings().other_queues[0]
    dead_path = None
    if dead_letter:
        dead_path = f"{dead_letter_path(queue).replace('/topics/', '/subscriptions/')}-sub"
        subscriber = transport.subscriber_client()
        subscriber.create_subscription(request=pb.Subscription(
            name=dead_path, topic=dead_letter_path(queue), ack_deadline_seconds=10))
        subscriber.close()
    poisons = _poison_messages()
    running = Running(concurrency=2)
    for data, attributes in poisons:
        _publish(data, **attributes)
    # A signed message of a task this process does not know is no poison: the runner fails
    # the try it names (here none exists: acked as unknown_try), importing nothing.
    unknown_data, unknown_attributes = _signed("tests.testapp.side_effect.not_a_task", "heavy")
    _publish(unknown_data, **unknown_attributes)
    wait_for(lambda: running.worker.stats.counts["poison"] == len(poisons)
             and running.worker.stats.counts["unknown_try"] == 1, timeout=30)
    if not dead_letter:
        time.sleep(12)  # past the ack deadline: nothing comes back
    assert running.stop() == 0
    counts = running.worker.stats.counts
    assert counts["poison"] == counts["received"] - 1 == len(poisons), counts
    assert pull_messages(pubsub_config().subscription_path(queue), wait=1) == []
    assert TaskExecution.objects.count() == 0
    assert "tests.testapp.side_effect" not in sys.modules
    if dead_letter:
        forwarded = pull_messages(dead_path, wait=3)
        assert sorted(m.data for m in forwarded) == sorted(d for d, _ in poisons)
        assert all(m.attributes["i3tasks_poison"] for m in forwarded)


@transactional
def test_max_tasks_recycles_and_leaves_the_rest_queued(heavy):
    nap.starmap([(f"m{i}",) for i in range(30)])
    transport.flush()
    first = Running(concurrency=2, max_tasks=10)
    first.thread.join(60)
    assert first.code == 0 and first.worker.stop_reason.startswith("max-tasks")
    assert 9 <= first.worker.max_tasks <= 10
    done = succeeded()
    assert first.worker.max_tasks <= done <= first.worker.max_tasks + 2
    second = Running(concurrency=4)
    wait_for(lambda: succeeded() == 30, timeout=60)
    assert second.stop() == 0
    assert set(effects().values()) == {1} and len(effects()) == 30


@transactional
def test_a_call_sent_to_the_pull_queue_runs_on_the_worker(heavy):
    from tests.testapp import tasks

    handle = tasks.add.apply_async(args=[2, 3], queue_name="heavy")  # a push-queue task
    transport.flush()
    assert TaskExecution.objects.get(pk=handle.id).queue_name == "heavy"
    running = Running(concurrency=1)
    wait_for(lambda: succeeded() == 1, timeout=30)
    assert running.stop() == 0
    assert tasks.CALLS["add:2:3"] == 1 and running.worker.stats.counts["success"] == 1


@transactional
def test_an_async_task_runs_on_the_worker_and_its_value_is_recorded(heavy):
    from tests.testapp.control_tasks import async_add

    handle = async_add.using(queue_name="heavy").delay(5, 6)
    transport.flush()
    running = Running(concurrency=2)
    assert handle.wait_result(timeout=30) == 11
    assert running.stop() == 0


@transactional
def test_max_lifetime_stops_the_worker(heavy):
    began = time.monotonic()
    running = Running(concurrency=1, max_lifetime=1.0)
    running.thread.join(30)
    assert running.code == 0 and running.worker.stop_reason.startswith("max-lifetime")
    assert 0.9 <= running.worker.max_lifetime <= 1.0
    assert time.monotonic() - began < 20


@transactional
def test_failures_retry_through_the_worker(heavy, i3settings):
    handle = nap_fails.delay("f")
    transport.flush()
    running = Running(concurrency=2)
    wait_for(lambda: TaskExecution.objects.get(pk=handle.id).status == "failed", timeout=60)
    assert running.stop() == 0
    assert effects() == {"f": 2}  # max_retries=1: two runs, then failed for good
    counts = running.worker.stats.counts
    assert counts["retry_scheduled"] == 1 and counts["failed"] == 1


@transactional
def test_database_connections_are_not_leaked(heavy):
    if connection.vendor != "postgresql":
        pytest.skip("counts server-side connections")

    def backends() -> int:
        with connection.cursor() as cursor:
            # Client connections only: an autovacuum worker on the test database (seen on
            # PostgreSQL 18) is no connection of ours.
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND backend_type = 'client backend'")
            return cursor.fetchone()[0]

    before = backends()
    nap.starmap([(f"c{i}", 0.01) for i in range(100)])
    transport.flush()
    running = Running(concurrency=8)
    peak = 0

    def busy() -> bool:
        nonlocal peak
        peak = max(peak, backends())
        return succeeded() == 100

    wait_for(busy, timeout=60)
    assert running.stop() == 0
    assert peak <= before + 8
    wait_for(lambda: backends() <= before, timeout=10)


# --- startup errors ---------------------------------------------------------------------


def test_missing_subscription_is_a_command_error(pubsub):
    with pytest.raises(CommandError, match="does not exist: run 'manage.py i3tasks_ensure"):
        call_command("i3tasks_worker", queue="heavy")


def test_bad_options_are_refused(settings):
    with pytest.raises(WorkerError, match="concurrency"):
        Worker(WorkerOptions("heavy", concurrency=0))
    with pytest.raises(CommandError):
        call_command("i3tasks_worker", queue="heavy", max_tasks=0)
