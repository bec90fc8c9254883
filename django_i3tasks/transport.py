"""Pub/Sub clients: one publisher per process, and the subscriber/admin clients.

Publishing never blocks the caller: ``publish_many`` queues the messages, and a sender thread
per process sends them in ``Publish`` requests of up to 1,000 (waiting up to 5 ms for
companions, at most 4 requests in flight), then settles the caller's one future per handover
with each message's id or error. What happens to a publish afterwards (waiting, logging a
failure) is the outbox's business. The client is rebuilt after ``fork()`` (gunicorn
``--preload``): gRPC channels do not survive it, and the sender's threads neither.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any, Generic, TypeVar

from .conf import PubSubConfig, get_settings, pubsub_config
from .types import AnyQueue

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_publisher: Any = None
_publisher_key: tuple[Any, ...] | None = None
_T = TypeVar("_T")


class _OnePerProcess(Generic[_T]):
    """This process's one ``make()`` (a sender or resender thread), made on first use; the
    child forgets it after ``fork()``, as threads do not survive it."""

    def __init__(self, make: Callable[[], _T]) -> None:
        self.make = make
        self.current: _T | None = None

    def get(self) -> _T:
        found = self.current
        if found is None:
            with _lock:
                if self.current is None:
                    self.current = self.make()
                found = self.current
        return found


def _credentials(config: PubSubConfig) -> Any:
    if config.credentials_file:
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_file(
            config.credentials_file, scopes=["https://www.googleapis.com/auth/pubsub"]
        )
    return None  # Application Default Credentials


def _client_kwargs(config: PubSubConfig, transport_cls: Any) -> dict[str, Any]:
    if config.emulator_host:
        import grpc

        return {"transport": transport_cls(channel=grpc.insecure_channel(config.emulator_host))}
    credentials = _credentials(config)
    return {"credentials": credentials} if credentials is not None else {}


def publisher_client() -> Any:
    """The process-wide batching ``PublisherClient`` (rebuilt after fork or config change)."""
    global _publisher, _publisher_key
    config = pubsub_config()
    key = (os.getpid(), config)
    if _publisher is not None and _publisher_key == key:
        return _publisher
    with _lock:
        if _publisher is None or _publisher_key != key:
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.publisher.transports.grpc import (
                PublisherGrpcTransport,
            )

            if _publisher is not None and _publisher_key and _publisher_key[0] == os.getpid():
                _stop(_publisher)
            _publisher = pubsub_v1.PublisherClient(
                # The library's batching serves only direct ``publish()`` calls (the worker's
                # dead-letter copies): the sender thread builds its own requests.
                batch_settings=pubsub_v1.types.BatchSettings(
                    max_messages=100, max_bytes=5 * 1024 * 1024, max_latency=0.01
                ),
                **_client_kwargs(config, PublisherGrpcTransport),
            )
            _publisher_key = key
    return _publisher


def subscriber_client() -> Any:
    """A new ``SubscriberClient`` (workers own theirs; it holds a streaming connection)."""
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

    return pubsub_v1.SubscriberClient(**_client_kwargs(pubsub_config(), SubscriberGrpcTransport))


def admin_publisher_client() -> Any:
    """A plain, non-batching publisher client for topic administration."""
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport

    return pubsub_v1.PublisherClient(**_client_kwargs(pubsub_config(), PublisherGrpcTransport))


def bounded(timeout: float) -> dict[str, Any]:
    """``timeout`` and ``retry`` arguments for an admin call (get/create topic or
    subscription) that bound it as a whole, retries included: an unreachable Pub/Sub must
    fail within ``timeout``, not hang."""
    from google.api_core import exceptions, retry

    return {
        "timeout": timeout,
        "retry": retry.Retry(
            initial=0.2, maximum=2.0, timeout=timeout,
            predicate=retry.if_exception_type(
                exceptions.ServiceUnavailable, exceptions.DeadlineExceeded
            ),
        ),
    }


def publish_many(
    messages: Sequence[tuple[AnyQueue, bytes, dict[str, str]]], timeout: float
) -> futures.Future:
    """Publish ``(queue, data, attributes)`` messages to their queues' topics, in order.

    Returns ONE future for the handover: its result lists, per message in order, the id
    Pub/Sub gave it or the exception that failed it (not confirmed within ``timeout``
    seconds, retries included: the client's own default would keep trying for minutes
    against an unreachable server). It is done when every message is settled. One future per
    handover, not per message: a beat minute hands over 10,000 messages at once.

    The caller only queues the messages: the process's sender thread publishes them
    (``_Sender``). Handing them over costs the caller almost nothing; starting a thread on a
    busy machine, as the client's batching does, cost a third of ``.delay()``. Settings are
    read once per call, not per message."""
    handover = _Handover(len(messages))
    if not messages:
        return handover.future
    config = pubsub_config()
    sender = _senders.get()
    topics: dict[str, str] = {}
    for index, (target, data, attributes) in enumerate(messages):
        topic = topics.get(target.queue_name)
        if topic is None:
            topic = topics[target.queue_name] = config.topic_path(target)
        sender.put((topic, data, attributes, timeout, handover, index))
    return handover.future


_UNSETTLED = object()


class _Handover:
    """The outcomes of one ``publish_many`` call, gathered as requests answer. A message's
    first outcome counts (a message is never settled twice, even after a sender error)."""

    __slots__ = ("future", "outcomes", "remaining", "lock")

    def __init__(self, count: int) -> None:
        self.future: futures.Future = futures.Future()
        self.outcomes: list[Any] = [_UNSETTLED] * count
        self.remaining = count
        self.lock = threading.Lock()
        if not count:
            self.future.set_result([])

    def settle(self, outcomes: list[tuple[int, Any]]) -> None:
        with self.lock:
            for index, outcome in outcomes:
                if self.outcomes[index] is _UNSETTLED:
                    self.outcomes[index] = outcome
                    self.remaining -= 1
            done = self.remaining == 0
            if done:
                self.remaining = -1  # resolved: later calls find nothing left to settle
        if done:
            self.future.set_result(self.outcomes)


#: Pub/Sub's limits per publish request are 1,000 messages and 10 MB; the sender stays under.
MAX_BATCH_MESSAGES = 1000
MAX_BATCH_BYTES = 9 * 1024 * 1024
#: How long the sender waits for more messages after the first of a request: a loop of
#: ``.delay()`` calls then shares requests instead of paying one (and the threads' CPU it
#: takes from the caller) per call. The client library's own batching waited 10 ms.
LINGER_SECONDS = 0.005
#: Publish requests in flight at once per process. While they are busy, messages wait in the
#: queue and leave together in the next request: batching that costs a lone message nothing.
MAX_IN_FLIGHT = 4


class _Sender:
    """The thread that sends queued messages in requests of up to 1,000, in the order they
    were queued (Pub/Sub itself does not keep an order without ordering keys).

    It builds the request protobufs itself and calls the client's plain ``Publish`` method (the
    library's own batching creates a proto-plus object, a future and, per batch, a timer
    thread for every message: more CPU than the rest of a bulk enqueue together). A message
    never waits for companions: what is queued when a request can go goes in it.
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.slots = threading.Semaphore(MAX_IN_FLIGHT)
        self.requests: queue.SimpleQueue[tuple[str, list[Any]]] = queue.SimpleQueue()
        # Daemon threads, like the sender: a request hanging on an unreachable Pub/Sub must
        # not hold up the process's exit (the outbox's exit wait is the bounded one).
        for number in range(MAX_IN_FLIGHT):
            threading.Thread(target=self._serve, name=f"i3tasks-publish-{number}",
                             daemon=True).start()
        self.thread = threading.Thread(target=self._run, name="i3tasks-publish", daemon=True)
        self.thread.start()

    def put(self, item: Any) -> None:
        self.queue.put(item)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait (at most ``timeout``) until everything queued before this call was answered
        by Pub/Sub, or failed."""
        if not self.thread.is_alive():
            return
        reached = threading.Event()
        self.queue.put(reached)
        reached.wait(timeout)

    def _run(self) -> None:
        while True:
            items = [self.queue.get()]
            deadline = time.monotonic() + LINGER_SECONDS
            while len(items) < MAX_BATCH_MESSAGES and not isinstance(items[-1], threading.Event):
                try:
                    items.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            pending: list[Any] = []
            try:
                for item in items:
                    if isinstance(item, threading.Event):
                        self._send(pending)
                        pending = []
                        self._wait_idle()
                        item.set()
                    else:
                        pending.append(item)
                self._send(pending)
            except BaseException as exc:  # noqa: BLE001 - the thread must keep serving
                logger.exception("i3tasks publisher: could not send %d message(s)", len(pending))
                _settle(pending, [exc] * len(pending))

    def _send(self, items: list[Any]) -> None:
        """Hand ``items`` to the request threads: one request per topic and size limit."""
        by_topic: dict[str, list[Any]] = {}
        for item in items:
            by_topic.setdefault(item[0], []).append(item)
        for topic, group in by_topic.items():
            batch: list[Any] = []
            size = 0
            for item in group:
                item_size = len(item[1]) + sum(len(k) + len(v) for k, v in item[2].items()) + 64
                if batch and (len(batch) >= MAX_BATCH_MESSAGES
                              or size + item_size > MAX_BATCH_BYTES):
                    self._submit(topic, batch)
                    batch, size = [], 0
                batch.append(item)
                size += item_size
            if batch:
                self._submit(topic, batch)

    def _submit(self, topic: str, batch: list[Any]) -> None:
        self.slots.acquire()  # while all requests are busy, later messages gather in the queue
        self.requests.put((topic, batch))

    def _serve(self) -> None:
        while True:
            self._request(*self.requests.get())

    def _wait_idle(self) -> None:
        """Wait until no request is in flight."""
        for _ in range(MAX_IN_FLIGHT):
            self.slots.acquire()
        for _ in range(MAX_IN_FLIGHT):
            self.slots.release()

    def _request(self, topic: str, batch: list[Any]) -> None:
        try:
            timeout = max(item[3] for item in batch)
            ids = _publish_request(topic, [(item[1], item[2]) for item in batch], timeout,
                                   _publish_retry(timeout))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            _resenders.get().add(topic, batch)
            _settle(batch, [exc] * len(batch))
        else:
            _settle(batch, ids)
        finally:
            self.slots.release()


def _publish_request(topic: str, messages: list[tuple[bytes, dict[str, str]]], timeout: float,
                     retry: Any) -> list[str]:
    """One ``Publish`` request; the ids Pub/Sub gave, in order."""
    from google.pubsub_v1 import PublisherClient as Gapic
    from google.pubsub_v1.types import PublishRequest, PubsubMessage

    raw_message = PubsubMessage.pb()
    request = PublishRequest.wrap(PublishRequest.pb()(
        topic=topic,
        messages=[raw_message(data=data, attributes=attributes) for data, attributes in messages],
    ))
    # The plain Publish call of the batching client's GAPIC base class.
    response = Gapic.publish(publisher_client(), request=request, retry=retry, timeout=timeout)
    ids = list(response.message_ids)
    if len(ids) != len(messages):
        raise RuntimeError(f"Pub/Sub returned {len(ids)} ids for {len(messages)} messages")
    return ids


#: A failed publish is sent again after this long, then after doubling waits up to
#: ``RESEND_MAX_SECONDS``: a Pub/Sub blip costs its length plus seconds, not the recovery
#: sweep's window.
RESEND_FIRST_SECONDS = 1.0
RESEND_MAX_SECONDS = 8.0
#: Each attempt of the resender waits at most this long for Pub/Sub's answer.
RESEND_TIMEOUT_SECONDS = 10.0
#: Failed publishes kept for resending per process; beyond, the oldest are left to the sweep.
RESEND_LIMIT = 100_000


class _Resender:
    """Sends again, in the background, publishes this process knows failed (timeout,
    unreachable Pub/Sub), with backoff, until Pub/Sub takes them.

    A message is kept until ``recovery_after_seconds`` after its failure: from then on the
    beat's recovery sweep republishes its try anyway. Kept in memory only: if the process
    dies, the sweep is the safety net. A message sent twice (the failed request reached
    Pub/Sub after all, or the sweep got there first) is harmless: a try is recorded once.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: deque[tuple[str, bytes, dict[str, str], float]] = deque()
        self.added = threading.Event()
        self.thread = threading.Thread(target=self._run, name="i3tasks-resend", daemon=True)
        self.thread.start()

    def add(self, topic: str, batch: list[Any]) -> None:
        now = time.monotonic()
        with self.lock:
            self.items.extend((topic, item[1], item[2], now) for item in batch)
            dropped = max(0, len(self.items) - RESEND_LIMIT)
            for _ in range(dropped):
                self.items.popleft()
        self.added.set()
        if dropped:
            logger.warning("i3tasks publisher: %d failed publish(es) not kept for resending "
                           "(over %d); the recovery sweep republishes them", dropped,
                           RESEND_LIMIT)

    def pending(self) -> int:
        with self.lock:
            return len(self.items)

    def _take(self) -> tuple[str, list[tuple[str, bytes, dict[str, str], float]]]:
        """Up to a request's worth of the oldest messages of one topic (drops expired ones)."""
        try:
            keep = float(get_settings().recovery_after_seconds)
        except Exception:  # noqa: BLE001 - settings unavailable: keep the default window
            keep = 600.0
        expired = 0
        with self.lock:
            while self.items and time.monotonic() - self.items[0][3] > keep:
                self.items.popleft()
                expired += 1
            if not self.items:
                return "", []
            topic = self.items[0][0]
            taken = [item for item in self.items if item[0] == topic][:MAX_BATCH_MESSAGES]
            for item in taken:
                self.items.remove(item)
        if expired:
            logger.warning("i3tasks publisher: gave up resending %d message(s) after %.0f s; "
                           "the recovery sweep republishes them", expired, keep)
        return topic, taken

    def _run(self) -> None:
        wait = RESEND_FIRST_SECONDS
        while True:
            self.added.wait()
            time.sleep(wait)
            topic, taken = self._take()
            if not taken:
                self.added.clear()
                if self.pending():
                    self.added.set()
                wait = RESEND_FIRST_SECONDS
                continue
            try:
                _publish_request(topic, [(item[1], item[2]) for item in taken],
                                 RESEND_TIMEOUT_SECONDS, None)
            except Exception as exc:  # noqa: BLE001 - Pub/Sub still away: back off
                with self.lock:
                    self.items.extendleft(reversed(taken))
                wait = min(max(wait * 2, RESEND_FIRST_SECONDS), RESEND_MAX_SECONDS)
                logger.info("i3tasks publisher: resending %d message(s) failed (%s); next "
                            "attempt in %.0f s", len(taken), type(exc).__name__, wait)
            else:
                logger.warning("i3tasks publisher: resent %d message(s) that failed to "
                               "publish earlier", len(taken))
                wait = 0.0  # more may be waiting: go on at once


