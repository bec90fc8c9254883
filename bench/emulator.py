"""The Python Pub/Sub emulator against Google's Java emulator, in one run.

    .venv/bin/python bench/emulator.py [--messages N] [--suite]

For each emulator found (Python always, Java when installed): start time (``start()`` until
it serves), push throughput to a no-op HTTP endpoint at 1, 4 and 16 requests in flight
(messages/s from ``modify_push_config`` turning a full pull subscription into a push one until
the endpoint saw every message), StreamingPull receive+ack throughput (``subscribe()`` on a
full subscription until every message was acked once), batched publish throughput, and the
emulator process's peak memory (VmHWM). The requests in flight of Google's emulator cannot be
set; its push row is measured once and the most requests it had in flight is printed.
``--suite`` also times the test suite on SQLite with each emulator (``I3TASKS_EMULATOR``).

Figures depend on the machine and its load; the endpoint and the clients run in this Python
process for both emulators, so they cost both the same.
"""

from __future__ import annotations

import argparse
import http.server
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from google.cloud import pubsub_v1  # noqa: E402
from google.pubsub_v1 import types as pb  # noqa: E402
from google.pubsub_v1.services.publisher.transports.grpc import (  # noqa: E402
    PublisherGrpcTransport,
)
from google.pubsub_v1.services.subscriber.transports.grpc import (  # noqa: E402
    SubscriberGrpcTransport,
)

from django_i3tasks.testing.emulator import (  # noqa: E402
    EmulatorError,
    EmulatorNotFound,
    PubSubEmulator,
    choose_kind,
)

PROJECT = "projects/bench-emulator"
MESSAGE_ID = re.compile(rb'"messageId"\s*:\s*"([^"]+)"')


