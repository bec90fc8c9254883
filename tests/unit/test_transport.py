"""The publisher's handover: an empty one is done at once, each message is settled once."""

from django_i3tasks import transport


def test_an_empty_handover_is_done_at_once():
    assert transport.publish_many([], timeout=1).result(timeout=0) == []


def test_a_message_is_settled_once():
    handover = transport._Handover(2)
    handover.settle([(0, "id-0")])
    handover.settle([(0, ValueError("late")), (1, "id-1")])
    handover.settle([(1, ValueError("again"))])
    assert handover.future.result(timeout=0) == ["id-0", "id-1"]
