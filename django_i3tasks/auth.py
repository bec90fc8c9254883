"""Endpoint authentication.

Credentials are read from headers only (never the query string, which ends up in access logs)
and shared secrets are compared in constant time.

Push (and optionally beat) requests carry a Google-signed OIDC ID token in
``Authorization: Bearer``. It is verified here with google-auth's RSA verifier against
Google's public certificates, which are fetched over HTTPS and cached in-process. The claims
are checked by this module so that every refusal says precisely why, without echoing the token.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import math
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare
from google.auth.crypt import RSAVerifier

from .conf import get_settings
from .exceptions import (
    AuthenticationNotConfigured,
    AuthError,
    BadHost,
    CertificatesUnavailable,
    Forbidden,
    TokenError,
    Unauthenticated,
)

__all__ = [
    "CertificateCache", "CertificatesUnavailable", "TokenError", "authenticate_beat",
    "authenticate_push", "check_header_token", "check_token", "open_endpoints_allowed",
    "verify_oidc_token",
]
logger = logging.getLogger(__name__)

TOKEN_HEADER = "HTTP_X_I3TASKS_TOKEN"
BEAT_TOKEN_HEADER = "HTTP_X_I3TASKS_BEAT_TOKEN"
AUTHORIZATION_HEADER = "HTTP_AUTHORIZATION"

#: Issuers Google uses for the ID tokens of service accounts (Pub/Sub, Cloud Scheduler).
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
#: Tolerated clock difference between Google and this host when checking iat/exp.
CLOCK_SKEW_SECONDS = 30
#: Longer bearer values are refused unparsed (Google ID tokens are about 1 KB).
MAX_TOKEN_CHARS = 8 * 1024

_CERTS_TTL_DEFAULT = 3600.0
_CERTS_TTL_BOUNDS = (60.0, 86400.0)
#: An unknown key id refetches the certificates (key rotation), at most this often.
_CERTS_REFETCH_SECONDS = 60.0
_CERTS_TIMEOUT_SECONDS = 5.0
_CERTS_RETRY_AFTER_FAILURE_SECONDS = 5.0
_CERTS_MAX_BYTES = 1024 * 1024
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.IGNORECASE)


def check_header_token(
    request: HttpRequest, expected: str | None, header: str = TOKEN_HEADER
) -> None:
    """Nothing when ``expected`` is unset or the header matches it; else ``Unauthenticated``
    (no header) or ``Forbidden`` (a wrong one)."""
    if not expected:
        return
    name = _header_name(header)
    given = request.META.get(header)
    if not given:
        raise Unauthenticated(f"missing {name} header")
    if not constant_time_compare(given, expected):
        raise Forbidden(f"invalid {name}")


def _header_name(meta_key: str) -> str:
    return meta_key.removeprefix("HTTP_").replace("_", "-").title()


def check_token(request: HttpRequest, expected: str | None) -> None:
    """Status and health endpoints: the ``X-I3Tasks-Token`` header, or (as 0.1 sent it)
    ``Authorization: Bearer <token>``. Never a query string: it ends up in access logs.
    Without a token they answer anyone; under ``DEBUG=False`` the first such answer of the
    process is logged as a warning (the system check W021 says it at startup too)."""
    if not expected:
        _warn_open_once()
        return
    scheme, _, bearer = request.META.get(AUTHORIZATION_HEADER, "").strip().partition(" ")
    if (not request.META.get(TOKEN_HEADER) and scheme.lower() == "bearer"
            and constant_time_compare(bearer.strip(), expected)):
        return
    check_header_token(request, expected, TOKEN_HEADER)


_warned_open = threading.Event()


def _warn_open_once() -> None:
    if not settings.DEBUG and not _warned_open.is_set():
        _warned_open.set()
        logger.warning("The status and health endpoints answer without a token: set "
                       "I3TASKS.status_token (status returns results and error messages).")


# --- OIDC ---------------------------------------------------------------------------------


@dataclass
class _Certificates:
    verifiers: dict[str, RSAVerifier]
    fetched_at: float
    expires_at: float


def _clock() -> float:
    return time.monotonic()


class CertificateCache:
    """Signing certificates per URL, fetched on first use and again when they expire.

    Pub/Sub sends a token with every push, so fetching per request would add a round trip to
    Google to each task. One lock serialises fetches: a burst of pushes after expiry makes one
    request, not one each.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Certificates] = {}
        self._failures: dict[str, float] = {}

    def verifier(self, url: str, key_id: str) -> RSAVerifier | None:
        """The verifier of ``key_id``, or None when the URL does not publish that key."""
        with self._lock:
            now = _clock()
            entry = self._entries.get(url)
            if entry is None or now >= entry.expires_at or (
                key_id not in entry.verifiers and now - entry.fetched_at >= _CERTS_REFETCH_SECONDS
            ):
                entry = self._entries[url] = self._fetch(url, now)
            return entry.verifiers.get(key_id)

    def _fetch(self, url: str, now: float) -> _Certificates:
        """Fetch, failing fast for a few seconds after a failure so that waiting requests do
        not each sit through a timeout while Google is unreachable."""
        failed_at = self._failures.get(url)
        if failed_at is not None and now - failed_at < _CERTS_RETRY_AFTER_FAILURE_SECONDS:
            raise CertificatesUnavailable(f"fetching {url} failed moments ago")
        try:
            entry = _fetch_certificates(url)
        except CertificatesUnavailable:
            self._failures[url] = now
            raise
        self._failures.pop(url, None)
        return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._failures.clear()


