"""Property test: whatever reaches the push view, it answers deliberately.

Generated requests go through Django's full request handling in-process (middleware, URL
routing, the view): random bytes, random JSON, Pub/Sub-shaped envelopes, task messages signed
with the project key that name real, unknown and import-sensitive dotted paths, random
headers, and random or partly valid OIDC tokens. For every request: never a 500, always a JSON
object without a traceback, no row written or changed, nothing imported, nothing run; with
OIDC on, the request is refused by authentication exactly when its token is not valid.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings
from google.auth import crypt, jwt
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from django_i3tasks import auth
from django_i3tasks.messages import SIGNATURE_ATTRIBUTE, TASK_ATTRIBUTE, sign
from django_i3tasks.models import (
    ScheduleSlot,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TaskGroup,
)
from django_i3tasks.registry import registry
from tests.oidc import GOOD_KEY, KEY_ID, OTHER_KEY, SERVICE_ACCOUNT, CertServer
from tests.testapp import tasks

pytestmark = pytest.mark.django_db

PUSH_PATH = "/i3/tasks-push/"
SIDE_EFFECT_MODULE = "tests.testapp.side_effect"
AUDIENCE = "https://tasks.example.com/i3/tasks-push/"

# --- strategies ------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
dotted = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,10}(\.[A-Za-z_][A-Za-z0-9_]{0,10}){1,4}\Z")
task_names = st.one_of(
    st.sampled_from([
        "tests.testapp.tasks.add", "tests.testapp.tasks.always_fails", "tests.testapp.tasks.slow",
        f"{SIDE_EFFECT_MODULE}.not_a_task", f"{SIDE_EFFECT_MODULE}.something",
        f"{SIDE_EFFECT_MODULE}.MARKER", SIDE_EFFECT_MODULE, "tests.testapp.tasks.record",
        "tests.testapp.tasks.CALLS", "os.system", "builtins.eval", "subprocess.run",
        "django_i3tasks.execution.run_message", "tests.testapp.tasks.add.__globals__",
    ]),
    dotted.map(lambda name: f"{SIDE_EFFECT_MODULE}.{name}"),
    dotted,
    st.text(max_size=40),
)
# Ids far from the one real row, including ones beyond the database's integer range, so that
# a signed message can only name tries that do not exist.
ids = st.integers(min_value=10**6, max_value=2**63 - 1) | st.integers(min_value=2**63,
                                                                       max_value=2**80)


@st.composite
def task_messages(draw: st.DrawFn) -> dict[str, Any]:
    """Message dicts: mostly of the right schema (so they reach the registry and the database),
    sometimes with fields broken, missing or added."""
    message: dict[str, Any] = {
        "v": 1,
        "execution_id": draw(ids),
        "execution_uuid": str(draw(st.uuids())),
        "try_id": draw(ids),
        "try_number": draw(st.integers(min_value=1, max_value=3)
                           | st.integers(min_value=1, max_value=40000)),
        "task": draw(task_names),
        "queue": draw(st.sampled_from(["default", "default", "heavy", "elsewhere"])),
        "args": draw(st.lists(json_values, max_size=3)),
        "kwargs": draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
        "max_retries": draw(st.integers(min_value=0, max_value=1000)),
        "group_id": draw(st.none() | ids),
    }
    if draw(st.integers(min_value=0, max_value=9)) >= 6:
        for name in draw(st.lists(st.sampled_from(sorted(message)), min_size=1, max_size=2,
                                  unique=True)):
            if draw(st.booleans()):
                message[name] = draw(json_values | st.integers())
            else:
                del message[name]
        message.update(draw(st.dictionaries(st.sampled_from(["module", "func", "extra"]),
                                            json_values, max_size=1)))
    return message


@st.composite
def message_data(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """The ``data`` bytes and attributes of a Pub/Sub message."""
    kind = draw(st.sampled_from(["message"] * 6 + ["json", "bytes"]))
    if kind == "message":
        data = json.dumps(draw(task_messages())).encode()
    elif kind == "json":
        data = json.dumps(draw(json_values)).encode()
    else:
        data = draw(st.binary(max_size=64))
    signature = {
        "signed": sign(data) if _utf8(data) else "AAAA",
        "other": draw(st.text(max_size=30)),
        "none": None,
    }[draw(st.sampled_from(["signed"] * 6 + ["other", "none"]))]
    attributes = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2))
    if signature is not None:
        attributes[SIGNATURE_ATTRIBUTE] = signature
    if draw(st.booleans()):
        attributes[TASK_ATTRIBUTE] = draw(task_names)
    return data, attributes


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["envelope"] * 6 + ["mangled", "json", "bytes", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(min_value=500, max_value=20000))
        return ("[" * depth + "]" * draw(st.sampled_from([0, depth]))).encode()
    data, attributes = draw(message_data())
    message: dict[str, Any] = {
        "data": base64.b64encode(data).decode(),
        "attributes": attributes,
        "messageId": draw(st.text(max_size=10)),
    }
    envelope: dict[str, Any] = {"message": message, "subscription": "projects/p/subscriptions/s"}
    if draw(st.booleans()):
        envelope["deliveryAttempt"] = draw(json_values)
    if kind == "mangled":
        target = draw(st.sampled_from([message, envelope]))
        key = draw(st.sampled_from(sorted(target)))
        target[key] = draw(json_values | st.text(max_size=30))
    return json.dumps(envelope).encode()


header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255,
                                             exclude_characters="\x7f"), max_size=60)
content_types = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
    "multipart/form-data", "application/octet-stream", "",
]) | header_text


@st.composite
def tokens(draw: st.DrawFn) -> tuple[str | None, bool]:
    """An Authorization header value and whether it is a valid token for ``AUDIENCE``."""
    kind = draw(st.sampled_from(["signed", "signed", "signed", "text", "none", "scheme"]))
    if kind == "none":
        return None, False
    if kind == "text":
        return draw(header_text), False
    if kind == "scheme":
        scheme = draw(st.sampled_from(["Basic", "Token", "bearer", "Bearer", "BEARER", ""]))
        return f"{scheme} {draw(header_text)}", False
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": AUDIENCE, "iss": "https://accounts.google.com", "iat": now, "exp": now + 3600,
        "email": SERVICE_ACCOUNT, "email_verified": True,
    }
    odd = st.one_of(json_values, st.floats(), st.sampled_from([
        "accounts.google.com", "https://evil.example", now - 7200, now + 7200, "true", 1,
        [AUDIENCE], [AUDIENCE, "x"], "other@p.iam.gserviceaccount.com", AUDIENCE + "/",
    ]))
    for name in draw(st.lists(st.sampled_from(sorted(claims)), max_size=3, unique=True)):
        if draw(st.booleans()):
            claims[name] = draw(odd)
        else:
            del claims[name]
    key = draw(st.sampled_from([GOOD_KEY, GOOD_KEY, GOOD_KEY, OTHER_KEY]))
    kid = draw(st.sampled_from([KEY_ID, KEY_ID, KEY_ID, "unknown"]))
    signer = crypt.RSASigner(key, key_id=kid)
    token = jwt.encode(signer, claims).decode()
    valid = key is GOOD_KEY and kid == KEY_ID and _valid_claims(claims, now)
    return f"{draw(st.sampled_from(['Bearer', 'bearer']))} {token}", valid


def _time(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and (isinstance(value, int) or math.isfinite(value)))


def _valid_claims(claims: dict[str, Any], now: int) -> bool:
    """The oracle, written independently of ``auth``: what Google's own tokens satisfy."""
    aud = claims.get("aud")
    return (
        _time(claims.get("exp")) and claims["exp"] >= now - 30
        and _time(claims.get("iat")) and claims["iat"] <= now + 30
        and claims.get("iss") in ("https://accounts.google.com", "accounts.google.com")
        and (aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud))
        and claims.get("email") == SERVICE_ACCOUNT
        and (claims.get("email_verified") is True or claims.get("email_verified") == "true")
    )


