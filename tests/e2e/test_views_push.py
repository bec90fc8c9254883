"""Malformed and hostile push requests: a deliberate JSON answer, no row changed, nothing
imported. Sent over real HTTP to the live server."""

from __future__ import annotations

import json
import sys
import uuid

import pytest

from django_i3tasks.messages import SIGNATURE_ATTRIBUTE, TaskMessage, sign
from django_i3tasks.models import (
    ScheduleSlot,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TaskGroup,
)
from tests.helpers import http, push_envelope
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

SIDE_EFFECT_MODULE = "tests.testapp.side_effect"


def signed(body: object) -> bytes:
    data = json.dumps(body).encode()
    return push_envelope(data, {SIGNATURE_ATTRIBUTE: sign(data)})


def valid_message(**changes: object) -> dict:
    message = TaskMessage(
        execution_id=10**9, execution_uuid=uuid.uuid4(), try_id=10**9, try_number=1,
        task_name="tests.testapp.tasks.add", queue_name="default", args=[1, 2], kwargs={},
        max_retries=0,
    )
    body = json.loads(message.to_json())
    body.update(changes)
    return body


def raw_envelope(message: object) -> bytes:
    return json.dumps({"message": message, "subscription": "s"}).encode()


CASES = [
    # (name, method, body, expected status, expected error code)
    ("not json", "POST", b"{not json", 400, "invalid_json"),
    ("not utf-8", "POST", b"\xff\xfe\x00", 400, "invalid_json"),
    ("empty body", "POST", b"", 400, "invalid_json"),
    ("json array", "POST", b"[1, 2]", 400, "invalid_envelope"),
    ("no message", "POST", b'{"subscription": "s"}', 400, "invalid_envelope"),
    ("message not object", "POST", raw_envelope("hello"), 400, "invalid_envelope"),
    ("no data", "POST", raw_envelope({"messageId": "1"}), 400, "invalid_envelope"),
    ("bad base64", "POST", raw_envelope({"data": "%%%not-base64"}), 400, "invalid_base64"),
    ("attributes not strings", "POST", raw_envelope({"data": "e30=", "attributes": {"a": 1}}),
     400, "invalid_envelope"),
    ("data not json", "POST", push_envelope(b"\x00binary", {SIGNATURE_ATTRIBUTE: sign(b"x")}),
     200, "bad_signature"),
    ("signed data not json", "POST", push_envelope(b"not json",
                                                   {SIGNATURE_ATTRIBUTE: sign(b"not json")}),
     200, "data_not_json"),
    ("unsigned", "POST", push_envelope(json.dumps(valid_message()).encode()), 200, "unsigned"),
    ("bad signature", "POST", push_envelope(json.dumps(valid_message()).encode(),
                                            {SIGNATURE_ATTRIBUTE: "AAAA"}), 200, "bad_signature"),
    ("wrong schema", "POST", signed({"task": "tests.testapp.tasks.add"}), 200, "bad_schema"),
    ("wrong types", "POST", signed(valid_message(args="1,2")), 200, "bad_schema"),
    ("extra field", "POST", signed(valid_message(module="os")), 200, "bad_schema"),
    # A task this process has not registered is never imported: the execution it names fails
    # for good (tests/test_execution.py); these name no real try, so nothing changes.
    ("unknown task", "POST", signed(valid_message(task="tests.testapp.tasks.nope")),
     200, None),
    ("real non-task with import side effect", "POST",
     signed(valid_message(task=f"{SIDE_EFFECT_MODULE}.not_a_task")), 200, None),
    ("stdlib function", "POST", signed(valid_message(task="os.system", args=["id"])),
     200, None),
    ("unknown queue", "POST", signed(valid_message(queue="elsewhere")), 200, "unknown_queue"),
    ("pull queue", "POST", signed(valid_message(queue="heavy")), 200, "pull_queue"),
    ("no such try", "POST", signed(valid_message()), 200, None),
    ("GET", "GET", None, 405, "method_not_allowed"),
    ("PUT", "PUT", b"{}", 405, "method_not_allowed"),
    ("DELETE", "DELETE", None, 405, "method_not_allowed"),
]


def table_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in (
        TaskExecution, TaskExecutionTry, TaskExecutionResult, TaskGroup, ScheduleSlot)}


@pytest.mark.parametrize("name, method, body, status, code", CASES, ids=[c[0] for c in CASES])
def test_malformed_push(live_server, pull_queue, name, method, body, status, code, tmp_path,
                        monkeypatch):
    marker = tmp_path / "imported"
    monkeypatch.setenv("I3TASKS_SIDE_EFFECT_MARKER", str(marker))
    tasks.add.delay(5, 5)  # a real row that must stay as it is
    before = table_counts()
    snapshot = list(TaskExecutionTry.objects.values())
    answer, headers, content = http(method, f"{live_server.url}/i3/tasks-push/", body,
                                    {"Content-Type": "application/json"})
    assert answer == status, content
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(content)
    if code is not None:
        assert payload["error"] == code, payload
    else:
        assert payload["status"] == "unknown_try", payload
    assert b"Traceback" not in content
    assert table_counts() == before
    assert list(TaskExecutionTry.objects.values()) == snapshot
    assert SIDE_EFFECT_MODULE not in sys.modules
    assert not marker.exists()
    assert tasks.CALLS.total() == 0


def test_oversized_body_is_refused_before_reading(live_server, pull_queue, i3settings):
    i3settings(max_push_body_bytes=2048)
    body = push_envelope(b"x" * 4096)
    before = table_counts()
    status, _, content = http("POST", f"{live_server.url}/i3/tasks-push/", body)
    assert status == 413 and json.loads(content)["error"] == "body_too_large"
    assert table_counts() == before


def test_forged_call_of_a_real_execution_is_refused(live_server, pull_queue):
    """Same ids as a queued execution but other args and a wrong key: nothing runs."""
    handle = tasks.add.delay(1, 1)
    try_ = TaskExecutionTry.objects.get(execution_id=handle.id)
    body = valid_message(execution_id=handle.id, execution_uuid=str(handle.uuid),
                         try_id=try_.pk, args=[100, 100])
    data = json.dumps(body).encode()
    from django.core import signing

    forged = signing.Signer(key="another-key", salt="django_i3tasks.messages",
                            algorithm="sha256").signature(data.decode())
    status, _, content = http("POST", f"{live_server.url}/i3/tasks-push/",
                              push_envelope(data, {SIGNATURE_ATTRIBUTE: forged}))
    assert status == 200 and json.loads(content)["error"] == "bad_signature"
    assert TaskExecutionTry.objects.get(pk=try_.pk).status == "queued"
    assert tasks.CALLS.total() == 0
