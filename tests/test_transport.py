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
