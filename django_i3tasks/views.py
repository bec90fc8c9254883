"""HTTP endpoints. Thin: parsing and answers here, the work in ``execution`` and friends.

Errors raised as ``RequestRefused`` (authentication, invalid messages) become JSON answers
with their status and code in ``endpoint``; no view builds an error answer for them.

Every answer is JSON. The push view answers 2xx when Pub/Sub should forget the message (done,
duplicate, failed for good, or a message that can never run) and non-2xx only when it should
deliver it again (not due yet, running elsewhere, database unavailable).

Every answer other than a plain 2xx is given by design, except the 500 of an unexpected
exception: each goes through ``logs.designed_answer``, which logs it once with its reason
and keeps ``django.request`` from logging it again (at ERROR for a 5xx). The 500 is left to
``django.request``, so error reporting (``ADMINS``, Sentry) still sees real errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from . import metrics
from .auth import authenticate_beat, authenticate_push, check_token
from .beat import parse_schedule_time, run_beat
from .conf import get_queue, get_settings
from .db import unique_row
from .exceptions import RequestRefused
from .execution import Outcome, OutcomeStatus, run_message
from .logs import designed_answer, error_summary
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


def endpoint(*methods: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """CSRF-exempt, outside ``ATOMIC_REQUESTS``, JSON errors for wrong methods, bad settings
    and anything unexpected (never Django's HTML error page)."""

    def decorate(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
        @csrf_exempt
        @transaction.non_atomic_requests
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            if request.method not in methods:
                return designed_answer(
                    error(405, "method_not_allowed", f"use {' or '.join(methods)}",
                          Allow=", ".join(methods)),
                    f"method_not_allowed: {request.method}", request=request,
                    level=logging.WARNING)
            try:
                return view(request, *args, **kwargs)
            except RequestRefused as exc:
                return designed_answer(error(exc.status, exc.code, exc.detail, **exc.headers),
                                       f"{exc.code}: {exc.reason}", request=request,
                                       level=logging.WARNING)
            except ImproperlyConfigured as exc:
                # Designed (Pub/Sub delivers again once the settings are fixed), but someone
                # must fix them: the package's one line is an ERROR.
                return designed_answer(
                    error(503, "misconfigured", "django-i3tasks settings are invalid"),
                    f"misconfigured: {exc}", request=request, level=logging.ERROR)
            except DatabaseError as exc:
                # An outage answers every request this way: one WARNING each, the traceback
                # only at DEBUG.
                logger.debug("Database error in %s", view.__name__, exc_info=True)
                return designed_answer(
                    error(503, "database_unavailable", "try again later", Retry_After="10"),
                    f"database_unavailable: {error_summary(exc)}", request=request,
                    level=logging.WARNING)
            except Exception:
                # Not by design: not marked, so django.request logs the 500 at ERROR too.
                logger.exception("Unexpected error in %s", view.__name__)
                return error(500, "internal_error", "unexpected error; see the server log")

        wrapper.__name__ = view.__name__
        wrapper.__doc__ = view.__doc__
        wrapper.i3tasks_endpoint = True  # type: ignore[attr-defined] # read by bad_request
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
#: How each "deliver again" outcome is logged. A superseded try was logged at WARNING, with
#: its reason, when it was found (``lifecycle``): its answer only at DEBUG.
_NACK_LEVEL = {OutcomeStatus.NOT_DUE: logging.INFO, OutcomeStatus.RUNNING: logging.INFO,
               OutcomeStatus.OVER_LIMIT: logging.INFO, OutcomeStatus.SUPERSEDED: logging.DEBUG}


def outcome_response(outcome: Outcome, message: TaskMessage | None = None,
                     request: HttpRequest | None = None) -> JsonResponse:
    status = 200 if outcome.ack else _NACK_STATUS.get(outcome.status, 503)
    response = JsonResponse(outcome.as_json(), status=status)
    if outcome.ack:
        return response
    if outcome.retry_after is not None:
        response["Retry-After"] = str(max(1, round(outcome.retry_after)))
    reason = [f"{outcome.status.value}:"]
    if message is not None:
        reason.append(f"task={message.task_name}")
    reason.append(f"execution={outcome.execution_uuid} try={outcome.try_number}")
    if outcome.retry_after is not None:
        reason.append(f"again_in={outcome.retry_after:.1f}s")
    return designed_answer(response, " ".join(reason), request=request,
                           level=_NACK_LEVEL.get(outcome.status, logging.WARNING))


@endpoint("POST")
def push(request: HttpRequest) -> JsonResponse:
    """Pub/Sub push endpoint: run the try the message names."""
    authenticate_push(request)
    conf = get_settings()
    body = read_body(request, conf.max_push_body_bytes)
    if body is None:
        detail = f"push body is larger than {conf.max_push_body_bytes} bytes"
        return designed_answer(error(413, "body_too_large", detail),
                               f"body_too_large: {detail}", request=request,
                               level=logging.WARNING)
    # An InvalidMessage is answered (and logged once) by ``endpoint``.
    envelope = parse_push_body(body)
    message = TaskMessage.decode(envelope.data, envelope.attributes)
    try:
        queue = get_queue(message.queue_name)
    except ImproperlyConfigured:
        return error(200, "unknown_queue", f"queue {message.queue_name!r} is not configured")
    if not isinstance(queue, PushQueue):
        return error(200, "pull_queue",
                     f"queue {message.queue_name!r} is a pull queue: its worker runs it")
    return outcome_response(run_message(message, hold=hold_limit(queue.queue_name)),
                            message, request)


@endpoint("POST")
def beat(request: HttpRequest) -> JsonResponse:
    """Cloud Scheduler, every minute: due schedules, delayed tasks, lost-message recovery."""
    authenticate_beat(request)
    header = request.headers.get("X-CloudScheduler-ScheduleTime")
    try:
        slot_time = parse_schedule_time(header) if header else None
    except ValueError as exc:
        return designed_answer(error(400, "invalid_schedule_time", str(exc)),
                               f"invalid_schedule_time: {exc}", request=request,
                               level=logging.WARNING)
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
            return designed_answer(
                error(400, "invalid_uuid", "look executions up by uuid (integer ids are "
                                           "accepted only when I3TASKS.status_token is set)"),
                "invalid_uuid: an integer id without a status token", request=request)
        execution = unique_row(executions.filter(pk=int(execution_uuid)))
    else:
        try:
            wanted = UUID(execution_uuid)
        except ValueError:
            return designed_answer(error(400, "invalid_uuid", "the execution id must be a UUID"),
                                   "invalid_uuid", request=request)
        execution = unique_row(executions.filter(uuid=wanted))
    if execution is None:
        return designed_answer(error(404, "not_found", f"no execution {execution_uuid}"),
                               "not_found", request=request)
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
    """Uptime check: 200 when no try is stuck, else 503 (counts in the body).

    ``publish_failed_last_hour`` counts the publishes that failed in the process that answers
    (each instance keeps its own count); the tries they concern are in the database and the
    beat republishes them."""
    check_token(request, get_settings().status_token)
    report = health_report()
    response = JsonResponse(report.as_json(), status=200 if report.healthy else 503)
    if report.healthy:
        return response
    # The uptime check's alarm is the answer; the log says it once, at WARNING.
    return designed_answer(response, (f"unhealthy: stuck_queued={report.stuck_queued} "
                            f"stuck_running={report.stuck_running}"), request=request,
                           level=logging.WARNING)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler400`` that answers the package's endpoints in JSON (a Host outside
    ``ALLOWED_HOSTS`` is refused by Django's middleware before any view runs) and leaves every
    other URL to Django's own 400 page. ``apps`` installs it as Django's default handler when
    the project sets none; a project's own ``handler400`` can call it first."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        match = None
    if match is None or not getattr(match.func, "i3tasks_endpoint", False):
        return defaults.bad_request(request, exception)  # type: ignore[arg-type]
    if isinstance(exception, DisallowedHost):
        return error(400, "bad_host", "the Host header is not allowed")
    return error(400, "bad_request", "the request is not valid")


@endpoint("GET")
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape: counters of this process (of every worker in multiprocess mode)
    and gauges read from the database. Guarded by the status token; 501 without the
    ``[metrics]`` extra."""
    check_token(request, get_settings().status_token)
    if not metrics.available():
        return error(501, "metrics_unavailable",
                     f"prometheus-client is not installed: {metrics.EXTRA}")
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)
