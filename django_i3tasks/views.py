"""HTTP endpoints. Thin: parsing and answers here, the work in ``execution`` and friends.

Errors raised as ``RequestRefused`` (authentication, invalid messages) become JSON answers
with their status and code in ``endpoint``; no view builds an error answer for them.

Every answer is JSON. The push view answers 2xx when Pub/Sub should forget the message (done,
duplicate, failed for good, or a message that can never run) and non-2xx only when it should
deliver it again (not due yet, running elsewhere, database unavailable).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .auth import authenticate_beat, authenticate_push, check_token
from .beat import parse_schedule_time, run_beat
from .conf import get_queue, get_settings
from .exceptions import InvalidMessage, RequestRefused
from .execution import Outcome, OutcomeStatus, run_message
from .maintenance import health_report
from .messages import TaskMessage, parse_push_body
from .models import ExecutionStatus, TaskExecution
from .results import TaskResult
from .timing import hold_limit
from .types import PushQueue

logger = logging.getLogger(__name__)


def error(status: int, code: str, detail: str, **headers: str) -> JsonResponse:
    """A JSON error answer; ``headers`` by name (``Retry_After`` or ``Retry-After``)."""
    kind = "rejected" if 200 <= status < 300 else "error"
    response = JsonResponse({"status": kind, "error": code, "detail": detail}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def endpoint(*methods: str) -> Callable[[Callable[..., JsonResponse]], Callable[..., JsonResponse]]:
    """CSRF-exempt, outside ``ATOMIC_REQUESTS``, JSON errors for wrong methods, bad settings
    and anything unexpected (never Django's HTML error page)."""

    def decorate(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
        @csrf_exempt
        @transaction.non_atomic_requests
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            if request.method not in methods:
                return error(405, "method_not_allowed", f"use {' or '.join(methods)}",
                             Allow=", ".join(methods))
            try:
                return view(request, *args, **kwargs)
            except RequestRefused as exc:
                return error(exc.status, exc.code, exc.detail, **exc.headers)
            except ImproperlyConfigured as exc:
                logger.error("django-i3tasks is misconfigured: %s", exc)
                return error(503, "misconfigured", "django-i3tasks settings are invalid")
            except DatabaseError:
                logger.exception("Database error in %s", view.__name__)
                return error(503, "database_unavailable", "try again later", Retry_After="10")
            except Exception:
                logger.exception("Unexpected error in %s", view.__name__)
                return error(500, "internal_error", "unexpected error; see the server log")

        wrapper.__name__ = view.__name__
        wrapper.__doc__ = view.__doc__
        return wrapper

    return decorate


def read_body(request: HttpRequest, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` (read at most limit+1)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    body = request.read(limit + 1)
    return None if len(body) > limit else body


_NACK_STATUS = {OutcomeStatus.NOT_DUE: 503, OutcomeStatus.RUNNING: 409,
                OutcomeStatus.SUPERSEDED: 409, OutcomeStatus.OVER_LIMIT: 429}
#: Non-2xx answers that are the design, not a failure: logged once at INFO here instead of
#: by ``django.request`` at WARNING/ERROR.
_DESIGNED = {OutcomeStatus.NOT_DUE, OutcomeStatus.OVER_LIMIT}


def outcome_response(outcome: Outcome) -> JsonResponse:
    status = 200 if outcome.ack else _NACK_STATUS.get(outcome.status, 503)
    response = JsonResponse(outcome.as_json(), status=status)
    if outcome.retry_after is not None and not outcome.ack:
        response["Retry-After"] = str(max(1, round(outcome.retry_after)))
    if outcome.status in _DESIGNED:
        logger.info("Push of %s try %s answered %s (%s): %s", outcome.execution_uuid,
                    outcome.try_number, status, outcome.status.value, outcome.detail)
        response._has_been_logged = True  # type: ignore[attr-defined]
    return response


@endpoint("POST")
def push(request: HttpRequest) -> JsonResponse:
    """Pub/Sub push endpoint: run the try the message names."""
    authenticate_push(request)
    conf = get_settings()
    body = read_body(request, conf.max_push_body_bytes)
    if body is None:
        return error(413, "body_too_large",
                     f"push body is larger than {conf.max_push_body_bytes} bytes")
    try:
        envelope = parse_push_body(body)
        message = TaskMessage.decode(envelope.data, envelope.attributes)
    except InvalidMessage as exc:
        logger.warning("Push message refused (%s): %s", exc.code, exc.detail)
        raise
    try:
        queue = get_queue(message.queue_name)
    except ImproperlyConfigured:
        return error(200, "unknown_queue", f"queue {message.queue_name!r} is not configured")
    if not isinstance(queue, PushQueue):
        return error(200, "pull_queue",
                     f"queue {message.queue_name!r} is a pull queue: its worker runs it")
    return outcome_response(run_message(message, hold=hold_limit(queue.queue_name)))


@endpoint("POST")
def beat(request: HttpRequest) -> JsonResponse:
    """Cloud Scheduler, every minute: due schedules, delayed tasks, lost-message recovery."""
    authenticate_beat(request)
    header = request.headers.get("X-CloudScheduler-ScheduleTime")
    try:
        slot_time = parse_schedule_time(header) if header else None
    except ValueError as exc:
        return error(400, "invalid_schedule_time", str(exc))
    return JsonResponse(run_beat(slot_time).as_json())


@endpoint("GET")
def status(request: HttpRequest, execution_uuid: str) -> JsonResponse:
    """Status of one execution, its tries and its result.

    ``status`` is the execution's (``waiting``, ``scheduled``, ``pending``, ``success``,
    ``failed``, ``skipped``, ``cancelled``, ``expired``), ``state`` the same with
    ``running`` for a pending execution whose try runs; ``waiting_for`` says which limit a
    parked execution waits for (``concurrency:KEY``, ``rate:KEY``, else null); ``progress``
    is the latest try's ``{"current", "total", "message"}`` (or null)."""
    token = get_settings().status_token
    check_token(request, token)
    executions = TaskExecution.objects.select_related("result", "group")
    if execution_uuid.isascii() and execution_uuid.isdigit() and len(execution_uuid) <= 18:
        # 0.1 looked executions up by their integer id too. Ids are easy to guess, so only
        # behind a status token; uuids are not guessable.
        if not token:
            return error(400, "invalid_uuid", "look executions up by uuid (integer ids are "
                                              "accepted only when I3TASKS.status_token is set)")
        execution = executions.filter(pk=int(execution_uuid)).first()
    else:
        try:
            wanted = UUID(execution_uuid)
        except ValueError:
            return error(400, "invalid_uuid", "the execution id must be a UUID")
        execution = executions.filter(uuid=wanted).first()
    if execution is None:
        return error(404, "not_found", f"no execution {execution_uuid}")
    result = TaskResult.of(execution)
    return JsonResponse({
        "execution": str(result.id),
        "task": result.task_name,
        "queue": result.queue_name,
        "status": result.recorded_status,
        "state": result.status,
        "waiting_for": execution.wait_reason or None,
        "created_at": result.enqueued_at.isoformat(),
        "finished_at": _iso(result.finished_at),
        "expires_at": _iso(result.expires_at),
        "cancel_requested": result.cancel_requested,
        "progress": result.try_records[-1].progress if result.try_records else None,
        "group": str(result.group_uuid) if result.group_uuid else None,
        "tries": [
            {
                "number": t.number,
                "status": t.status,
                "started_at": _iso(t.started_at),
                "finished_at": _iso(t.finished_at),
                "error_type": t.error_type or None,
                "error_message": t.error_message or None,
                "progress": t.progress,
            }
            for t in result.try_records
        ],
        "result": None if result.recorded_status != ExecutionStatus.SUCCESS
        else {"value": result.return_value, "is_repr": result.is_repr},
    })


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@endpoint("GET")
def health(request: HttpRequest) -> JsonResponse:
    """Uptime check: 200 when no try is stuck, else 503 (counts in the body)."""
    check_token(request, get_settings().status_token)
    report = health_report()
    return JsonResponse(report.as_json(), status=200 if report.healthy else 503)
