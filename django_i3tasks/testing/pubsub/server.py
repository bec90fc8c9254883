"""The emulator's gRPC server: ``EmulatorServer(port=0).start()``, ``.endpoint``, ``.stop()``.

It serves ``google.pubsub.v1.Publisher`` and ``google.pubsub.v1.Subscriber`` on an insecure
port (point clients at it with ``PUBSUB_EMULATOR_HOST``), keeps everything in memory, and
runs push deliveries from threads of its own process. ``start()`` returns once the port is
bound and the services are registered; ``stop()`` ends streams (UNAVAILABLE) and push
threads and frees the port.
"""

from __future__ import annotations

import os
import threading
from concurrent import futures
from typing import Any

import grpc

from . import publisher, subscriber
from .push import Pusher
from .state import Broker, Sub

PUSH_CONCURRENCY_ENV = "I3TASKS_EMULATOR_PUSH_CONCURRENCY"
DEFAULT_PUSH_CONCURRENCY = 4
MAX_MESSAGE = 32 * 1024 * 1024


def default_push_concurrency() -> int:
    """Requests in flight per push subscription: ``$I3TASKS_EMULATOR_PUSH_CONCURRENCY`` or 4."""
    raw = os.environ.get(PUSH_CONCURRENCY_ENV, "")
    try:
        return max(1, int(raw)) if raw else DEFAULT_PUSH_CONCURRENCY
    except ValueError:
        raise ValueError(f"{PUSH_CONCURRENCY_ENV}={raw!r} is not a whole number") from None


class EmulatorServer:
    """One in-process Pub/Sub emulator."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 push_concurrency: int | None = None, max_workers: int = 256) -> None:
        self.host = host
        self.port = port
        self.push_concurrency = push_concurrency or default_push_concurrency()
        self.max_workers = max_workers
        self.broker: Broker | None = None
        self._server: grpc.Server | None = None
        self._pushers: dict[int, Pusher] = {}
        self.stopped = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        self.broker = Broker(on_push_change=self._push_changed)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers,
                                       thread_name_prefix="pubsub-emulator"),
            handlers=[publisher.handler(self.broker), subscriber.handler(self.broker)],
            options=[("grpc.so_reuseport", 0),
                     ("grpc.max_receive_message_length", MAX_MESSAGE),
                     ("grpc.max_send_message_length", MAX_MESSAGE)],
        )
        try:
            port = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:
            self.broker.close()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        if not port:
            self.broker.close()
            raise OSError(f"cannot listen on {self.host}:{self.port}")
        self.port = port
        server.start()
        self._server = server
        return self

    def _push_changed(self, sub: Sub) -> None:
        """Start or stop the sender threads of ``sub`` (called under the broker lock)."""
        pusher = self._pushers.pop(sub.index, None)
        if pusher is not None:
            pusher.stop()
        if not sub.deleted and sub.pb.push_config.push_endpoint and self.broker is not None:
            self._pushers[sub.index] = Pusher(self.broker, sub, self.push_concurrency)

    def stop(self, grace: float = 1.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self.broker is not None:
            with self.broker.lock:
                for pusher in self._pushers.values():
                    pusher.stop()
                self._pushers.clear()
            self.broker.close()
        server.stop(grace).wait()
        self.stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``stop()`` (from another thread); whether it stopped."""
        return self.stopped.wait(timeout)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve in the foreground until SIGTERM/SIGINT; 0 on a clean stop."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(description="Run the Python Pub/Sub emulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument("--push-concurrency", type=int, default=None,
                        help=f"requests in flight per push subscription (default: "
                             f"${PUSH_CONCURRENCY_ENV} or {DEFAULT_PUSH_CONCURRENCY})")
    args = parser.parse_args(argv)
    try:
        server = EmulatorServer(args.host, args.port, args.push_concurrency).start()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"PUBSUB_EMULATOR_HOST={server.endpoint}", flush=True)
    stop.wait()
    server.stop()
    return 0
