"""The emulator launcher, and proof that the stream-close fix works with real clients."""

from __future__ import annotations

import threading
import time

import pytest

from django_i3tasks.testing.emulator import (
    EmulatorNotFound,
    PubSubEmulator,
    find_emulator_jar,
)


def test_missing_jar_is_a_clear_error(monkeypatch, tmp_path):
    missing = tmp_path / "nope.jar"
    monkeypatch.setenv("I3TASKS_PUBSUB_EMULATOR_JAR", str(missing))
    with pytest.raises(EmulatorNotFound, match="nope.jar") as info:
        find_emulator_jar()
    assert "gcloud components install pubsub-emulator" in str(info.value)


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EmulatorNotFound, match="java"):
        PubSubEmulator(java="java-that-does-not-exist").start()


def test_start_and_stop_leave_no_process():
    emulator = PubSubEmulator().start()
    process = emulator.process
    assert process is not None and process.poll() is None
    emulator.stop()
    assert process.poll() is not None
    emulator.stop()  # idempotent


def test_subscribe_cancel_cycles_lose_nothing(pubsub_emulator):
    """Without the fix, closed StreamingPull streams stay subscribers and swallow messages."""
    from google.cloud import pubsub_v1

    from django_i3tasks import transport

    project = "i3tasks-test"
    topic = f"projects/{project}/topics/streamclose-{time.time_ns()}"
    subscription = topic.replace("/topics/", "/subscriptions/")
    publisher = transport.admin_publisher_client()
    subscriber = transport.subscriber_client()
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=30)
    try:
        for _ in range(5):
            future = subscriber.subscribe(subscription, lambda message: message.nack())
            time.sleep(0.3)
            future.cancel()
            future.result(timeout=10)
        for index in range(50):
            publisher.publish(topic, str(index).encode()).result(timeout=10)
        received: set[str] = set()
        done = threading.Event()

        def callback(message: pubsub_v1.subscriber.message.Message) -> None:
            received.add(message.data.decode())
            message.ack()
            if len(received) == 50:
                done.set()

        future = subscriber.subscribe(subscription, callback)
        done.wait(20)
        future.cancel()
        future.result(timeout=10)
        assert len(received) == 50
    finally:
        subscriber.delete_subscription(subscription=subscription)
        publisher.delete_topic(topic=topic)
        subscriber.close()