_resenders: _OnePerProcess[_Resender] = _OnePerProcess(_Resender)


def resend_pending() -> int:
    """Failed publishes of this process waiting to be sent again."""
    resender = _resenders.current
    return resender.pending() if resender is not None else 0


def _settle(batch: list[Any], outcomes: list[Any]) -> None:
    """Record each message's outcome in its handover (one lock per handover and request)."""
    by_handover: dict[_Handover, list[tuple[int, Any]]] = {}
    for item, outcome in zip(batch, outcomes, strict=True):
        by_handover.setdefault(item[4], []).append((item[5], outcome))
    for handover, settled in by_handover.items():
        handover.settle(settled)


_senders: _OnePerProcess[_Sender] = _OnePerProcess(_Sender)


@functools.lru_cache(maxsize=8)
def _publish_retry(timeout: float) -> Any:
    from google.api_core import exceptions, retry

    return retry.Retry(
        initial=0.1, maximum=5.0, multiplier=2.0, timeout=timeout,
        predicate=retry.if_exception_type(
            exceptions.Aborted, exceptions.DeadlineExceeded, exceptions.InternalServerError,
            exceptions.ResourceExhausted, exceptions.ServiceUnavailable, exceptions.Unknown,
        ),
    )


def _stop(client: Any) -> None:
    try:
        client.stop()  # flushes pending batches
    except Exception:  # noqa: BLE001 - best effort at shutdown
        logger.debug("publisher stop failed", exc_info=True)


def flush() -> None:
    """Send every batched message now and drop the client (management commands, tests)."""
    global _publisher, _publisher_key
    sender = _senders.current
    if sender is not None:
        sender.drain()
    with _lock:
        if _publisher is not None and _publisher_key and _publisher_key[0] == os.getpid():
            _stop(_publisher)
        _publisher = None
        _publisher_key = None


def _after_fork() -> None:
    global _publisher, _publisher_key, _lock
    _senders.current = None  # threads do not survive fork(); queued items belong to the parent
    _resenders.current = None
    _publisher = None
    _publisher_key = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
