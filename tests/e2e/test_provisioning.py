"""``i3tasks_ensure_pubsub`` against the real emulator: create, idempotent, update, dry run."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import time

import pytest
from django.core.management import call_command

from django_i3tasks import transport
from django_i3tasks.conf import get_settings, pubsub_config
from django_i3tasks.provisioning import ensure_pubsub


def subscription(queue):
    client = transport.subscriber_client()
    try:
        return client.get_subscription(subscription=pubsub_config().subscription_path(queue))
    finally:
        client.close()


def verbs(actions):
    return sorted((a.verb, a.kind) for a in actions)


def test_dry_run_changes_nothing_then_create_then_idempotent(pubsub):
    dry = ensure_pubsub(dry_run=True)
    assert verbs(dry) == [("create", "subscription")] * 2 + [("create", "topic")] * 2
    assert verbs(ensure_pubsub(dry_run=True)) == verbs(dry)  # still nothing created
    assert verbs(ensure_pubsub()) == verbs(dry)
    assert {a.verb for a in ensure_pubsub()} == {"ok"}
    sub = subscription(get_settings().default_queue)
    assert sub.topic.endswith(f"topics/{get_settings().namespace}.default")
    assert sub.name.endswith(f"subscriptions/{get_settings().namespace}.default.push")
    assert sub.ack_deadline_seconds == 60


def test_changed_settings_update_the_subscription(pubsub, i3settings):
    ensure_pubsub()
    queue = dataclasses.replace(
        get_settings().default_queue,
        push_endpoint="http://127.0.0.1:9/i3/tasks-push/",
        ack_deadline_seconds=120,
        min_retry_backoff_seconds=5,
        max_retry_backoff_seconds=50,
    )
    i3settings(default_queue=queue)
    actions = ensure_pubsub()
    (update,) = [a for a in actions if a.verb == "update"]
    assert "push_config" in update.detail and "ack_deadline_seconds" in update.detail
    sub = subscription(queue)
    assert sub.push_config.push_endpoint == "http://127.0.0.1:9/i3/tasks-push/"
    assert sub.ack_deadline_seconds == 120
    assert sub.retry_policy.minimum_backoff.total_seconds() == 5
    assert {a.verb for a in ensure_pubsub()} == {"ok"}


def test_command_prints_what_it_did(pubsub):
    out = io.StringIO()
    call_command("i3tasks_ensure_pubsub", "--dry-run", stdout=out)
    assert "[dry run] create" in out.getvalue() and "4 change(s)" in out.getvalue()


def test_command_fails_clearly_when_pubsub_is_unreachable(pubsub, monkeypatch):
    from django.core.management.base import CommandError

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")
    with pytest.raises(CommandError, match="Pub/Sub provisioning failed"):
        call_command("i3tasks_ensure_pubsub", "--timeout", "2", stdout=io.StringIO())


MANAGE = [sys.executable, "-m", "django"]


@pytest.mark.parametrize(
    "command", [["check"], ["makemigrations", "--check", "--dry-run"], ["migrate", "-v", "0"]]
)
def test_startup_provisioning_never_runs_for_maintenance_commands(command, tmp_path):
    """With run_queue_create_command_on_startup=True and Pub/Sub unreachable, maintenance
    commands neither hang nor talk to it (a blackhole host would make them hang)."""
    env = _env(tmp_path)
    started = time.monotonic()
    result = subprocess.run([*MANAGE, *command], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "could not ensure" not in result.stderr
    assert time.monotonic() - started < 60


def test_startup_provisioning_warns_when_unreachable(tmp_path):
    """A serving process (here: a WSGI import) logs a warning and keeps running."""
    env = _env(tmp_path)
    # Waits for the warning (not a fixed sleep: a loaded machine may take longer than the
    # 5 s connection timeout plus start-up), then shows the process is still serving.
    code = (
        "import logging, threading\n"
        "seen = threading.Event()\n"
        "class Seen(logging.Handler):\n"
        "    def emit(self, record):\n"
        "        if 'could not ensure' in record.getMessage(): seen.set()\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "logging.getLogger().addHandler(Seen())\n"
        "from django.core.wsgi import get_wsgi_application\n"
        "get_wsgi_application()\n"
        "seen.wait(50)\n"
        "print('still alive')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "still alive" in result.stdout
    assert "could not ensure Pub/Sub topics at startup" in result.stderr


def _env(tmp_path):
    import os

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.startup_settings",
        "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[2]),
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
        "I3TASKS_TEST_DB": "sqlite",
        "I3TASKS_SQLITE_PATH": str(tmp_path / "startup.sqlite3"),
    }
