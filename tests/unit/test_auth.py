"""OIDC tokens and the certificate cache, and the beat's authentication (RequestFactory).

Tokens are signed with the locally generated RSA keys of ``tests/oidc.py``; their certificates
are served by a small HTTP server in this process, which ``oidc_certs_url`` points at, exactly
as Google's ``https://www.googleapis.com/oauth2/v1/certs`` serves its own. The push view's
authentication over real HTTP is in ``tests/e2e/test_auth_push.py``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.test import RequestFactory

from django_i3tasks import auth
from django_i3tasks.exceptions import AuthError
from tests.oidc import CERTS, OTHER_KEY, SERVICE_ACCOUNT, CertServer, make_token, self_signed_cert

BEAT_SECRET = "beat-secret-7f3a9c"


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
    cert_server.body = json.dumps({**CERTS, "rotated-key": self_signed_cert(OTHER_KEY)}).encode()
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
