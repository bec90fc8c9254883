"""OIDC authentication of the push view, over real HTTP to the live server.

Tokens are signed with the keys of ``tests/oidc.py``; their certificates are served by a small
HTTP server in this process, which ``oidc_certs_url`` points at."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from django_i3tasks.models import TaskExecution, TaskExecutionResult, TaskExecutionTry
from tests.helpers import http, push_envelope
from tests.oidc import KEY_ID, OTHER_KEY, SERVICE_ACCOUNT, make_token
from tests.testapp import tasks


def state() -> tuple[dict[str, int], list[dict[str, Any]]]:
    counts = {model.__name__: model.objects.count()
              for model in (TaskExecution, TaskExecutionTry, TaskExecutionResult)}
    return counts, list(TaskExecutionTry.objects.order_by("pk").values("pk", "status", "claims"))


def queued_push(no_publish: list[Any]) -> bytes:
    """A real queued execution of ``add(2, 3)`` and the push body Pub/Sub would send for it."""
    tasks.add.delay(2, 3)
    data, attributes = no_publish[-1].encode()
    return push_envelope(data, attributes)


def push_url(live_server: Any) -> str:
    return f"{live_server.url}/i3/tasks-push/"


@pytest.mark.django_db(transaction=True)
def test_valid_token_runs_the_task(live_server, oidc, no_publish):
    body = queued_push(no_publish)
    token = make_token(push_url(live_server))
    status, headers, content = http("POST", push_url(live_server), body,
                                    {"Authorization": f"Bearer {token}"})
    assert status == 200, content
    assert json.loads(content)["status"] == "success"
    assert tasks.CALLS["add:2:3"] == 1
    assert TaskExecutionTry.objects.get().status == "success"
    assert TaskExecutionResult.objects.get().value == 5


@pytest.mark.django_db(transaction=True)
def test_configured_audience_is_required(live_server, oidc, no_publish, i3settings):
    """With ``oidc_audience`` set, the request URL no longer counts as an audience."""
    i3settings(oidc_audience="https://tasks.example.com/i3/tasks-push/")
    body = queued_push(no_publish)
    before = state()
    status, _, content = http("POST", push_url(live_server), body,
                              {"Authorization": f"Bearer {make_token(push_url(live_server))}"})
    assert status == 403 and "audience" in json.loads(content)["detail"]
    assert state() == before and tasks.CALLS.total() == 0
    token = make_token("https://tasks.example.com/i3/tasks-push/")
    status, _, content = http("POST", push_url(live_server), body,
                              {"Authorization": f"Bearer {token}"})
    assert status == 200 and json.loads(content)["status"] == "success"
    assert tasks.CALLS["add:2:3"] == 1


def _now() -> int:
    return int(time.time())


REFUSED = [
    # (id, Authorization header builder taking the expected audience, status, detail part)
    ("missing header", lambda aud: None, 401, "missing Authorization"),
    ("basic scheme", lambda aud: "Basic cHVzaDpwdXNo", 401, "scheme must be Bearer"),
    ("token without scheme", lambda aud: make_token(aud), 401, "scheme must be Bearer"),
    ("empty bearer", lambda aud: "Bearer ", 401, "empty bearer token"),
    ("not a jwt", lambda aud: "Bearer not-a-token", 403, "not a JWT"),
    ("garbage parts", lambda aud: "Bearer a.b.c", 403, "not base64url JSON"),
    ("wrong audience", lambda aud: f"Bearer {make_token('https://elsewhere.example/')}", 403,
     "audience"),
    ("wrong issuer", lambda aud: f"Bearer {make_token(aud, iss='https://evil.example')}", 403,
     "issuer"),
    ("expired", lambda aud: f"Bearer {make_token(aud, iat=_now() - 7200, exp=_now() - 3600)}",
     403, "expired"),
    ("issued in the future", lambda aud: f"Bearer {make_token(aud, iat=_now() + 3600)}", 403,
     "future"),
    ("no expiry", lambda aud: f"Bearer {make_token(aud, exp=None)}", 403, "'exp'"),
    ("signed by another key", lambda aud: f"Bearer {make_token(aud, key=OTHER_KEY)}", 403,
     "signature does not verify"),
    ("unknown key id", lambda aud: f"Bearer {make_token(aud, key=OTHER_KEY, kid='rogue')}", 403,
     "not one of Google's signing keys"),
    ("unknown service account",
     lambda aud: f"Bearer {make_token(aud, email='intruder@evil.iam.gserviceaccount.com')}",
     403, "is not allowed"),
    ("similar service account",
     lambda aud: f"Bearer {make_token(aud, email='push@i3tasks-test.iam.gserviceaccount.com')}",
     403, "is not allowed"),
    ("email not verified", lambda aud: f"Bearer {make_token(aud, email_verified=False)}", 403,
     "not verified"),
    ("email_verified is 1", lambda aud: f"Bearer {make_token(aud, email_verified=1)}", 403,
     "not verified"),
    ("no email", lambda aud: f"Bearer {make_token(aud, email=None)}", 403, "is not allowed"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name, header, status, detail", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_tokens_change_nothing(live_server, oidc, no_publish, name, header, status,
                                      detail):
    body = queued_push(no_publish)
    before = state()
    authorization = header(push_url(live_server))
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    answer, response_headers, content = http("POST", push_url(live_server), body, headers)
    assert answer == status, content
    assert response_headers["Content-Type"] == "application/json"
    payload = json.loads(content)
    assert payload["status"] == "error"
    assert payload["error"] == ("unauthenticated" if status == 401 else "forbidden")
    assert detail in payload["detail"], payload
    if authorization:
        secret = authorization.partition(" ")[2] or authorization
        assert secret.encode() not in content, "the token is echoed"
    assert state() == before
    assert tasks.CALLS.total() == 0


@pytest.mark.django_db(transaction=True)
def test_token_in_query_string_is_ignored(live_server, oidc, no_publish):
    body = queued_push(no_publish)
    before = state()
    token = make_token(push_url(live_server))
    for query in (f"?access_token={token}", f"?token={token}", f"?authorization=Bearer+{token}"):
        status, _, content = http("POST", push_url(live_server) + query, body)
        assert status == 401, content
    assert state() == before and tasks.CALLS.total() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failure", ["server error", "not json", "not certificates", "down"])
def test_certificate_fetch_failure_answers_503(live_server, oidc, no_publish, i3settings,
                                               failure):
    if failure == "server error":
        oidc.status = 500
    elif failure == "not json":
        oidc.body = b"<html>maintenance</html>"
    elif failure == "not certificates":
        oidc.body = json.dumps({KEY_ID: "not a certificate"}).encode()
    else:
        i3settings(oidc_certs_url="http://127.0.0.1:9/certs")  # discard port: nothing listens
    body = queued_push(no_publish)
    before = state()
    token = make_token(push_url(live_server))
    status, headers, content = http("POST", push_url(live_server), body,
                                    {"Authorization": f"Bearer {token}"})
    assert status == 503, content
    assert json.loads(content)["error"] == "auth_unavailable"
    assert headers["Retry-After"] == "10"
    assert state() == before and tasks.CALLS.total() == 0


@pytest.mark.django_db(transaction=True)
def test_emails_given_as_a_string_fail_closed(live_server, oidc, no_publish, i3settings):
    """A bare string must not match by substring: the view refuses everything (503)."""
    i3settings(oidc_service_account_emails="x" + SERVICE_ACCOUNT)
    body = queued_push(no_publish)
    status, _, content = http("POST", push_url(live_server), body,
                              {"Authorization": f"Bearer {make_token(push_url(live_server))}"})
    assert status == 503 and json.loads(content)["error"] == "misconfigured"
    assert tasks.CALLS.total() == 0


@pytest.mark.django_db(transaction=True)
def test_open_when_not_configured(live_server, no_publish):
    body = queued_push(no_publish)
    status, _, content = http("POST", push_url(live_server), body)
    assert status == 200 and json.loads(content)["status"] == "success"


@pytest.mark.django_db(transaction=True)
def test_certificates_are_fetched_once_for_many_pushes(live_server, oidc, no_publish):
    token = make_token(push_url(live_server))
    for _ in range(3):
        status, _, content = http("POST", push_url(live_server), queued_push(no_publish),
                                  {"Authorization": f"Bearer {token}"})
        assert status == 200, content
    assert oidc.hits == 1
    assert tasks.CALLS["add:2:3"] == 3
