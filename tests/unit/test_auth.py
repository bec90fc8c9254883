"""OIDC authentication of the push view (real HTTP) and of the beat (RequestFactory).

Tokens are signed here with locally generated RSA keys; their certificates are served by a
small HTTP server in this process, which ``oidc_certs_url`` points at, exactly as Google's
``https://www.googleapis.com/oauth2/v1/certs`` serves its own.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.test import RequestFactory
from google.auth import crypt, jwt

from django_i3tasks import auth
from django_i3tasks.exceptions import AuthError
from django_i3tasks.models import TaskExecution, TaskExecutionResult, TaskExecutionTry
from tests.helpers import http, push_envelope
from tests.testapp import tasks

SERVICE_ACCOUNT = "pubsub-push@i3tasks-test.iam.gserviceaccount.com"
KEY_ID = "test-key-1"
BEAT_SECRET = "beat-secret-7f3a9c"


# --- keys, certificates and tokens ---------------------------------------------------------


def _private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _self_signed_cert(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "i3tasks test signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


GOOD_KEY = _private_key()
OTHER_KEY = _private_key()
CERTS = {KEY_ID: _self_signed_cert(GOOD_KEY)}


def make_token(audience: Any, *, key: rsa.RSAPrivateKey = GOOD_KEY, kid: str = KEY_ID,
               **claims: Any) -> str:
    """A Google-style ID token; ``claims`` override or (with None) remove standard claims."""
    now = int(time.time())
    payload = {
        "aud": audience, "iss": "https://accounts.google.com", "iat": now, "exp": now + 3600,
        "email": SERVICE_ACCOUNT, "email_verified": True, "sub": "1234567890",
        "azp": "1234567890",
    }
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    signer = crypt.RSASigner(key, key_id=kid)
    return jwt.encode(signer, payload).decode()


class CertServer:
    """Serves ``body`` at any path; counts requests. Tests change body/status/headers."""

    def __init__(self) -> None:
        self.reset()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server calls do_<METHOD>
                with server._lock:
                    server.hits += 1
                time.sleep(server.delay)
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                for name, value in server.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/oauth2/v1/certs"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.body: bytes = json.dumps(CERTS).encode()
        self.status = 200
        self.headers: dict[str, str] = {"Cache-Control": "public, max-age=3600"}
        self.delay = 0.0
        self.hits = 0

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def cert_server() -> Iterator[CertServer]:
    server = CertServer()
    yield server
    server.stop()


@pytest.fixture
def oidc(cert_server: CertServer, i3settings: Callable[..., Any]) -> Iterator[CertServer]:
    """OIDC on for the push and beat endpoints, certificates from the local server."""
    cert_server.reset()
    auth.certificates.clear()
    i3settings(oidc_service_account_emails=(SERVICE_ACCOUNT,), oidc_certs_url=cert_server.url,
               oidc_audience=None)
    yield cert_server
    auth.certificates.clear()


# --- push view, over real HTTP -------------------------------------------------------------


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


# --- the certificate cache -----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(auth, "_clock", fake)
    return fake


def verify(server: CertServer, token: str, cache: auth.CertificateCache) -> Any:
    return auth.verify_oidc_token(token, audience="aud", emails=(SERVICE_ACCOUNT,),
                                  certs_url=server.url, cache=cache)


@pytest.mark.parametrize("cache_control, ttl", [
    ("public, max-age=120, must-revalidate", 120),
    ("no-cache", 3600),  # no max-age: one hour
    ("max-age=5", 60),  # bounded below, so a bad header cannot make every push fetch
])
def test_cache_keeps_certificates_for_max_age(cert_server, clock, cache_control, ttl):
    cert_server.reset()
    cert_server.headers = {"Cache-Control": cache_control}
    cache = auth.CertificateCache()
    token = make_token("aud")
    verify(cert_server, token, cache)
    clock.now += ttl - 1
    verify(cert_server, token, cache)
    assert cert_server.hits == 1
    clock.now += 2
    verify(cert_server, token, cache)
    assert cert_server.hits == 2


def test_unknown_key_refetches_at_most_once_a_minute(cert_server, clock):
    """Key rotation: a new kid refetches, but random kids cannot make us hammer Google."""
    cert_server.reset()
    cache = auth.CertificateCache()
    verify(cert_server, make_token("aud"), cache)
    rogue = make_token("aud", kid="rotated-key", key=OTHER_KEY)
    clock.now += 61
    for _ in range(5):
        with pytest.raises(auth.TokenError, match="not one of Google's signing keys"):
            verify(cert_server, rogue, cache)
    assert cert_server.hits == 2
    cert_server.body = json.dumps({**CERTS, "rotated-key": _self_signed_cert(OTHER_KEY)}).encode()
    clock.now += 61
    assert verify(cert_server, rogue, cache)["email"] == SERVICE_ACCOUNT
    assert cert_server.hits == 3


def test_failed_fetch_fails_fast_then_retries(cert_server, clock):
    cert_server.reset()
    cert_server.status = 500
    cache = auth.CertificateCache()
    token = make_token("aud")
    with pytest.raises(auth.CertificatesUnavailable):
        verify(cert_server, token, cache)
    with pytest.raises(auth.CertificatesUnavailable, match="moments ago"):
        verify(cert_server, token, cache)
    assert cert_server.hits == 1
    cert_server.status = 200
    clock.now += 6
    assert verify(cert_server, token, cache)["aud"] == "aud"
    assert cert_server.hits == 2


def test_concurrent_first_use_fetches_once(cert_server):
    cert_server.reset()
    cert_server.delay = 0.3
    cache = auth.CertificateCache()
    token = make_token("aud")
    results: list[Any] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(verify(cert_server, token, cache)["email"])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [SERVICE_ACCOUNT] * 16
    assert cert_server.hits == 1


def test_certs_url_must_be_http(cert_server):
    with pytest.raises(auth.CertificatesUnavailable, match="not an http"):
        auth.verify_oidc_token(make_token("aud"), audience="aud", emails=(SERVICE_ACCOUNT,),
                               certs_url="file:///etc/passwd", cache=auth.CertificateCache())


def test_audience_list_and_short_issuer_are_accepted(cert_server):
    cert_server.reset()
    token = make_token(["other", "aud"], iss="accounts.google.com")
    claims = verify(cert_server, token, auth.CertificateCache())
    assert claims["iss"] == "accounts.google.com"


# --- beat -------------------------------------------------------------------------------------

BEAT_PATH = "/i3/tasks-beat/"
BEAT_URL = f"http://testserver{BEAT_PATH}"


def beat_request(path: str = BEAT_PATH, **headers: str) -> Any:
    return RequestFactory().post(path, data=b"", content_type="application/json", **headers)


def beat_answer(request: Any) -> tuple[int, str] | None:
    try:
        auth.authenticate_beat(request)
    except AuthError as denied:
        return denied.status, denied.code
    return None


def test_beat_is_open_when_nothing_is_configured(i3settings):
    i3settings(beat_token=None, oidc_service_account_emails=())
    assert beat_answer(beat_request()) is None


@pytest.mark.parametrize("headers, path, expected", [
    ({"HTTP_X_I3TASKS_BEAT_TOKEN": BEAT_SECRET}, BEAT_PATH, None),
    ({"HTTP_X_I3TASKS_BEAT_TOKEN": BEAT_SECRET + "x"}, BEAT_PATH, (403, "forbidden")),
    ({"HTTP_X_I3TASKS_BEAT_TOKEN": ""}, BEAT_PATH, (401, "unauthenticated")),
    ({}, BEAT_PATH, (401, "unauthenticated")),
    ({}, f"{BEAT_PATH}?beat_token={BEAT_SECRET}", (401, "unauthenticated")),
    ({}, f"{BEAT_PATH}?X-I3Tasks-Beat-Token={BEAT_SECRET}", (401, "unauthenticated")),
    ({"HTTP_AUTHORIZATION": f"Bearer {BEAT_SECRET}"}, BEAT_PATH, (401, "unauthenticated")),
], ids=["right", "wrong", "empty", "missing", "query string", "query string header name",
        "secret as bearer"])
def test_beat_shared_secret(i3settings, headers, path, expected):
    i3settings(beat_token=BEAT_SECRET, oidc_service_account_emails=())
    assert beat_answer(beat_request(path, **headers)) == expected


def test_beat_oidc_only(oidc, i3settings):
    i3settings(beat_token=None)
    valid = f"Bearer {make_token(BEAT_URL)}"
    assert beat_answer(beat_request(HTTP_AUTHORIZATION=valid)) is None
    push_audience = f"Bearer {make_token('http://testserver/i3/tasks-push/')}"
    assert beat_answer(beat_request(HTTP_AUTHORIZATION=push_audience)) == (403, "forbidden")
    forged = f"Bearer {make_token(BEAT_URL, key=OTHER_KEY)}"
    assert beat_answer(beat_request(HTTP_AUTHORIZATION=forged)) == (403, "forbidden")
    assert beat_answer(beat_request()) == (401, "unauthenticated")
    assert beat_answer(beat_request(f"{BEAT_PATH}?access_token={make_token(BEAT_URL)}")) == (
        401, "unauthenticated")
    # A shared secret is no credential when no beat_token is configured.
    assert beat_answer(beat_request(HTTP_X_I3TASKS_BEAT_TOKEN=BEAT_SECRET)) == (
        401, "unauthenticated")


def test_beat_accepts_either_credential_when_both_are_configured(oidc, i3settings):
    i3settings(beat_token=BEAT_SECRET, oidc_audience="https://app.example/i3/tasks-beat/")
    valid = f"Bearer {make_token('https://app.example/i3/tasks-beat/')}"
    invalid = f"Bearer {make_token('https://app.example/i3/tasks-beat/', iss='evil')}"
    secret, wrong = BEAT_SECRET, BEAT_SECRET[::-1]
    cases = [
        ({"HTTP_X_I3TASKS_BEAT_TOKEN": secret}, None),
        ({"HTTP_AUTHORIZATION": valid}, None),
        ({"HTTP_X_I3TASKS_BEAT_TOKEN": wrong, "HTTP_AUTHORIZATION": valid}, None),
        ({"HTTP_X_I3TASKS_BEAT_TOKEN": secret, "HTTP_AUTHORIZATION": invalid}, None),
        ({"HTTP_X_I3TASKS_BEAT_TOKEN": wrong}, (403, "forbidden")),
        ({"HTTP_AUTHORIZATION": invalid}, (403, "forbidden")),
        ({"HTTP_X_I3TASKS_BEAT_TOKEN": wrong, "HTTP_AUTHORIZATION": invalid}, (403, "forbidden")),
        ({"HTTP_AUTHORIZATION": f"Bearer {make_token(BEAT_URL)}"}, (403, "forbidden")),
        ({}, (401, "unauthenticated")),
    ]
    for headers, expected in cases:
        assert beat_answer(beat_request(**headers)) == expected, headers
    with pytest.raises(AuthError) as denied:
        auth.authenticate_beat(beat_request())
    assert "X-I3Tasks-Beat-Token" in denied.value.detail
    assert "OIDC" in denied.value.detail
