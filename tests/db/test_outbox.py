"""The outbox chosen by settings: ``force_sync`` is the inline outbox, and the recording one."""

from __future__ import annotations

import pytest

from django_i3tasks import outbox
from tests.testapp import tasks


@pytest.mark.django_db
def test_force_sync_is_the_inline_outbox_and_recording_is_chosen_by_settings(i3settings):
    assert isinstance(outbox.get_outbox(), outbox.PubSubOutbox)
    i3settings(force_sync=True)
    assert isinstance(outbox.get_outbox(), outbox.InlineOutbox)
    i3settings(force_sync=False, outbox="inline")
    assert isinstance(outbox.get_outbox(), outbox.InlineOutbox)
    i3settings(outbox="recording")
    assert outbox.get_outbox() is outbox.recording
    outbox.recording.records.clear()
    handle = tasks.add.delay(1, 1)
    assert [r.execution_uuid for r in outbox.recording.records] == [handle.uuid]
    outbox.recording.records.clear()
