"""Endpoint authentication helpers."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils.crypto import constant_time_compare

TOKEN_HEADER = "HTTP_X_I3TASKS_TOKEN"


def check_token(request: HttpRequest, expected: str | None) -> JsonResponse | None:
    """None when ``expected`` is unset or the ``X-I3Tasks-Token`` header matches it
    (compared in constant time; never read from the query string); else a 401/403 answer."""
    if not expected:
        return None
    from .views import error

    given = request.META.get(TOKEN_HEADER)
    if not given:
        return error(401, "unauthenticated", "missing X-I3Tasks-Token header")
    if not constant_time_compare(given, expected):
        return error(403, "forbidden", "invalid X-I3Tasks-Token")
    return None
