"""The pull worker: serves a ``PullQueue`` with streaming pull.

Each message goes through ``execution.run_message``, the code path of the push view, so a
pulled task is claimed, run and recorded exactly as a pushed one. What differs is how the
outcome reaches Pub/Sub:

- done (success, retry scheduled, failed for good, duplicate): ack, after the try is recorded
  and the follow-up messages are published;
- not due yet or running elsewhere: the ack deadline is set to when it makes sense to look
  again and the message is released from lease management, so Pub/Sub redelivers it then;
- database or other infrastructure error: the same, 10 s later (a nack that does not spin
  while the database is down);
- poison (undecodable, another queue's message): logged, then acked, or
  published to the queue's dead-letter topic first when one is configured.

Flow control leases at most ``LEASED_PER_THREAD * concurrency`` messages and a thread pool of
``concurrency`` runs them: the client acknowledges in batches (up to 10 ms) and frees a
flow-control slot only once the ack was sent, so with one lease per thread a thread would
wait for that round trip before it gets its next message. The client library extends the
leases of running messages (up to ``I3TASKS.lease_seconds``), so a task longer than the
subscription's ack deadline is not delivered again while it runs.

Stopping (SIGTERM/SIGINT, ``max_tasks``, ``max_lifetime``) stops pulling, nacks what was
leased but not started, and lets running tasks finish within ``grace_period``. Tries still
running after that are given back (``execution.release_claim``) and their messages nacked,
so another worker runs them at once; then the process exits. A second signal exits at once.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections

from . import timing, transport
from .conf import get_queue, get_settings, pubsub_config
from .exceptions import WorkerError
from .execution import run_message
from .lifecycle import release_claim
from .logs import error_summary
from .messages import InvalidMessage, TaskMessage
from .outcome import OutcomeStatus
from .provisioning import dead_letter_path
from .registry import registry
from .types import PullQueue

logger = logging.getLogger(__name__)

#: Seconds before a message is delivered again after an infrastructure error.
ERROR_REDELIVERY_SECONDS = 10
#: Messages leased per task thread (flow control): the extra one waits in the pool's queue
#: while the previous message's ack is on its way, so a thread never idles on an ack.
LEASED_PER_THREAD = 2
#: While messages keep coming, a thread's database connection is not health-checked
#: (``CONN_HEALTH_CHECKS``) before each one: that query was one of a no-op's five round trips.
#: After this many idle seconds it is checked again. A connection that breaks mid-flow fails
#: one message, which is redelivered, and is then closed like any connection with errors.
HEALTH_CHECK_IDLE_SECONDS = 1.0
#: Pub/Sub's bounds for an ack deadline.
_DEADLINE_BOUNDS = (1, 600)
#: ``max_tasks`` and ``max_lifetime`` are lowered by up to this fraction, at random, so the
#: workers of a fleet started together do not all recycle at the same moment.
JITTER = 0.1


_recent = threading.local()


def _tidy_connections() -> None:
    """``close_old_connections()`` for this thread (closes connections that errored or reached
    ``CONN_MAX_AGE``), keeping the health check of a connection it used within
    ``HEALTH_CHECK_IDLE_SECONDS``."""
    now = time.monotonic()
    fresh = now - getattr(_recent, "used", -math.inf) < HEALTH_CHECK_IDLE_SECONDS
    _recent.used = now
    conn: Any  # django-stubs does not know health_check_done (Django >= 4.1)
    for conn in connections.all(initialized_only=True):
        checked = conn.health_check_done
        conn.close_if_unusable_or_obsolete()
        if fresh and checked and conn.connection is not None and not conn.errors_occurred:
            conn.health_check_done = True


class Output(Protocol):
    """Where status lines go: a text stream, or a management command's ``stdout``."""

    def write(self, text: str, /) -> Any: ...
    def flush(self) -> Any: ...


@dataclass(frozen=True)
class WorkerOptions:
    queue_name: str
    concurrency: int = 8
    max_tasks: int | None = None
    max_lifetime: float | None = None
    grace_period: float = 30.0
    status_interval: float = 10.0


def jittered(value: float, rng: random.Random | None = None) -> float:
    """``value`` lowered by up to ``JITTER`` of itself."""
    return value * (1 - JITTER * (rng or random).random())


def _task_leases() -> list[float]:
    """The tasks' own ``lease_seconds``: the client extends a message's lease that long."""
    return [task.lease_seconds for task in registry.all()
            if getattr(task, "lease_seconds", None) is not None]


