"""Publishing waits for the commit; a rollback publishes nothing (real emulator)."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from django_i3tasks import transport
from django_i3tasks.conf import get_settings, pubsub_config
from django_i3tasks.messages import TaskMessage
from django_i3tasks.models import TaskExecution
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def pull_all(wait: float = 2.0) -> list[TaskMessage]:
    """Pull (and ack) what is on the default queue's subscription, for ``wait`` seconds."""
    transport.flush()
    subscriber = transport.subscriber_client()
    path = pubsub_config().subscription_path(get_settings().default_queue)
    found: list[TaskMessage] = []
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            response = subscriber.pull(subscription=path, max_messages=100, timeout=5)
            if response.received_messages:
                subscriber.acknowledge(subscription=path,
                                       ack_ids=[m.ack_id for m in response.received_messages])
            for received in response.received_messages:
                found.append(TaskMessage.decode(received.message.data,
                                                dict(received.message.attributes)))
            time.sleep(0.1)
    finally:
        subscriber.close()
    return found


def test_delay_outside_transaction_publishes(pull_queue):
    handle = tasks.add.delay(1, 1)
    (message,) = pull_all()
    assert message.execution_uuid == handle.uuid and message.args == [1, 1]
    assert message.try_number == 1


def test_rolled_back_transaction_publishes_nothing(pull_queue):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            tasks.add.delay(1, 2)
            raise RuntimeError("roll back")
    assert TaskExecution.objects.count() == 0
    assert pull_all() == []


def test_committed_transaction_publishes_after_commit(pull_queue):
    with transaction.atomic():
        handle = tasks.add.delay(1, 3)
        assert pull_all(wait=1.0) == []  # not before the commit
    (message,) = pull_all()
    assert message.execution_uuid == handle.uuid
