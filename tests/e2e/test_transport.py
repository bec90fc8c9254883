"""The per-process publisher: reused, rebuilt on config change and after fork."""

import os

from django_i3tasks import transport


def test_publisher_is_reused_and_rebuilt_after_fork(pubsub_emulator):
    first = transport.publisher_client()
    assert transport.publisher_client() is first
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's gRPC channel
        os.close(read)
        fresh = transport._publisher is None
        os.write(write, b"1" if fresh else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert transport.publisher_client() is first


def test_config_change_builds_a_new_client(pubsub_emulator, monkeypatch):
    first = transport.publisher_client()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
    second = transport.publisher_client()
    assert second is not first
    monkeypatch.undo()
    transport.flush()


# --- publish_many: the sender's own requests ---------------------------------------------------


def test_publish_many_settles_every_message_with_its_id_across_requests(pull_queue):
    """2,500 messages (three requests of at most 1,000) to one queue: one future whose result
    has an id per message, in order, and every message arrives once."""
    from django_i3tasks.conf import get_settings, pubsub_config
    from tests.helpers import pull_messages

    queue = get_settings().default_queue
    payloads = [f"m{i}".encode() for i in range(2500)]
    handover = transport.publish_many([(queue, p, {"n": str(i)}) for i, p in
                                       enumerate(payloads)], timeout=30)
    ids = handover.result(timeout=60)
    assert len(ids) == 2500 and all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == 2500
    received = pull_messages(pubsub_config().subscription_path(queue), wait=4)
    assert sorted(m.data for m in received) == sorted(payloads)
    assert {m.message_id: m.data for m in received} == dict(zip(ids, payloads, strict=True))


def test_publish_many_reports_each_failure_and_keeps_sending(pubsub, monkeypatch):
    """An unreachable Pub/Sub fails every message of the handover (with the error, within the
    timeout), and the sender keeps serving the next handover."""
    from django_i3tasks.conf import get_settings

    queue = get_settings().default_queue
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
    outcomes = transport.publish_many([(queue, b"a", {}), (queue, b"b", {})],
                                      timeout=1).result(timeout=30)
    assert len(outcomes) == 2 and all(isinstance(o, Exception) for o in outcomes)
    monkeypatch.undo()
    transport.flush()
    from django_i3tasks.provisioning import ensure_pubsub

    ensure_pubsub()
    assert all(isinstance(o, str) for o in transport.publish_many(
        [(queue, b"c", {})], timeout=30).result(timeout=30))


