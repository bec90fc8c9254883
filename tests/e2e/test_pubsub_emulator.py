"""What only the Python emulator does (Google's ignores filters, has no deliveryAttempt in push
bodies), and its own edges: ordering keys, paging, streams of a deleted subscription, the
user-facing context manager. The shared contract is in test_emulator_conformance.py."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.pubsub_v1 import types as pb
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from django_i3tasks.testing.emulator import emulated_pubsub
from django_i3tasks.testing.pubsub import EmulatorServer

PROJECT = "projects/python-emulator"


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def clients(server: EmulatorServer) -> Iterator[tuple[Any, Any]]:
    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        transport=PublisherGrpcTransport(channel=grpc.insecure_channel(server.endpoint)))
    subscriber = pubsub_v1.SubscriberClient(
        transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(server.endpoint)))
    yield publisher, subscriber
    subscriber.close()


def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return f"{PROJECT}/topics/t-{suffix}", f"{PROJECT}/subscriptions/s-{suffix}"


def test_subscription_filter_drops_what_does_not_match(clients):
    publisher, subscriber = clients
    topic, subscription = names()
    publisher.create_topic(name=topic)
    subscriber.create_subscription(request=pb.Subscription(
        name=subscription, topic=topic, filter='attributes.kind = "keep"'))
    with pytest.raises(exceptions.InvalidArgument, match="filter"):
        subscriber.create_subscription(request=pb.Subscription(
            name=subscription + "-bad", topic=topic, filter="kind = keep"))
    for kind in ("keep", "drop", "keep"):
        publisher.publish(topic, kind.encode(), kind=kind).result(timeout=10)
    publisher.publish(topic, b"none").result(timeout=10)
    response = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
    assert [m.message.data for m in response.received_messages] == [b"keep", b"keep"]


def test_ordering_key_is_delivered_in_order_one_at_a_time(clients):
    publisher, subscriber = clients
    topic, subscription = names()
    publisher.create_topic(name=topic)
    subscriber.create_subscription(request=pb.Subscription(
        name=subscription, topic=topic, enable_message_ordering=True))
    for i in range(3):
        publisher.publish(topic, f"k{i}".encode(), ordering_key="k")
    publisher.publish(topic, b"other", ordering_key="o").result(timeout=10)
    first = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
    assert sorted(m.message.data for m in first.received_messages) == [b"k0", b"other"]
    k0 = next(m for m in first.received_messages if m.message.data == b"k0")
    subscriber.modify_ack_deadline(subscription=subscription, ack_ids=[k0.ack_id],
                                   ack_deadline_seconds=0)  # nacked: k0 again, before k1
    again = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
    assert [m.message.data for m in again.received_messages] == [b"k0"]
    subscriber.acknowledge(subscription=subscription,
                           ack_ids=[again.received_messages[0].ack_id])
    after = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
    assert [m.message.data for m in after.received_messages] == [b"k1"]


def test_list_pages(clients):
    publisher, _ = clients
    project = f"projects/paging-{uuid.uuid4().hex[:8]}"
    created = sorted(f"{project}/topics/topic-{i:02}" for i in range(7))
    for name in created:
        publisher.create_topic(name=name)
    pager = publisher.list_topics(request={"project": project, "page_size": 3})
    pages = [[topic.name for topic in page.topics] for page in pager.pages]
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [name for page in pages for name in page] == created


def test_deleting_a_subscription_ends_its_streams_with_not_found(clients):
    publisher, subscriber = clients
    topic, subscription = names()
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    future = subscriber.subscribe(subscription, lambda message: message.ack())
    time.sleep(0.5)
    subscriber.delete_subscription(subscription=subscription)
    with pytest.raises(exceptions.NotFound):
        future.result(timeout=20)


def test_a_closed_stream_gives_back_what_it_was_sent(server):
    """Messages taken for a stream whose client never confirmed them are available again
    as soon as the stream closes, and that delivery does not count."""
    broker = server.broker
    assert broker is not None
    topic, subscription = names()
    broker.create_topic(pb.Topic.pb()(name=topic))
    broker.create_subscription(pb.Subscription.pb()(name=subscription, topic=topic))
    broker.publish(topic, [pb.PubsubMessage.pb()(data=b"x")])
    from django_i3tasks.testing.pubsub.state import Holder

    holder = Holder()
    with broker.lock:
        sub = broker.sub(subscription)
        assert len(broker.take(sub, holder, 10, 60)) == 1
        broker.forget_unconfirmed(sub, holder)
        again = broker.take(sub, Holder(), 10, 60)
    assert [m.message.data for m in again] == [b"x"]
    assert next(iter(sub.entries.values())).attempts == 1


def test_publish_to_a_missing_topic_is_not_found(clients):
    publisher, _ = clients
    with pytest.raises(exceptions.NotFound):
        publisher.publish(f"{PROJECT}/topics/never-made", b"x").result(timeout=10)


def test_emulated_pubsub_sets_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "before:1")
    with emulated_pubsub(kind="python") as emulator:
        assert os.environ["PUBSUB_EMULATOR_HOST"] == emulator.endpoint
        publisher = pubsub_v1.PublisherClient()
        name = "projects/ctx-manager/topics/works"
        assert publisher.create_topic(name=name).name == name
    assert os.environ["PUBSUB_EMULATOR_HOST"] == "before:1"


def test_push_concurrency_bounds_requests_in_flight(server, clients):
    import http.server

    publisher, subscriber = clients
    lock = threading.Lock()
    current, most = 0, 0

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            nonlocal current, most
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                current += 1
                most = max(most, current)
            time.sleep(0.05)
            with lock:
                current -= 1
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    try:
        topic, subscription = names()
        publisher.create_topic(name=topic)
        subscriber.create_subscription(request=pb.Subscription(
            name=subscription, topic=topic, push_config=pb.PushConfig(
                push_endpoint=f"http://127.0.0.1:{target.server_address[1]}/")))
        for i in range(40):
            publisher.publish(topic, str(i).encode())
        publisher.publish(topic, b"last").result(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with server.broker.lock:  # type: ignore[union-attr]
                if not server.broker.sub(subscription).entries:  # type: ignore[union-attr]
                    break
            time.sleep(0.05)
        assert 1 <= most <= server.push_concurrency
    finally:
        target.shutdown()
        target.server_close()