def _fetch_certificates(url: str) -> _Certificates:
    """GET ``url`` (``{"key id": "PEM certificate", ...}``) and parse every certificate."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CertificatesUnavailable(f"{url!r} is not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=_CERTS_TIMEOUT_SECONDS) as response:
            body = response.read(_CERTS_MAX_BYTES + 1)
            cache_control = response.headers.get("Cache-Control", "")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise CertificatesUnavailable(f"fetching {url} failed ({type(exc).__name__})") from exc
    if len(body) > _CERTS_MAX_BYTES:
        raise CertificatesUnavailable(f"{url} answered more than {_CERTS_MAX_BYTES} bytes")
    try:
        certs = json.loads(body)
        if not isinstance(certs, dict) or not certs:
            raise ValueError("not a non-empty JSON object")
        verifiers = {str(kid): RSAVerifier.from_string(pem) for kid, pem in certs.items()}
    except (ValueError, TypeError, RecursionError) as exc:
        raise CertificatesUnavailable(f"{url} did not answer PEM certificates by key id") from exc
    now = _clock()
    return _Certificates(verifiers, fetched_at=now, expires_at=now + _max_age(cache_control))


def _max_age(cache_control: str) -> float:
    """Seconds to keep the certificates: Cache-Control max-age, bounded; else an hour."""
    match = _MAX_AGE.search(cache_control or "")
    if match is None:
        return _CERTS_TTL_DEFAULT
    low, high = _CERTS_TTL_BOUNDS
    return min(high, max(low, float(match.group(1))))


#: The process-wide certificate cache used by the endpoints.
certificates = CertificateCache()


def _b64_json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise TokenError(f"token {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"token {what} is not a JSON object")
    return value


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signed part and signature of a compact JWS (nothing verified yet)."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TokenError("token is not a JWT")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenError("token is not a JWT (expected three dot-separated parts)")
    header = _b64_json(parts[0], "header")
    claims = _b64_json(parts[1], "payload")
    try:
        signature = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("token signature is not base64url") from None
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:117]}..."


def verify_oidc_token(
    token: str, *, audience: str, emails: Collection[str], certs_url: str,
    cache: CertificateCache | None = None,
) -> Mapping[str, Any]:
    """The verified claims of a Google-signed ID token sent by one of ``emails``.

    Raises ``TokenError`` (refuse the request) or ``CertificatesUnavailable`` (try later).
    The signature is checked before any claim, so claim errors only concern genuine tokens.
    """
    header, claims, signed, signature = _split(token)
    if header.get("alg") != "RS256":
        raise TokenError(f"token algorithm {_short(header.get('alg'))} is not RS256")
    key_id = header.get("kid")
    if not isinstance(key_id, str) or not key_id:
        raise TokenError("token header has no key id (kid)")
    verifier = (cache or certificates).verifier(certs_url, key_id)
    if verifier is None:
        raise TokenError(f"token key id {_short(key_id)} is not one of Google's signing keys")
    if not verifier.verify(signed, signature):
        raise TokenError("token signature does not verify")
    _check_claims(claims, audience=audience, emails=emails)
    return claims


def _number(claims: Mapping[str, Any], name: str) -> int | float:
    """A NumericDate claim; compared as is, since a huge int would overflow ``float()``."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise TokenError(f"token has no numeric {name!r} claim")
    return value


def _check_claims(claims: Mapping[str, Any], *, audience: str, emails: Collection[str]) -> None:
    now = time.time()
    if _number(claims, "exp") < now - CLOCK_SKEW_SECONDS:
        raise TokenError("token has expired")
    if _number(claims, "iat") > now + CLOCK_SKEW_SECONDS:
        raise TokenError("token is issued in the future")
    if "nbf" in claims and _number(claims, "nbf") > now + CLOCK_SKEW_SECONDS:
        raise TokenError("token is not valid yet (nbf)")
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise TokenError(f"token issuer {_short(claims.get('iss'))} is not Google")
    given = claims.get("aud")
    audiences = given if isinstance(given, list) else [given]
    if audience not in audiences:
        raise TokenError(f"token audience {_short(given)} is not the expected {audience!r}")
    email = claims.get("email")
    if not isinstance(email, str) or email not in emails:
        raise TokenError(f"service account {_short(email)} is not allowed")
    verified = claims.get("email_verified")
    if verified is not True and verified != "true":
        raise TokenError(f"email {email!r} of the token is not verified")


