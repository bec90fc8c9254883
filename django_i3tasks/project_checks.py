"""System checks of how the project wires the app in, beyond the values of ``I3TASKS``: which
endpoints its URLconf routes and whether they are protected, whether the push endpoints of
the settings lead to the push view, whether ``task_modules`` exist, and ``PUBSUB_CONFIG``'s keys.

A mistake here fails silently at run time (pushes get 404, a mistyped key falls back to
production credentials), so each one is named when the project starts. Check ids come from
``checks.ERRORS`` / ``checks.WARNINGS``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from importlib.util import find_spec
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.urls import URLPattern, URLResolver, get_resolver

from . import views
from .checks import TAG, _error, _warning
from .types import I3TasksSettings, PushQueue

#: The keys ``PUBSUB_CONFIG`` reads; any other key is a mistake (typos fall back silently).
PUBSUB_CONFIG_KEYS = ("EMULATOR", "HOST", "PROJECT_ID", "CREDENTIALS")


def routed(view: Callable[..., Any]) -> bool:
    """Whether some pattern of the root URLconf leads to ``view``. An URLconf that cannot be
    loaded counts as routing everything (Django's own checks report it)."""
    try:
        patterns = get_resolver().url_patterns
    except Exception:  # noqa: BLE001 - reported by Django's URL checks
        return True
    return _walk(patterns, view)


def _walk(patterns: Iterable[Any], view: Callable[..., Any]) -> bool:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if _walk(pattern.url_patterns, view):
                return True
        elif isinstance(pattern, URLPattern) and pattern.callback is view:
            return True
    return False


def resolves_to(path: str, view: Callable[..., Any]) -> bool:
    """Whether ``path`` (as Pub/Sub will request it) reaches ``view`` in the root URLconf."""
    from django.urls import Resolver404, resolve

    script = (getattr(settings, "FORCE_SCRIPT_NAME", None) or "").rstrip("/")
    if script and path.startswith(script + "/"):
        path = path[len(script):]
    try:
        return resolve(path).func is view
    except Resolver404:
        return False
    except Exception:  # noqa: BLE001 - an URLconf that cannot load: Django reports it
        return True


@register(TAG)
def check_project(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """Task modules, push endpoint routes and ``PUBSUB_CONFIG`` keys."""
    errors = _check_pubsub_keys()
    conf = getattr(settings, "I3TASKS", None)
    if isinstance(conf, I3TasksSettings):
        errors += _check_task_modules(conf.task_modules)
        errors += _check_push_routes(conf)
    return errors


@register(Tags.security)
def check_endpoint_authentication(app_configs: Any = None, **kwargs: Any
                                  ) -> list[Error | Warning]:
    """With ``DEBUG=False`` a routed push or beat endpoint without authentication refuses every
    request: an Error, whatever emulator is configured, unless ``allow_unauthenticated``.
    Status and health answering anyone is a Warning."""
    conf = getattr(settings, "I3TASKS", None)
    if not isinstance(conf, I3TasksSettings) or settings.DEBUG:
        return []
    errors: list[Error | Warning] = []
    unprotected = []
    if not conf.push_emails and routed(views.push):
        unprotected.append("push (tasks-push/): set oidc_push_service_account_emails")
    if not conf.beat_emails and not conf.beat_token and routed(views.beat):
        unprotected.append("beat (tasks-beat/): set oidc_beat_service_account_emails "
                           "or beat_token")
    if unprotected and conf.allow_unauthenticated is not True:
        errors.append(_error(
            "With DEBUG=False these endpoints have no authentication, so they refuse every "
            "request (403 authentication_not_configured): " + "; ".join(unprotected) + ".",
            "Configure OIDC for them (see SECURITY.md), or set I3TASKS.allow_unauthenticated="
            "True when something in front of the app authenticates the callers.",
            "auth_not_configured"))
    if not conf.status_token and (routed(views.status) or routed(views.health)):
        errors.append(_warning(
            "The status and health endpoints answer anyone (I3TASKS.status_token is unset); "
            "status returns results and error messages.",
            "Set I3TASKS.status_token and send it as X-I3Tasks-Token, or keep those routes "
            "off the public network.", "open_status_endpoint"))
    return errors


def _check_task_modules(modules: Any) -> list[Error | Warning]:
    if isinstance(modules, str):
        return [_error(
            f"I3TASKS.task_modules is the string {modules!r}, not a tuple of module paths.",
            f"A one-module tuple needs its comma: task_modules=({modules!r},).",
            "task_modules")]
    if not isinstance(modules, tuple | list) or not all(isinstance(m, str) for m in modules):
        return [_error(f"I3TASKS.task_modules = {modules!r} is not a tuple of module paths.",
                       "e.g. task_modules=('myapp.jobs',)", "task_modules")]
    errors: list[Error | Warning] = []
    for name in modules:
        try:
            found = bool(name) and find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            errors.append(_error(
                f"I3TASKS.task_modules names {name!r}, which is not an importable module: its "
                "tasks would not be registered, and their messages could not run.",
                "Give the dotted path of a module, e.g. 'myapp.jobs'.", "task_modules"))
    return errors


def _check_push_routes(conf: I3TasksSettings) -> list[Error | Warning]:
    warnings: list[Error | Warning] = []
    for index, queue in enumerate(conf.queues):
        if not isinstance(queue, PushQueue) or not isinstance(queue.push_endpoint, str):
            continue
        path = urlsplit(queue.push_endpoint).path or "/"
        if resolves_to(path, views.push):
            continue
        where = "default_queue" if index == 0 else f"other_queues[{index - 1}]"
        warnings.append(_warning(
            f"I3TASKS.{where}.push_endpoint {queue.push_endpoint!r}: the path {path!r} does "
            "not lead to the push view in this project's URLconf, so Pub/Sub's pushes would "
            "get 404 and the queue's tasks would stay pending.",
            "Add path('i3/', include('django_i3tasks.urls')) to ROOT_URLCONF, or correct the "
            "endpoint (it ends in tasks-push/).", "push_route"))
    return warnings


def _check_pubsub_keys() -> list[Error | Warning]:
    raw = getattr(settings, "PUBSUB_CONFIG", None)
    if not isinstance(raw, dict):
        return []  # checks.check_settings reports it
    errors: list[Error | Warning] = []
    for key in raw:
        if key in PUBSUB_CONFIG_KEYS:
            continue
        close = difflib.get_close_matches(str(key).upper(), PUBSUB_CONFIG_KEYS, n=1, cutoff=0.6)
        if close:
            errors.append(_error(
                f"PUBSUB_CONFIG has an unknown key {key!r}: did you mean {close[0]!r}?",
                f"The keys are {', '.join(PUBSUB_CONFIG_KEYS)}; a mistyped one is ignored.",
                "pubsub_config_key"))
        else:
            errors.append(_warning(
                f"PUBSUB_CONFIG has an unknown key {key!r}, which is ignored.",
                f"The keys are {', '.join(PUBSUB_CONFIG_KEYS)}.", "pubsub_config_key"))
    return errors
