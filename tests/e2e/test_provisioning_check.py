"""``i3tasks_ensure_pubsub --check`` against the emulator: a release gate that changes nothing,
names each difference between Pub/Sub and the settings, and exits 1 when there is one."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from google.protobuf import field_mask_pb2
from google.pubsub_v1 import types as pb

from django_i3tasks import transport
from django_i3tasks.conf import get_settings, pubsub_config
from django_i3tasks.provisioning import check_pubsub, ensure_pubsub
from tests.helpers import subprocess_env


def check() -> tuple[int, str]:
    """The command's exit code and output."""
    out = io.StringIO()
    try:
        call_command("i3tasks_ensure_pubsub", "--check", stdout=out)
    except CommandError as failed:
        return failed.returncode, out.getvalue() + str(failed)
    return 0, out.getvalue()


def change_behind_the_settings_back(**fields) -> None:
    """Update the default queue's subscription directly, as someone in the console would."""
    subscriber = transport.subscriber_client()
    try:
        path = pubsub_config().subscription_path(get_settings().default_queue)
        subscription = pb.Subscription(name=path, **fields)
        subscriber.update_subscription(
            subscription=subscription, update_mask=field_mask_pb2.FieldMask(paths=list(fields)))
    finally:
        subscriber.close()


def test_missing_resources_are_differences(pubsub):
    code, output = check()
    assert code == 1
    assert f"topic projects/i3tasks-test/topics/{get_settings().namespace}.default is missing" \
        in output
    assert "4 difference(s)" in output
    assert check_pubsub() and {a.verb for a in ensure_pubsub(dry_run=True)} == {"create"}


def test_in_sync_exits_0(pubsub):
    ensure_pubsub()
    code, output = check()
    assert code == 0 and "in sync" in output


def test_a_subscription_changed_behind_the_settings_back(pubsub):
    ensure_pubsub()
    change_behind_the_settings_back(ack_deadline_seconds=30)
    code, output = check()
    assert code == 1
    assert "ack_deadline_seconds is 30, the settings say 60" in output
    assert "1 difference(s)" in output
    ensure_pubsub()  # what the difference says to run
    assert check() == (0, "Pub/Sub is in sync with the settings.\n")


def test_every_compared_field_is_named(pubsub, i3settings):
    queue = dataclasses.replace(
        get_settings().default_queue, push_endpoint="https://tasks.example.com/i3/tasks-push/",
        oidc_service_account_email="push@i3tasks-test.iam.gserviceaccount.com",
        oidc_audience="https://tasks.example.com/", min_retry_backoff_seconds=5,
        dead_letter_topic="dead-letters", max_delivery_attempts=7)
    i3settings(default_queue=queue)
    ensure_pubsub()
    assert check()[0] == 0
    i3settings(default_queue=dataclasses.replace(
        queue, push_endpoint="https://other.example.com/i3/tasks-push/",
        oidc_service_account_email="other@i3tasks-test.iam.gserviceaccount.com",
        oidc_audience="https://other.example.com/", ack_deadline_seconds=120,
        min_retry_backoff_seconds=6, max_retry_backoff_seconds=60, max_delivery_attempts=9))
    code, output = check()
    assert code == 1
    for name in ("push_endpoint", "oidc_service_account_email", "oidc_audience",
                 "ack_deadline_seconds", "min_retry_backoff_seconds",
                 "max_retry_backoff_seconds", "max_delivery_attempts"):
        assert f": {name} is " in output, name


def test_a_filter_cannot_be_changed_in_place(pubsub):
    ensure_pubsub()
    subscriber = transport.subscriber_client()
    queue = get_settings().default_queue
    path = pubsub_config().subscription_path(queue)
    try:
        subscriber.delete_subscription(subscription=path)
        subscriber.create_subscription(request=pb.Subscription(
            name=path, topic=pubsub_config().topic_path(queue), ack_deadline_seconds=60,
            retry_policy=pb.RetryPolicy(minimum_backoff={"seconds": 10},
                                        maximum_backoff={"seconds": 600}),
            filter='attributes.kind = "other"'))
    finally:
        subscriber.close()
    code, output = check()
    assert code == 1
    assert "filter is 'attributes.kind = \"other\"', the settings say ''" in output
    assert "delete the subscription" in output


@pytest.mark.django_db
def test_the_command_exits_1_from_the_shell(pubsub):
    ensure_pubsub()
    change_behind_the_settings_back(ack_deadline_seconds=45)
    # --skip-checks: Django 6 checks the models against the database, which a subprocess of a
    # SQLite test may not see; this test is about the exit code.
    result = subprocess.run([sys.executable, "-m", "django", "i3tasks_ensure_pubsub", "--check",
                             "--skip-checks"],
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "ack_deadline_seconds is 45, the settings say 60" in result.stdout
