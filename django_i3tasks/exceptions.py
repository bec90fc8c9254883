"""Every error django-i3tasks raises, under one base class: ``except I3TasksError`` catches
them all.

Errors that were raised as ``TypeError``/``ValueError`` before this module existed still
subclass those, so ``except TypeError`` around ``.delay()`` keeps working. Errors that the
HTTP endpoints answer (``RequestRefused`` and its subclasses) carry their HTTP status and a
stable machine-readable ``code``; the views turn them into JSON answers, so the code that
raises them (authentication, message parsing) never builds a response itself.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class I3TasksError(Exception):
    """Base class of the package's errors."""


# --- calling tasks ------------------------------------------------------------------------


class TaskUsageError(I3TasksError, TypeError):
    """A task API called the wrong way (a wrong type of argument or option)."""


class ArgumentsNotSerializable(TaskUsageError):
    """A task argument that JSON cannot carry; the message names the argument."""


class InvalidTaskOption(I3TasksError, ValueError):
    """A task option with a value of the right type but out of range (e.g. a naive eta)."""


class PayloadTooLarge(InvalidTaskOption):
    """The arguments of a call are larger than ``I3TASKS.max_payload_bytes``."""


# --- results and task control -----------------------------------------------------------


class TaskNotRegistered(I3TasksError, LookupError):
    """A message names a task that this process has not registered: its execution fails for
    good with this error (see ``execution.run_message``)."""


class TaskResultDoesNotExist(I3TasksError, LookupError):
    """No execution with the uuid given to ``get_result()`` (never written, or cleaned up)."""


class TaskFailed(I3TasksError):
    """``wait_result()`` on an execution that failed for good (or was skipped because an
    earlier chain step did not succeed). ``str()`` names the error type and message; the
    whole ``TaskResult`` is in ``.result``."""

    def __init__(self, detail: str, result: object = None) -> None:
        super().__init__(detail)
        self.result = result


class TaskCancelled(I3TasksError):
    """``wait_result()`` on an execution that was cancelled or expired before it ran.

    A task may also raise it itself (after ``task_metadata.is_cancelled()`` turned true): its
    execution is then recorded as cancelled, not failed, and never retried.
    """

    def __init__(self, detail: str = "cancelled", result: object = None) -> None:
        super().__init__(detail)
        self.result = result


class ResultTimeout(I3TasksError, TimeoutError):
    """``wait_result(timeout=...)`` gave up waiting; the task may still finish later."""


class TimeLimitExceeded(I3TasksError):
    """Raised inside a task that ran past its ``time_limit``; the try is recorded as failed
    with this error and retried per the task's retry policy."""


# --- HTTP answers -------------------------------------------------------------------------


class RequestRefused(I3TasksError):
    """A request one of the endpoints refuses; answered as JSON with ``status``.

    ``code`` is stable and machine-readable, ``detail`` is for people, ``headers`` go into
    the answer (``Retry-After``, ``WWW-Authenticate``). ``reason`` is what the server log
    says (default: ``detail``) when it should say more than the caller is told.
    """

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason or detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})


class InvalidMessage(RequestRefused, ValueError):
    """A push body or task message that cannot be accepted.

    Envelope errors cannot come from Pub/Sub, so they get a 4xx; errors inside a well-formed
    envelope get 200 so that Pub/Sub drops the message instead of retrying it.
    """

    def __init__(self, code: str, detail: str, *, status: int = 400) -> None:
        super().__init__(detail, code=code, status=status)


class AuthError(RequestRefused):
    """A caller that may not use an endpoint (or cannot be checked right now)."""


class Unauthenticated(AuthError):
    """No credentials, or credentials of the wrong kind: 401."""

    status = 401
    code = "unauthenticated"

    def __init__(self, detail: str, *, bearer: bool = False) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"} if bearer else None)


class Forbidden(AuthError):
    """Credentials that are present but wrong: 403."""

    status = 403
    code = "forbidden"


class TokenError(Forbidden):
    """An OIDC bearer token that is not acceptable; ``detail`` says why and never contains
    the token."""


class AuthenticationNotConfigured(Forbidden):
    """With ``DEBUG=False`` an endpoint whose authentication is not configured refuses every
    request, so that a forgotten setting cannot leave it open (``allow_unauthenticated=True``
    opens it on purpose)."""

    code = "authentication_not_configured"


class BadHost(AuthError):
    """The Host header is not in ``ALLOWED_HOSTS`` (the token audience cannot be built)."""

    status = 400
    code = "bad_host"


class CertificatesUnavailable(AuthError):
    """Google's signing certificates could not be fetched or parsed (a transient failure):
    503, so Pub/Sub delivers again later."""

    status = 503
    code = "auth_unavailable"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "10"}, reason=reason)


# --- settings ------------------------------------------------------------------------------


class UnknownQueue(I3TasksError, ImproperlyConfigured):
    """A queue name that ``I3TASKS`` does not configure. Also an ``ImproperlyConfigured``, as
    0.1 raised, so existing ``except`` clauses keep catching it."""


# --- processes ----------------------------------------------------------------------------


class WorkerError(I3TasksError):
    """The pull worker cannot start; the message says why and what to do."""


class InlineRunnerMissing(I3TasksError, RuntimeError):
    """``force_sync`` (or a test recorder) wants to run a message before Django is ready."""