def _oidc_emails(emails: Any, endpoint: str) -> tuple[str, ...]:
    """The configured emails; a bare string is refused so it cannot match by substring."""
    if isinstance(emails, str) or not isinstance(emails, tuple | list) or not all(
        isinstance(email, str) for email in emails
    ):
        raise ImproperlyConfigured(
            f"I3TASKS.oidc_{endpoint}_service_account_emails (or oidc_service_account_emails) "
            "must be a tuple of str; see 'manage.py check'."
        )
    return tuple(emails)


def open_endpoints_allowed() -> bool:
    """Whether push and beat may answer without authentication: ``DEBUG=True`` or
    ``I3TASKS.allow_unauthenticated=True``. Otherwise an endpoint whose authentication is not
    configured refuses everything, so a forgotten setting fails closed."""
    return bool(settings.DEBUG) or get_settings().allow_unauthenticated is True


def _refuse_unconfigured(endpoint: str, setting: str) -> None:
    if not open_endpoints_allowed():
        raise AuthenticationNotConfigured(
            f"the {endpoint} endpoint has no authentication configured: set {setting}, or "
            "I3TASKS.allow_unauthenticated=True when something in front of the app "
            "authenticates (see 'manage.py check')"
        )


def _bearer_token(request: HttpRequest) -> str:
    """The token of ``Authorization: Bearer <token>``; ``Unauthenticated`` without one."""
    value = request.META.get(AUTHORIZATION_HEADER, "")
    if not value:
        raise Unauthenticated("missing Authorization header (an OIDC bearer token)",
                              bearer=True)
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("Authorization scheme must be Bearer", bearer=True)
    if not token.strip():
        raise Unauthenticated("Authorization header has an empty bearer token", bearer=True)
    return token.strip()


def _expected_audience(request: HttpRequest, configured: str | None) -> str:
    """``I3TASKS.oidc_audience``, else this request's absolute URL without its query string
    (Pub/Sub's default audience is the push endpoint URL; a query string would let the caller
    choose the audience). Behind a TLS-terminating proxy, the absolute URL is only right with
    ``SECURE_PROXY_SSL_HEADER``; setting ``oidc_audience`` avoids the guess."""
    return configured or request.build_absolute_uri(request.path)


def verify_request_oidc(request: HttpRequest, endpoint: str, emails: Any) -> None:
    """Nothing when the request carries a valid token of an allowed service account; else
    ``Unauthenticated``, ``Forbidden`` (``TokenError``), ``BadHost`` or, when Google's
    certificates cannot be had, ``CertificatesUnavailable`` (503: deliver again later)."""
    conf = get_settings()
    allowed = _oidc_emails(emails, endpoint)
    token = _bearer_token(request)
    try:
        audience = _expected_audience(request, conf.oidc_audience)
        verify_oidc_token(token, audience=audience, emails=allowed,
                          certs_url=conf.oidc_certs_url)
    except DisallowedHost:
        raise BadHost("the Host header is not allowed") from None
    except CertificatesUnavailable as exc:
        # The caller is told little; the view's one log line (WARNING) says why.
        raise CertificatesUnavailable(
            "OIDC certificates are unavailable",
            reason=f"cannot verify {endpoint} tokens: {exc.detail}") from None


def authenticate_push(request: HttpRequest) -> None:
    """Push endpoint: nothing when the caller may push; else an ``AuthError``.

    Verification is on when ``oidc_push_service_account_emails`` (or the shared
    ``oidc_service_account_emails``) is set. Without it the endpoint refuses everything under
    ``DEBUG=False``, unless ``allow_unauthenticated`` opens it (it then relies on message
    signatures and network controls; the system check ``django_i3tasks.W001`` says so).
    """
    emails = get_settings().push_emails
    if emails:
        verify_request_oidc(request, "push", emails)
    else:
        _refuse_unconfigured("push", "I3TASKS.oidc_push_service_account_emails")


def authenticate_beat(request: HttpRequest) -> None:
    """Beat endpoint: the ``X-I3Tasks-Beat-Token`` secret or a valid OIDC token (Cloud
    Scheduler can send either). When neither is configured it is open only where
    ``open_endpoints_allowed()``. Raises an ``AuthError`` when the caller may not call it."""
    conf = get_settings()
    emails = conf.beat_emails
    secret, oidc = conf.beat_token, bool(emails)
    if not secret and not oidc:
        _refuse_unconfigured(
            "beat", "I3TASKS.oidc_beat_service_account_emails or I3TASKS.beat_token")
        return
    has_token = bool(request.META.get(AUTHORIZATION_HEADER))
    if secret and request.META.get(BEAT_TOKEN_HEADER):
        try:
            check_header_token(request, secret, BEAT_TOKEN_HEADER)
            return
        except AuthError:
            if not (oidc and has_token):
                raise
    if oidc and (has_token or not secret):
        verify_request_oidc(request, "beat", emails)
        return
    if not oidc:
        check_header_token(request, secret, BEAT_TOKEN_HEADER)
        return
    raise Unauthenticated(
        f"send the {_header_name(BEAT_TOKEN_HEADER)} header or an OIDC bearer token",
        bearer=True,
    )
