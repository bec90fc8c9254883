"""Push delivery: POST each message of a push subscription to its endpoint.

Guarantees: each push subscription has ``concurrency`` sender threads, so at most that many
requests are in flight for it. A message is leased for the subscription's ack deadline and
POSTed with that deadline as the request timeout; 102, 200, 201, 202 and 204 acknowledge it;
any other status, a connection error, or an answer after the deadline is a failed delivery
(retried per the retry policy, dead-lettered per the dead-letter policy). The endpoint is
read for every message, so ``modify_push_config`` takes effect at the next message.

The body is the standard envelope: ``{"message": {"data", "attributes", "messageId",
"message_id", "publishTime", "publish_time", "orderingKey"}, "subscription",
"deliveryAttempt"}`` (``attributes`` and ``orderingKey`` when present, ``deliveryAttempt``
when the subscription has a dead-letter policy). Not emulated: OIDC tokens on push requests,
unwrapped (``no_wrapper``) payloads, and the adaptive number of requests in flight of real
push (here it is fixed).

Requests in flight are counted per push subscription (``push_stats()``: requests sent and
seconds spent at each number in flight, since the subscription became push), so a benchmark
can show how many ran at once. With ``$I3TASKS_EMULATOR_PUSH_STATS`` set to a file path, the
emulator process rewrites that file (JSON) every 0.2 s.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import random
import ssl
import threading
import time
import urllib.parse
from typing import Any

from .state import Broker, Entry, Holder, Sub

logger = logging.getLogger(__name__)

SUCCESS = frozenset({102, 200, 201, 202, 204})
#: Fault injection for chaos runs, from the environment of the emulator's process:
#: ``I3TASKS_EMULATOR_PUSH_FAULTS="copies=3,fail=0.05"`` POSTs every delivery ``copies``
#: times in a row (only the last answer counts) and turns a share ``fail`` of deliveries into
#: failures: half before anything is POSTed (a 500 from a load balancer), half after the
#: endpoint answered (the answer lost on its way back).
FAULTS_ENV = "I3TASKS_EMULATOR_PUSH_FAULTS"


def _faults() -> tuple[int, float]:
    options = dict(part.split("=", 1) for part in os.environ.get(FAULTS_ENV, "").split(",")
                   if "=" in part)
    return max(1, int(options.get("copies", 1))), float(options.get("fail", 0.0))


COPIES, FAIL_SHARE = _faults()
injected = {"before": 0, "after": 0, "copies": 0}
USER_AGENT = "APIs-Google; django-i3tasks Pub/Sub emulator"
STATS_ENV = "I3TASKS_EMULATOR_PUSH_STATS"

#: The newest sender of each push subscription, by subscription name (for ``push_stats``);
#: a stopped one leaves its last figures, not itself (nor its subscription) behind.
_senders: dict[str, Pusher | dict[str, Any]] = {}
_senders_lock = threading.Lock()
_stats_writer: threading.Thread | None = None


def envelope(sub: Sub, received: Any) -> bytes:
    """The JSON body Pub/Sub POSTs for one received message."""
    message = received.message
    publish_time = message.publish_time.ToJsonString()
    body: dict[str, Any] = {
        "message": {
            "data": base64.b64encode(message.data).decode("ascii"),
            "messageId": message.message_id,
            "message_id": message.message_id,
            "publishTime": publish_time,
            "publish_time": publish_time,
        },
        "subscription": sub.name,
    }
    if message.attributes:
        body["message"]["attributes"] = dict(message.attributes)
    if message.ordering_key:
        body["message"]["orderingKey"] = message.ordering_key
    if received.delivery_attempt:
        body["deliveryAttempt"] = received.delivery_attempt
    return json.dumps(body).encode()


class Pusher:
    """The sender threads of one push subscription; ``stop()`` ends them (requests in flight
    finish, and their answers still count)."""

    def __init__(self, broker: Broker, sub: Sub, concurrency: int) -> None:
        self.broker = broker
        self.sub = sub
        self.holder = Holder()
        self.stopped = False
        self.concurrency = max(1, concurrency)
        self._flight = threading.Lock()
        self._level = 0
        self._since = time.monotonic()
        self._requests = 0
        self._seconds_at = [0.0] * (self.concurrency + 1)
        with _senders_lock:
            _senders[sub.name] = self
        _start_stats_writer()
        self.threads = [
            threading.Thread(target=self._run, name=f"pubsub-push-{sub.index}-{n}", daemon=True)
            for n in range(max(1, concurrency))
        ]
        for thread in self.threads:
            thread.start()

    def _in_flight(self, step: int) -> None:
        with self._flight:
            now = time.monotonic()
            self._seconds_at[self._level] += now - self._since
            self._since, self._level = now, self._level + step
            if step > 0:
                self._requests += 1

    def stats(self) -> dict[str, Any]:
        """Requests sent so far and the seconds spent with 0, 1, ... ``concurrency`` of them
        in flight (the last entry grows while that many are in flight)."""
        with self._flight:
            seconds = list(self._seconds_at)
            seconds[self._level] += time.monotonic() - self._since
            return {"concurrency": self.concurrency, "requests": self._requests,
                    "in_flight_now": self._level, "seconds_at": seconds}

    def stop(self) -> None:
        """Caller holds the broker lock."""
        with _senders_lock:
            if _senders.get(self.sub.name) is self:
                _senders[self.sub.name] = self.stats()
        self.stopped = True
        self.sub.cond.notify_all()

    def _next(self) -> tuple[Entry, Any, str, int] | None:
        sub, broker = self.sub, self.broker
        with broker.lock:
            while True:
                if self.stopped or sub.deleted:
                    return None
                if broker.has_ready(sub):
                    deadline = int(sub.pb.ack_deadline_seconds)
                    taken = broker.take(sub, self.holder, 1, deadline)
                    if taken:
                        entry = sub.leased[taken[0].ack_id]
                        return entry, taken[0], str(sub.pb.push_config.push_endpoint), deadline
                sub.cond.wait(5.0)

    def _run(self) -> None:
        connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        try:
            while True:
                item = self._next()
                if item is None:
                    return
                entry, received, url, deadline = item
                fault = random.random() < FAIL_SHARE
                if fault and random.random() < 0.5:
                    injected["before"] += 1
                    self.broker.push_done(self.sub, entry, received.ack_id, False)
                    continue
                started = time.monotonic()
                self._in_flight(1)
                try:
                    body = envelope(self.sub, received)
                    for _ in range(COPIES):
                        status = _post(connections, url, body, deadline)
                finally:
                    self._in_flight(-1)
                injected["copies"] += COPIES - 1
                ok = status in SUCCESS and time.monotonic() - started <= deadline
                if fault:
                    injected["after"] += 1
                    if ok:
                        logger.info("injected fault: the answer to %s is lost", url)
                    ok = False
                self.broker.push_done(self.sub, entry, received.ack_id, ok)
        finally:
            for connection in connections.values():
                connection.close()


def push_stats() -> dict[str, dict[str, Any]]:
    """``Pusher.stats()`` of the newest sender of every subscription that has been push in
    this process, by subscription name."""
    with _senders_lock:
        senders = dict(_senders)
    return {name: sender if isinstance(sender, dict) else sender.stats()
            for name, sender in senders.items()}


def _start_stats_writer() -> None:
    """With ``$I3TASKS_EMULATOR_PUSH_STATS``, one thread rewrites that file every 0.2 s."""
    global _stats_writer
    path = os.environ.get(STATS_ENV)
    with _senders_lock:
        if not path or _stats_writer is not None:
            return
        _stats_writer = threading.Thread(target=_write_stats, args=(path,),
                                         name="pubsub-push-stats", daemon=True)
    _stats_writer.start()


def _write_stats(path: str) -> None:
    while True:
        try:
            with open(f"{path}.tmp", "w", encoding="utf-8") as out:
                json.dump(push_stats(), out)
            os.replace(f"{path}.tmp", path)
        except OSError as exc:
            logger.warning("cannot write push stats to %s: %s", path, exc)
        time.sleep(0.2)


def _post(connections: dict[tuple[str, str], http.client.HTTPConnection], url: str,
          body: bytes, timeout: float) -> int | None:
    """POST ``body``; the status, or None on a connection error or timeout. Connections are
    kept alive per scheme and host; a kept connection the server closed is retried once."""
    parts = urllib.parse.urlsplit(url)
    key = (parts.scheme, parts.netloc)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    for attempt in range(2):
        connection = connections.get(key)
        reused = connection is not None
        if connection is None:
            try:
                connection = _connect(parts, timeout)
            except ValueError:
                logger.warning("push endpoint %s is not an http(s) URL", url)
                return None
            connections[key] = connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.will_close:
                connection.close()
                connections.pop(key, None)
            return response.status
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            connection.close()
            connections.pop(key, None)
            if not reused or attempt:
                logger.info("push to %s failed: %s", url, exc)
                return None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            connections.pop(key, None)
            logger.info("push to %s failed: %s", url, exc)
            return None
    return None


def _connect(parts: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
    host = parts.hostname or ""
    if parts.scheme == "http":
        return http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, parts.port or 443, timeout=timeout,
                                           context=ssl.create_default_context())
    raise ValueError(parts.scheme)
