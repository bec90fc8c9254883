"""The emulator launcher (both kinds), and proof that closing streams loses nothing with
real clients (Google's emulator needs its stream-close fix for that)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from django_i3tasks.testing.emulator import (
    EmulatorError,
    EmulatorNotFound,
    PubSubEmulator,
    choose_kind,
)

ROOT = Path(__file__).resolve().parents[2]


def _java_available() -> bool:
    try:
        choose_kind("java")
    except (EmulatorNotFound, EmulatorError):
        return False
    return True


KINDS = ["python", pytest.param("java", marks=pytest.mark.skipif(
    not _java_available(), reason="Google's emulator (jar and JDK) is not installed"))]


@pytest.mark.parametrize("kind", KINDS)
def test_start_and_stop_leave_no_process(kind):
    emulator = PubSubEmulator(kind=kind).start()
    assert emulator.kind == kind
    process = emulator.process
    assert process is not None and process.poll() is None
    emulator.stop()
    assert process.poll() is not None
    emulator.stop()  # idempotent


@pytest.mark.parametrize("kind", KINDS)
def test_command_line_serves_until_sigterm(kind):
    """``python -m django_i3tasks.testing.emulator`` prints the endpoint once ready, serves
    Google's client, and exits 0 on SIGTERM."""
    from google.cloud import pubsub_v1

    command = [sys.executable, "-m", "django_i3tasks.testing.emulator", "--kind", kind]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("PUBSUB_EMULATOR_HOST=127.0.0.1:"), line
        os.environ["PUBSUB_EMULATOR_HOST"], previous = line.split("=", 1)[1], \
            os.environ.get("PUBSUB_EMULATOR_HOST")
        try:
            publisher = pubsub_v1.PublisherClient()
            topic = "projects/cli-check/topics/served"
            assert publisher.create_topic(name=topic).name == topic
        finally:
            if previous is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST")
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = previous
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_check_succeeds_with_python_alone(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "I3TASKS_EMULATOR": "auto",
           "I3TASKS_PUBSUB_EMULATOR_JAR": str(tmp_path / "absent.jar")}
    result = subprocess.run([sys.executable, "-m", "django_i3tasks.testing.emulator",
                             "--check"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("emulator: python")
    env["I3TASKS_EMULATOR"] = "java"
    result = subprocess.run([sys.executable, "-m", "django_i3tasks.testing.emulator",
                             "--check"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and "absent.jar" in result.stderr


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
