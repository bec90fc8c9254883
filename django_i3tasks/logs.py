"""What the package logs, and how it keeps production logs quiet (``docs/logging.md``).

- One line per try on ``django_i3tasks.tasks``: INFO for a success or a cancel, WARNING for a
  failure that is retried, ERROR for a failure for good. Its start, and the value it
  returned, only at DEBUG. The lines come from receivers of the package's signals, connected
  when Django is ready (``apps``), so the push view and the pull worker write the same ones;
  a project that wants other lines connects its own receivers the same way.
- Designed answers on ``django_i3tasks.answers`` (``designed_answer``): the non-2xx answers
  the endpoints give on purpose are logged here once, never by ``django.request`` at ERROR.
- Google's client loggers into the project's handlers (``route_google_loggers``).

Arguments, return values and error messages (which often quote arguments) are only ever
logged at DEBUG.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from . import signals

logger = logging.getLogger("django_i3tasks.tasks")
answers_logger = logging.getLogger("django_i3tasks.answers")

#: The loggers of the Pub/Sub client that ``route_google_loggers`` routes by default.
GOOGLE_LOGGERS = ("google.cloud.pubsub_v1", "google.api_core")

_Response = TypeVar("_Response")


# --- one line per try ---------------------------------------------------------------------


def on_started(sender: Any, *, task_name: str, execution_uuid: Any, try_number: int,
               **_: Any) -> None:
    logger.debug("task=%s execution=%s try=%s outcome=started",
                 task_name, execution_uuid, try_number)


def on_finished(sender: Any, *, task_name: str, execution_uuid: Any, try_number: int,
                status: str, duration: float, error_type: str, retry_in: float | None,
                return_value: Any = None, **_: Any) -> None:
    """The try's one line: task, execution, try, outcome, duration (and the error's type,
    never its message)."""
    line = "task=%s execution=%s try=%s outcome=%s duration=%.3fs"
    args: tuple[Any, ...] = (task_name, execution_uuid, try_number, status, duration)
    if status == "success":
        logger.info(line, *args)
        logger.debug("task=%s execution=%s try=%s returned %r",
                     task_name, execution_uuid, try_number, return_value)
    elif status == "retry_scheduled":
        logger.warning(line + " error=%s retry_in=%.1fs", *args, error_type, retry_in or 0.0)
    elif status == "cancelled":
        logger.info(line + " error=%s", *args, error_type or "-")
    else:
        logger.error(line + " error=%s", *args, error_type)


def connect() -> None:
    # The dispatch_uids start with signals.PACKAGE_UID: the lifecycle knows these receivers
    # write nothing to the database and do not raise.
    signals.task_started.connect(on_started, dispatch_uid="django_i3tasks.logs.started")
    signals.task_finished.connect(on_finished, dispatch_uid="django_i3tasks.logs.finished")


# --- designed answers ---------------------------------------------------------------------


def designed_answer(response: _Response, reason: str, *, request: Any = None,
                    level: int = logging.INFO) -> _Response:
    """Log ``response`` once as an answer given by design, and mark it as logged.

    Pub/Sub and Cloud Scheduler deliver again after any non-2xx answer, so the endpoints
    answer non-2xx on purpose (``not_due``, ``running``, ``database_unavailable``...).
    Django's request handler logs every 4xx at WARNING and every 5xx at ERROR on
    ``django.request`` (with ``ADMINS``: an e-mail each; with Sentry: an event each) unless
    the response carries ``_has_been_logged = True``, the mark its own ``log_response`` sets
    (Django 4.2 to 6.x). This writes one line on ``django_i3tasks.answers`` at ``level``
    (INFO for "come back later", WARNING for a refused or failing request) with ``reason``,
    and sets that mark. Every designed answer goes through here; an unexpected exception
    (500) does not, and still reaches ``django.request`` at ERROR.

    ``reason`` must not quote task arguments. Returns ``response``, so a view can write
    ``return designed_answer(JsonResponse(...), "not_due: ...", request=request)``.
    """
    if getattr(response, "_has_been_logged", False):
        return response
    status = getattr(response, "status_code", 0)
    if request is not None:
        answers_logger.log(level, "%s %s %s %s", request.method, request.path, status,
                           reason, extra={"status_code": status, "request": request})
    else:
        answers_logger.log(level, "%s %s", status, reason, extra={"status_code": status})
    # The attribute Django's log_response reads; setattr: the stubs do not declare it.
    setattr(response, "_has_been_logged", True)  # noqa: B010
    return response


def error_summary(exc: BaseException) -> str:
    """``Type: first line of the message``, for a WARNING about an infrastructure error (a
    database outage) whose traceback would repeat on every request; the traceback is
    logged at DEBUG by the caller."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --- Google's loggers ---------------------------------------------------------------------


class ToProjectHandlers(logging.Handler):
    """Hands a record to the root logger's handlers, the project's (``LOGGING["root"]``).

    Google's client library sets ``propagate = False`` on the ``google`` logger when it
    builds its first client, unless the project configured that logger, so the warnings of
    its child loggers reach no handler of the project (Python prints them bare on stderr).
    """

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


def route_google_loggers(names: Iterable[str] = GOOGLE_LOGGERS) -> list[str]:
    """Route Google's client loggers ``names`` into the project's (root) handlers; the names
    routed.

    A logger the project configured itself (handlers of its own, or ``propagate = False``)
    is left alone; calling this again changes nothing. A routed logger stops propagating to
    ``google``, so a record never reaches the project twice, whatever the library does to
    ``google``. Levels are the project's: a routed logger without a level of its own writes
    what the root logger lets through (WARNING by default). Nothing is routed when the
    project gave the ``google`` logger handlers: its records already go there.
    """
    if logging.getLogger("google").handlers:
        return []
    routed = []
    for name in names:
        target = logging.getLogger(name)
        ours = [h for h in target.handlers if isinstance(h, ToProjectHandlers)]
        if not ours and (target.handlers or not target.propagate):
            continue
        if not ours:
            target.addHandler(ToProjectHandlers())
        target.propagate = False
        routed.append(name)
    return routed