def find_pull_queue(queue_name: str) -> PullQueue:
    try:
        queue = get_queue(queue_name)
    except ImproperlyConfigured as exc:
        raise WorkerError(str(exc)) from None
    if not isinstance(queue, PullQueue):
        raise WorkerError(
            f"queue {queue_name!r} is a push queue: Pub/Sub pushes its messages to the push "
            "view. Only a PullQueue in I3TASKS.other_queues is served by i3tasks_worker."
        )
    return queue


class Stats:
    """Counters shared by the message threads and the status line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.in_flight = 0
        self.started = time.monotonic()
        self._last = (self.started, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    @property
    def processed(self) -> int:
        """Messages that ran their task (whatever the task did)."""
        c = self.counts
        return c["success"] + c["retry_scheduled"] + c["failed"]

    def line(self, queue_name: str) -> str:
        """The status line: counters, the rate since the previous line, the average rate."""
        with self._lock:
            c = Counter(self.counts)
            in_flight = self.in_flight
            processed = self.processed
            now = time.monotonic()
            since, before = self._last
            self._last = (now, processed)
        rate = (processed - before) / max(1e-9, now - since)
        average = processed / max(1e-9, now - self.started)
        return (
            f"queue={queue_name} processed={processed} succeeded={c['success']} "
            f"failed={c['failed']} retried={c['retry_scheduled']} "
            f"duplicates={c['duplicate']} deferred={c['deferred']} poison={c['poison']} "
            f"errors={c['error']} received={c['received']} in_flight={in_flight} "
            f"rate={rate:.1f}/s average={average:.1f}/s"
        )


@dataclass
class _Running:
    """A message whose task runs now, and the claim token once the try is claimed."""

    message: Any
    try_id: int
    token: uuid.UUID | None = None

    def claimed(self, token: uuid.UUID) -> None:
        self.token = token


class Worker:
    """One streaming-pull consumer of one pull queue; ``run()`` blocks until it stops."""

    def __init__(self, options: WorkerOptions, out: Output | None = None) -> None:
        if options.concurrency < 1:
            raise WorkerError("--concurrency must be at least 1")
        if options.grace_period < 0:
            raise WorkerError("--grace-period must not be negative")
        self.options = options
        self.queue = find_pull_queue(options.queue_name)
        #: Tries due within this are held on a timer (``timing``), not handed back.
        self._hold = min(timing.hold_limit(self.queue.queue_name),
                         float(get_settings().lease_seconds))
        self._executor: ThreadPoolExecutor | None = None
        self.out = out or sys.stdout
        self.stats = Stats()
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._running: dict[str, _Running] = {}
        self._running_lock = threading.Lock()
        self._signals = 0
        self.max_tasks = (
            max(1, math.ceil(jittered(options.max_tasks))) if options.max_tasks else None
        )
        self.max_lifetime = jittered(options.max_lifetime) if options.max_lifetime else None

    # --- stopping -------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Ask the worker to stop (any thread); the first reason given is kept."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop gracefully; a second one exits at once (main thread only)."""

        def handle(signum: int, frame: Any) -> None:
            self._signals += 1
            if self._signals > 1:
                self._write(f"second {signal.Signals(signum).name}: exiting now")
                os._exit(1)
            self.stop(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # --- messages -------------------------------------------------------------------------

    def handle(self, message: Any) -> None:
        """The streaming-pull callback (runs in the worker's thread pool)."""
        self.stats.add("received")
        if self._stop.is_set():
            message.nack()
            return
        self.stats.enter()
        try:
            self._handle(message)
        except Exception:  # noqa: BLE001 - a message must never kill its thread
            logger.exception("Unexpected error on message %s", message.message_id)
            self.stats.add("error")
            self._redeliver(message, ERROR_REDELIVERY_SECONDS)
        finally:
            with self._running_lock:
                self._running.pop(message.ack_id, None)
            _tidy_connections()
            self.stats.leave()

    def _handle(self, message: Any) -> None:
        try:
            task_message = TaskMessage.decode(message.data, dict(message.attributes))
        except InvalidMessage as exc:
            self._poison(message, exc.code, exc.detail)
            return
        if task_message.queue_name != self.queue.queue_name:
            self._poison(message, "wrong_queue",
                         f"message is for queue {task_message.queue_name!r}")
            return
        running = _Running(message, task_message.try_id)
        with self._running_lock:
            self._running[message.ack_id] = running
        _tidy_connections()
        try:
            outcome = run_message(task_message, on_claim=running.claimed,
                                  hold=self._hold, sleep=False)
        except DatabaseError as exc:
            # As the push view's database_unavailable: an outage fails every message, so one
            # WARNING each and the traceback at DEBUG.
            logger.debug("Database error on message %s", message.message_id, exc_info=True)
            logger.warning("task=%s execution=%s try=%s outcome=database_unavailable "
                           "again_in=%ss error=%s", task_message.task_name,
                           task_message.execution_uuid, task_message.try_number,
                           ERROR_REDELIVERY_SECONDS, error_summary(exc))
            self.stats.add("error")
            self._redeliver(message, ERROR_REDELIVERY_SECONDS)
            return
        if outcome.ack:
            message.ack()
            self.stats.add(outcome.status.value)
            if outcome.status in (OutcomeStatus.SUCCESS, OutcomeStatus.RETRY,
                                  OutcomeStatus.FAILED):
                self._count_task()
        elif timing.holdable(outcome, self._hold) is not None:
            self.stats.add("held")
            self._hold_until_due(message, outcome.retry_after or 0.0)
        else:
            # Not due yet or running elsewhere: the push view's designed answers. The try's
            # own line is written when it runs; this one only at DEBUG.
            after = outcome.retry_after or ERROR_REDELIVERY_SECONDS
            logger.debug("task=%s execution=%s try=%s outcome=%s again_in=%.1fs",
                         task_message.task_name, task_message.execution_uuid,
                         task_message.try_number, outcome.status.value, after)
            self.stats.add("deferred")
            self._redeliver(message, after)

    def _hold_until_due(self, message: Any, seconds: float) -> None:
        """Run the message again when its try is due (``timing``): it stays leased (the
        client extends its lease) and a timer hands it back to the pool, so no task thread
        waits for it."""
        def resubmit() -> None:
            executor = self._executor
            try:
                if executor is None:
                    raise RuntimeError("not running")
                executor.submit(self.handle, message)
            except RuntimeError:  # the pool is shut down: the worker is stopping
                message.nack()

        timer = threading.Timer(seconds, resubmit)
        timer.daemon = True
        timer.start()

    def _count_task(self) -> None:
        if self.max_tasks is not None and self.stats.processed >= self.max_tasks:
            self.stop(f"max-tasks {self.max_tasks} reached")

    @staticmethod
    def _redeliver(message: Any, after: float) -> None:
        """Have Pub/Sub deliver the message again in about ``after`` seconds."""
        low, high = _DEADLINE_BOUNDS
        message.modify_ack_deadline(int(min(high, max(low, math.ceil(after)))))
        message.drop()

    def _poison(self, message: Any, code: str, detail: str) -> None:
        """A message that can never run: recorded in the log, then out of the queue."""
        self.stats.add("poison")
        topic = self.queue.dead_letter_topic
        logger.warning("Poison message %s on queue %s (%s): %s%s", message.message_id,
                       self.queue.queue_name, code, detail,
                       f"; sending it to {topic}" if topic else "; dropping it")
        if topic:
            attributes = {**dict(message.attributes), "i3tasks_poison": code,
                          "i3tasks_original_message_id": message.message_id}
            try:
                transport.publisher_client().publish(
                    dead_letter_path(self.queue), message.data, **attributes
                ).result(timeout=30)
            except Exception:  # noqa: BLE001 - keep it; Pub/Sub's dead-letter policy is next
                logger.exception("Could not send poison message %s to %s",
                                 message.message_id, topic)
                self._redeliver(message, ERROR_REDELIVERY_SECONDS)
                return
        message.ack()

    # --- running --------------------------------------------------------------------------

    def check_subscription(self, timeout: float = 15.0) -> str:
        """The subscription path, after checking it exists and is reachable."""
        from google.api_core import exceptions

        path = pubsub_config().subscription_path(self.queue)
        subscriber = transport.subscriber_client()
        where = pubsub_config().emulator_host or "Pub/Sub"
        try:
            subscription = subscriber.get_subscription(
                subscription=path, **transport.bounded(timeout)
            )
        except exceptions.NotFound:
            raise WorkerError(f"subscription {path} does not exist: run "
                              "'manage.py i3tasks_ensure_pubsub' first") from None
        except (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded,
                exceptions.RetryError) as exc:
            raise WorkerError(f"cannot reach {where} ({type(exc).__name__}); is it "
                              "running, and is PUBSUB_CONFIG right?") from None
        except exceptions.GoogleAPICallError as exc:
            raise WorkerError(f"cannot read subscription {path}: {exc.message}") from None
        finally:
            subscriber.close()
        if subscription.push_config.push_endpoint:
            raise WorkerError(f"subscription {path} pushes to "
                              f"{subscription.push_config.push_endpoint}: it cannot be pulled "
                              "(run i3tasks_ensure_pubsub after making the queue a PullQueue)")
        return path

    def run(self) -> int:
        """Pull and run until stopped; 0 after a graceful stop."""
        from google.cloud import pubsub_v1

        path = self.check_subscription()
        concurrency = self.options.concurrency
        subscriber = transport.subscriber_client()
        executor = ThreadPoolExecutor(max_workers=concurrency,
                                      thread_name_prefix=f"i3tasks-{self.queue.queue_name}")
        self._executor = executor
        flow = pubsub_v1.types.FlowControl(
            max_messages=LEASED_PER_THREAD * concurrency,
            max_lease_duration=max(get_settings().lease_seconds,
                                   self.queue.ack_deadline_seconds, *_task_leases()),
        )
        limits = "".join([
            f" max_tasks={self.max_tasks}" if self.max_tasks else "",
            f" max_lifetime={self.max_lifetime:.0f}s" if self.max_lifetime else "",
        ])
        self._write(f"i3tasks_worker pid={os.getpid()} queue={self.queue.queue_name} "
                    f"subscription={path} concurrency={concurrency}{limits}")
        future = subscriber.subscribe(
            path, self.handle, flow_control=flow,
            scheduler=pubsub_v1.subscriber.scheduler.ThreadScheduler(executor),
            await_callbacks_on_shutdown=True,
        )
        failure: BaseException | None = None
        try:
            failure = self._wait(future)
        finally:
            code = self._shutdown(future, subscriber)
        if failure is not None:
            self._write(f"stream failed: {type(failure).__name__}: {failure}")
            return 1
        return code

    def _wait(self, future: Any) -> BaseException | None:
        deadline = (time.monotonic() + self.max_lifetime) if self.max_lifetime else None
        next_status = time.monotonic() + self.options.status_interval
        while not self._stop.is_set():
            now = time.monotonic()
            timeout = min(next_status, deadline or next_status) - now
            self._stop.wait(max(0.0, min(timeout, 1.0)))
            if future.done():
                try:
                    future.result()
                except BaseException as exc:  # noqa: BLE001 - reported, then stop
                    self.stop("stream failed")
                    return exc
                self.stop("stream closed")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.stop(f"max-lifetime {self.max_lifetime:.0f}s reached")
            if now >= next_status:
                self._write(self.stats.line(self.queue.queue_name))
                next_status = now + self.options.status_interval
        return None

    def _shutdown(self, future: Any, subscriber: Any) -> int:
        """Stop pulling; wait for running tasks up to the grace period; give back the rest."""
        self._write(f"stopping ({self.stop_reason}): {self.stats.in_flight} task(s) running, "
                    f"grace period {self.options.grace_period:g}s")
        future.cancel()  # stops the stream; leased but unstarted messages are nacked
        try:
            future.result(timeout=self.options.grace_period)
            finished = True
        except futures.TimeoutError:
            finished = False
        except BaseException:  # noqa: BLE001 - the stream's own error was reported already
            finished = True
        if not finished:
            self._give_back()
        transport.flush()
        self._write(f"stopped: {self.stats.line(self.queue.queue_name)}")
        self.out.flush()
        if not finished:
            # Threads still run the tasks given back; the process must not wait for them.
            sys.stderr.flush()
            os._exit(0)
        subscriber.close()
        return 0

    def _give_back(self) -> None:
        with self._running_lock:
            running = list(self._running.values())
        self._write(f"grace period over: giving back {len(running)} running task(s)")
        for item in running:
            if item.token is not None:
                try:
                    release_claim(item.try_id, item.token)
                except DatabaseError:
                    logger.exception("Could not give back try %s", item.try_id)
            item.message.nack()
        time.sleep(0.5)  # let the client's dispatcher send the nacks

    def _write(self, line: str) -> None:
        self.out.write(f"{line}\n")
        self.out.flush()
