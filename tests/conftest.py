"""Shared fixtures: a real Pub/Sub emulator per test session, a fresh namespace per test,
push subscriptions pointed at the live server (real HTTP into the push view), OIDC signing
certificates, recorded signals. Helpers (functions) are in ``tests/helpers.py``; the tiers are
``tests/unit``, ``tests/db`` and ``tests/e2e``."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_i3tasks import transport

#: The fixtures the package offers to projects (``task_recorder``, ``i3tasks_pubsub``), used by
#: its own tests too.
pytest_plugins = ["django_i3tasks.testing.pytest_plugin"]


def _begin_immediate(self: Any) -> None:
    self.cursor().execute("BEGIN IMMEDIATE")


def _sqlite_wal(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Django < 5.1 has no SQLite ``init_command``: turn WAL on for each new connection."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")


def pytest_configure(config: pytest.Config) -> None:
    import django
    from django.db.backends.signals import connection_created

    if django.VERSION < (5, 1):
        from django.db.backends.sqlite3.base import DatabaseWrapper

        connection_created.connect(_sqlite_wal)
        # What OPTIONS["transaction_mode"] = "IMMEDIATE" does from Django 5.1 on: a writer
        # takes the write lock when its transaction begins and waits its turn (busy timeout),
        # instead of failing with "database is locked" when a deferred transaction upgrades.
        DatabaseWrapper._start_transaction_under_autocommit = _begin_immediate


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[Any]:
    """A Pub/Sub emulator started once per session: the kind ``I3TASKS_EMULATOR`` asks for
    (``python``, ``java``, or ``auto``: Google's, with its stream-close fix, when installed)."""
    from django_i3tasks.testing.emulator import PubSubEmulator

    emulator = PubSubEmulator().start()
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.endpoint
    try:
        yield emulator
    finally:
        transport.flush()
        emulator.stop()
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous


@pytest.fixture
def i3settings(settings: Any) -> Callable[..., Any]:
    """Replace fields of ``settings.I3TASKS`` for one test: ``i3settings(force_sync=True)``."""

    def change(**fields: Any) -> Any:
        settings.I3TASKS = dataclasses.replace(settings.I3TASKS, **fields)
        return settings.I3TASKS

    return change


@pytest.fixture
def pubsub(pubsub_emulator: Any, i3settings: Callable[..., Any]) -> Iterator[Any]:
    """A namespace of its own for the test, so no message of another test reaches it."""
    i3settings(namespace=f"t{uuid.uuid4().hex[:12]}")
    yield pubsub_emulator
    transport.flush()


@pytest.fixture
def pull_queue(pubsub: Any) -> None:
    """Provision the test namespace as is: the default queue has no push endpoint, so its
    subscription can be pulled by the test."""
    from django_i3tasks.provisioning import ensure_pubsub

    ensure_pubsub()


@pytest.fixture
def push_queue(pubsub: Any, live_server: Any, i3settings: Callable[..., Any]) -> Iterator[str]:
    """The default queue as a push subscription to the live server's push view (real HTTP),
    with a short ack deadline and quick redeliveries; yields the push URL."""
    from tests.helpers import push_subscription

    yield from push_subscription(live_server, i3settings, ack_deadline_seconds=10,
                                 min_retry_backoff_seconds=0, max_retry_backoff_seconds=1)


@pytest.fixture
def no_publish() -> Iterator[list[Any]]:
    """Collect the messages the code under test sends instead of publishing them."""
    from django_i3tasks import outbox

    class Collect(outbox.Outbox):
        def send(self, messages: Any) -> None:
            sent.extend(messages)

    sent: list[Any] = []
    with outbox.use(Collect()):
        yield sent


@pytest.fixture(scope="module")
def cert_server() -> Iterator[Any]:
    """A local server of OIDC signing certificates (``tests/oidc.py``), one per test module."""
    from tests.oidc import CertServer

    server = CertServer()
    yield server
    server.stop()


@pytest.fixture
def oidc(cert_server: Any, i3settings: Callable[..., Any]) -> Iterator[Any]:
    """OIDC on for the push and beat endpoints, certificates from the local server."""
    from django_i3tasks import auth
    from tests.oidc import SERVICE_ACCOUNT

    cert_server.reset()
    auth.certificates.clear()
    i3settings(oidc_service_account_emails=(SERVICE_ACCOUNT,), oidc_certs_url=cert_server.url,
               oidc_audience=None)
    yield cert_server
    auth.certificates.clear()


@pytest.fixture
def events() -> Iterator[Any]:
    """Records what the package's three signals send (``tests.helpers.Events``)."""
    from django_i3tasks import signals
    from tests.helpers import Events

    recorded = Events()
    receivers = {name: recorded.receiver(name) for name in ("enqueued", "started", "finished")}
    signals.task_enqueued.connect(receivers["enqueued"])
    signals.task_started.connect(receivers["started"])
    signals.task_finished.connect(receivers["finished"])
    yield recorded
    signals.task_enqueued.disconnect(receivers["enqueued"])
    signals.task_started.disconnect(receivers["started"])
    signals.task_finished.disconnect(receivers["finished"])


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    from django_i3tasks import beat
    from tests.testapp.chain_tasks import ORDER
    from tests.testapp.tasks import CALLS

    beat.forget()
    CALLS.clear()
    ORDER.clear()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that start worker subprocesses, so focused runs can leave them out."""
    for item in items:
        if "processes" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.subprocess_worker)