class Endpoint:
    """A no-op push endpoint (HTTP/1.1 keep-alive, 204) counting distinct messages and the
    most requests in flight."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.in_flight = 0
        self.most = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.expected = 0
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                with endpoint.lock:
                    endpoint.in_flight += 1
                    endpoint.most = max(endpoint.most, endpoint.in_flight)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                found = MESSAGE_ID.search(body)
                marker = found.group(1) if found else b"?"
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with endpoint.lock:
                    endpoint.in_flight -= 1
                    endpoint.seen.add(marker.decode())
                    if len(endpoint.seen) >= endpoint.expected:
                        endpoint.done.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"

    def reset(self, expected: int) -> None:
        with self.lock:
            self.seen.clear()
            self.most = 0
            self.expected = expected
            self.done.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Bench:
    def __init__(self, emulator: PubSubEmulator) -> None:
        endpoint = emulator.endpoint
        self.emulator = emulator
        self.admin = pubsub_v1.PublisherClient(
            transport=PublisherGrpcTransport(channel=grpc.insecure_channel(endpoint)))
        self.publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.01),
            transport=PublisherGrpcTransport(channel=grpc.insecure_channel(endpoint)))
        self.subscriber = pubsub_v1.SubscriberClient(
            transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(endpoint)))

    def filled(self, count: int) -> tuple[str, float]:
        """A pull subscription holding ``count`` messages, and the publish rate."""
        suffix = uuid.uuid4().hex[:10]
        topic, sub = f"{PROJECT}/topics/t-{suffix}", f"{PROJECT}/subscriptions/s-{suffix}"
        self.admin.create_topic(name=topic)
        self.subscriber.create_subscription(name=sub, topic=topic, ack_deadline_seconds=60)
        began = time.perf_counter()
        futures = [self.publisher.publish(topic, b"x" * 100, n=str(i)) for i in range(count)]
        for future in futures:
            future.result(timeout=120)
        return sub, count / (time.perf_counter() - began)

    def push(self, endpoint: Endpoint, count: int) -> tuple[float, int]:
        sub, _ = self.filled(count)
        endpoint.reset(count)
        began = time.perf_counter()
        self.subscriber.modify_push_config(subscription=sub,
                                           push_config=pb.PushConfig(push_endpoint=endpoint.url))
        if not endpoint.done.wait(300):
            raise RuntimeError(f"push: {len(endpoint.seen)} of {count} delivered")
        rate = count / (time.perf_counter() - began)
        self.subscriber.delete_subscription(subscription=sub)
        return rate, endpoint.most

    def streaming_pull(self, count: int) -> float:
        sub, _ = self.filled(count)
        seen: set[str] = set()
        lock = threading.Lock()
        done = threading.Event()

        def callback(message: Any) -> None:
            message.ack()
            with lock:
                seen.add(message.message_id)
                if len(seen) >= count:
                    done.set()

        began = time.perf_counter()
        future = self.subscriber.subscribe(sub, callback)
        if not done.wait(300):
            raise RuntimeError(f"streaming pull: {len(seen)} of {count} received")
        rate = count / (time.perf_counter() - began)
        future.cancel()
        future.result(timeout=30)
        return rate

    def close(self) -> None:
        self.subscriber.close()


def peak_memory_mb(pid: int) -> float:
    """VmHWM of the process and its children (the Java process under a wrapper, if any)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for one in pids:
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def measure(kind: str, messages: int, endpoint: Endpoint) -> dict[str, str]:
    row: dict[str, str] = {}
    began = time.perf_counter()
    emulator = PubSubEmulator(kind=kind, push_concurrency=1).start()
    row["start (s)"] = f"{time.perf_counter() - began:.2f}"
    emulators = [emulator]
    try:
        bench = Bench(emulator)
        _, publish_rate = bench.filled(messages)
        row["publish, batched (msg/s)"] = f"{publish_rate:,.0f}"
        row["StreamingPull receive+ack (msg/s)"] = f"{bench.streaming_pull(messages):,.0f}"
        for in_flight in (1, 4, 16):
            key = f"push, {in_flight} in flight (msg/s)"
            if kind == "java":
                if in_flight == 1:
                    rate, most = bench.push(endpoint, messages)
                    row["push, Google's own concurrency (msg/s)"] = (
                        f"{rate:,.0f} (max {most} in flight)")
                row[key] = "n/a (not settable)"
                continue
            if in_flight != 1:
                bench.close()
                emulator = PubSubEmulator(kind=kind, push_concurrency=in_flight).start()
                emulators.append(emulator)
                bench = Bench(emulator)
            rate, most = bench.push(endpoint, messages)
            row[key] = f"{rate:,.0f} (max {most} seen)"
        row["peak memory (MB)"] = " / ".join(
            f"{peak_memory_mb(e.process.pid):.0f}" for e in emulators if e.process)
        bench.close()
    finally:
        for one in emulators:
            one.stop()
    return row


def suite_time(kind: str) -> str:
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "I3TASKS_EMULATOR": kind, "I3TASKS_TEST_DB": "sqlite"}, check=False,
    )
    elapsed = time.perf_counter() - began
    last = (result.stdout.strip().splitlines() or ["?"])[-1]
    return f"{elapsed:.0f} s ({last.strip('= ')})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--suite", action="store_true",
                        help="also time the test suite on SQLite with each emulator")
    args = parser.parse_args()
    kinds = ["python"]
    try:
        choose_kind("java")
        kinds.append("java")
    except (EmulatorNotFound, EmulatorError) as exc:
        print(f"Google's emulator not measured: {exc}")
    endpoint = Endpoint()
    rows = {kind: measure(kind, args.messages, endpoint) for kind in kinds}
    endpoint.close()
    if args.suite:
        for kind in kinds:
            rows[kind]["suite on SQLite (wall)"] = suite_time(kind)
    keys = list(dict.fromkeys(key for row in rows.values() for key in row))
    width = max(len(key) for key in keys)
    print(f"\n{args.messages} messages of 100 bytes per figure; {os.cpu_count()} CPUs\n")
    print(f"{'':{width}}  " + "  ".join(f"{kind:>28}" for kind in kinds))
    for key in keys:
        print(f"{key:{width}}  " + "  ".join(f"{rows[k].get(key, ''):>28}" for k in kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
