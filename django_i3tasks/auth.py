"""Endpoint authentication.

Tokens are read from headers only (never the query string) and compared in constant time.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils.crypto import constant_time_compare

TOKEN_HEADER = "HTTP_X_I3TASKS_TOKEN"
BEAT_TOKEN_HEADER = "HTTP_X_I3TASKS_BEAT_TOKEN"


def _denied(status: int, code: str, detail: str) -> JsonResponse:
    from .views import error

    return error(status, code, detail)


def check_header_token(
    request: HttpRequest, expected: str | None, header: str = TOKEN_HEADER
) -> JsonResponse | None:
    """None when ``expected`` is unset or the header matches it; else a 401/403 answer."""
    if not expected:
        return None
    name = header.removeprefix("HTTP_").replace("_", "-").title()
    given = request.META.get(header)
    if not given:
        return _denied(401, "unauthenticated", f"missing {name} header")
    if not constant_time_compare(given, expected):
        return _denied(403, "forbidden", f"invalid {name}")
    return None


def check_token(request: HttpRequest, expected: str | None) -> JsonResponse | None:
    """Status and health endpoints: the ``X-I3Tasks-Token`` header."""
    return check_header_token(request, expected, TOKEN_HEADER)


def authenticate_push(request: HttpRequest) -> JsonResponse | None:
    """Push endpoint: None when the caller may push; else a 401/403 answer.

    OIDC verification of Pub/Sub's push token is not implemented yet (issue 6); until then
    the endpoint relies on message signatures (see ``messages``) and network controls.
    """
    return None


def authenticate_beat(request: HttpRequest) -> JsonResponse | None:
    """Beat endpoint: the shared secret in ``X-I3Tasks-Beat-Token`` when ``beat_token`` is set."""
    from .conf import get_settings

    return check_header_token(request, get_settings().beat_token, BEAT_TOKEN_HEADER)
