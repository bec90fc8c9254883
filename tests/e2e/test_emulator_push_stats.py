"""The Python emulator counts its push requests in flight (``push.push_stats()``, and the
file ``$I3TASKS_EMULATOR_PUSH_STATS`` names): what a benchmark prints to show how many
requests ran at once. Checked against what the endpoint itself saw."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.cloud import pubsub_v1
from google.pubsub_v1 import types as pb
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from django_i3tasks.testing.pubsub import EmulatorServer, push

PROJECT = "projects/push-stats"


class Endpoint:
    """A threaded HTTP endpoint that answers 204 after ``delay`` and records, for every
    request, when its handler started and ended."""

    def __init__(self, delay: float) -> None:
        spans: list[tuple[float, float]] = []
        self.spans = spans

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                began = time.monotonic()
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                spans.append((began, time.monotonic()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def most_at_once(self) -> int:
        events = sorted([(a, 1) for a, _ in self.spans] + [(b, -1) for _, b in self.spans])
        level = peak = 0
        for _, step in events:
            level += step
            peak = max(peak, level)
        return peak

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stats_file(tmp_path, monkeypatch) -> Iterator[Any]:
    path = tmp_path / "push-stats.json"
    monkeypatch.setenv(push.STATS_ENV, str(path))
    monkeypatch.setattr(push, "_stats_writer", None)
    yield path


def _drained(server: EmulatorServer, subscription: str) -> bool:
    with server.broker.lock:  # type: ignore[union-attr]
        return not server.broker.sub(subscription).entries  # type: ignore[union-attr]


def test_a_backlog_is_pushed_at_the_configured_concurrency_and_counted(stats_file):
    endpoint = Endpoint(delay=0.05)
    suffix = uuid.uuid4().hex[:10]
    topic, subscription = f"{PROJECT}/topics/t-{suffix}", f"{PROJECT}/subscriptions/s-{suffix}"
    with EmulatorServer(push_concurrency=8) as server:
        publisher = pubsub_v1.PublisherClient(
            transport=PublisherGrpcTransport(channel=grpc.insecure_channel(server.endpoint)))
        subscriber = pubsub_v1.SubscriberClient(
            transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(server.endpoint)))
        try:
            publisher.create_topic(name=topic)
            subscriber.create_subscription(request=pb.Subscription(name=subscription,
                                                                   topic=topic))
            for future in [publisher.publish(topic, str(i).encode()) for i in range(48)]:
                future.result(timeout=10)
            # The backlog is waiting: make the subscription push.
            subscriber.modify_push_config(request={
                "subscription": subscription, "push_config": {"push_endpoint": endpoint.url}})
            deadline = time.monotonic() + 60
            while not _drained(server, subscription) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _drained(server, subscription)
            stats = push.push_stats()[subscription]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the file follows within 0.2 s
                written = json.loads(stats_file.read_text()) if stats_file.exists() else {}
                if written.get(subscription, {}).get("requests") == 48:
                    break
                time.sleep(0.05)
        finally:
            subscriber.close()
            endpoint.close()
    assert stats["requests"] == 48
    assert stats["concurrency"] == 8 and len(stats["seconds_at"]) == 9
    assert stats["in_flight_now"] == 0
    busiest = max(k for k, seconds in enumerate(stats["seconds_at"]) if seconds > 0)
    # A request is in flight at the sender from before it is sent until its answer is read,
    # which covers the endpoint's handler: the sender counts at least as many at once.
    assert endpoint.most_at_once() <= busiest <= 8
    # Each request spends at least the endpoint's delay in flight.
    in_flight_seconds = sum(k * seconds for k, seconds in enumerate(stats["seconds_at"]))
    assert in_flight_seconds >= 48 * 0.05
    assert written[subscription]["requests"] == 48
