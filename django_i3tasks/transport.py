"""Pub/Sub clients: one publisher per process, and the subscriber/admin clients.

The publisher batches (10 ms or 100 messages) and publishing never blocks the caller (a
sender thread per process hands messages to the client); what
happens to a publish afterwards (waiting, logging a failure) is the outbox's business. The
client is rebuilt after ``fork()`` (gunicorn ``--preload``): gRPC channels do not survive it.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from concurrent import futures
from typing import Any

from .conf import PubSubConfig, pubsub_config
from .types import AnyQueue

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_publisher: Any = None
_publisher_key: tuple[Any, ...] | None = None


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


def publish(
    queue: AnyQueue, data: bytes, attributes: dict[str, str], timeout: float
) -> futures.Future:
    """Publish one message to the queue's topic; returns a future that fails when Pub/Sub
    has not confirmed the message within ``timeout`` seconds (retries included: the client's
    own default would keep trying for minutes against an unreachable server).

    The caller only queues the message: the process's sender thread hands it to the client.
    The client starts a timer thread for every batch, and on a busy machine starting a thread
    costs whoever calls it a wait for the scheduler (measured: a third of ``.delay()``)."""
    future: futures.Future = futures.Future()
    _sender().put((pubsub_config().topic_path(queue), data, attributes, timeout, future))
    return future


class _Sender:
    """The thread that hands queued messages to the publisher client, in order."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="i3tasks-publish", daemon=True)
        self.thread.start()

    def put(self, item: Any) -> None:
        self.queue.put(item)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until everything queued before this call reached the client."""
        if not self.thread.is_alive():
            return
        reached = threading.Event()
        self.queue.put(reached)
        reached.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            topic, data, attributes, timeout, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                inner = publisher_client().publish(
                    topic, data, retry=_publish_retry(timeout), timeout=timeout, **attributes
                )
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(exc)
                continue
            inner.add_done_callback(functools.partial(_relay, future))


def _relay(outer: futures.Future, inner: futures.Future) -> None:
    exc = inner.exception() if not inner.cancelled() else futures.CancelledError()
    if exc is not None:
        outer.set_exception(exc)
    else:
        outer.set_result(inner.result())


_sender_thread: _Sender | None = None


def _sender() -> _Sender:
    global _sender_thread
    sender = _sender_thread
    if sender is None:
        with _lock:
            if _sender_thread is None:
                _sender_thread = _Sender()
            sender = _sender_thread
    return sender


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
    if _sender_thread is not None:
        _sender_thread.drain()
    with _lock:
        if _publisher is not None and _publisher_key and _publisher_key[0] == os.getpid():
            _stop(_publisher)
        _publisher = None
        _publisher_key = None


def _after_fork() -> None:
    global _publisher, _publisher_key, _lock, _sender_thread
    _sender_thread = None  # threads do not survive fork(); queued items belong to the parent
    _publisher = None
    _publisher_key = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