extra_headers = st.dictionaries(
    st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z") | st.sampled_from([
        "X-Forwarded-Proto", "X-Forwarded-For", "X-CloudScheduler-ScheduleTime", "Accept",
        "X-I3Tasks-Token", "X-I3Tasks-Beat-Token", "Cookie", "Origin", "Referer",
    ]),
    header_text, max_size=3,
)


# --- the test ------------------------------------------------------------------------------


def snapshot() -> tuple[dict[str, int], list[dict[str, Any]]]:
    counts = {model.__name__: model.objects.count() for model in (
        TaskExecution, TaskExecutionTry, TaskExecutionResult, TaskGroup, ScheduleSlot)}
    return counts, list(TaskExecutionTry.objects.order_by("pk").values())


@pytest.fixture
def cert_server() -> Iterator[CertServer]:
    server = CertServer()
    auth.certificates.clear()
    yield server
    auth.certificates.clear()
    server.stop()


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST"] * 45 + ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    body=bodies(),
    content_type=content_types,
    authorization=tokens(),
    oidc_on=st.booleans(),
    headers=extra_headers,
    query=st.sampled_from(["", "", "?access_token=x", "?i3sig=AAAA", "?task=os.system"]),
)
def test_push_view_answers_every_request_deliberately(
    fuzz_state, cert_server, method, body, content_type, authorization, oidc_on, headers, query,
):
    real_try, before, marker = fuzz_state
    conf = dataclasses.replace(
        real_try["settings"],
        oidc_service_account_emails=(SERVICE_ACCOUNT,) if oidc_on else (),
        oidc_audience=AUDIENCE, oidc_certs_url=cert_server.url,
    )
    header_value, token_valid = authorization
    request_headers = dict(headers)
    if header_value is not None:
        request_headers["Authorization"] = header_value
    with override_settings(I3TASKS=conf):
        response = Client(raise_request_exception=False).generic(
            method, PUSH_PATH + query, data=body, content_type=content_type,
            headers=request_headers,
        )
    content = response.content
    assert response.status_code != 500, content
    assert response["Content-Type"] == "application/json", content
    payload = json.loads(content)
    # 503 makes Pub/Sub deliver again: only for a transient cause, never for the body's content.
    assert response.status_code < 500 or payload.get("error") == "auth_unavailable", content
    assert isinstance(payload, dict) and "status" in payload, payload
    assert b"Traceback" not in content
    event(f"{response.status_code} {payload.get('error') or payload['status']}")
    if method == "POST" and oidc_on:
        refused = response.status_code in (401, 403)
        assert refused == (not token_valid), (payload, token_valid)
    if method == "POST" and response.status_code == 200:
        assert payload.get("status") in ("rejected", "unknown_try"), payload
    assert snapshot() == before
    assert SIDE_EFFECT_MODULE not in sys.modules
    assert not marker.exists()
    assert tasks.CALLS.total() == 0


@pytest.fixture
def fuzz_state(no_publish, tmp_path, monkeypatch, settings):
    """One real queued try that must stay untouched, and the side-effect module unimported."""
    marker = tmp_path / "imported"
    monkeypatch.setenv("I3TASKS_SIDE_EFFECT_MARKER", str(marker))
    sys.modules.pop(SIDE_EFFECT_MODULE, None)
    handle = tasks.add.delay(1, 1)
    assert handle.id < 10**6 and "tests.testapp.tasks.add" in registry
    return {"settings": settings.I3TASKS, "id": uuid.UUID(str(handle.uuid))}, snapshot(), marker
