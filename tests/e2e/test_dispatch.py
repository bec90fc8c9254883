"""Publishing waits for the commit; a rollback publishes nothing (real emulator)."""

from __future__ import annotations

import pytest
from django.db import transaction

from django_i3tasks.models import TaskExecution
from tests.helpers import pull_all
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


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
