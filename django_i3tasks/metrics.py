"""Prometheus metrics (the ``[metrics]`` extra installs ``prometheus-client``).

Counters and histograms are fed by receivers of the package's signals (connected when Django
is ready, with ``django_i3tasks.`` dispatch uids, so the lifecycle keeps its fast path); the
gauges are read from the database when ``tasks-metrics/`` is scraped, with one grouped query.

Several processes (gunicorn workers): set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
shared by the workers before they start; each worker writes its counters there and the
scrape adds them up (prometheus-client's multiprocess mode). Empty it at each deploy.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.utils import timezone

from . import signals

logger = logging.getLogger(__name__)

#: The extra that installs what this module needs.
EXTRA = 'pip install "django-i3tasks[metrics]"'
OUTCOMES = ("success", "failed", "retry", "cancelled", "time_limit")
#: Seconds: tasks run from milliseconds to minutes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
           300.0, 600.0, float("inf"))

_metrics: dict[str, Any] = {}


def available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def _registry() -> Any:
    """The package's own registry (not the global one: a project's metrics stay its own)."""
    if "registry" not in _metrics:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        registry = CollectorRegistry(auto_describe=True)
        labels = ("task", "queue")
        _metrics.update(
            registry=registry,
            enqueued=Counter("i3tasks_tasks_enqueued", "Executions handed to the transport.",
                             labels, registry=registry),
            started=Counter("i3tasks_tries_started", "Tries claimed and started.", labels,
                            registry=registry),
            finished=Counter("i3tasks_tries_finished", "Tries finished, by outcome.",
                             (*labels, "outcome"), registry=registry),
            publish_failures=Counter("i3tasks_publish_failures",
                                     "Messages Pub/Sub did not accept.", ("queue",),
                                     registry=registry),
            duration=Histogram("i3tasks_try_duration_seconds", "How long a try ran.", labels,
                               buckets=BUCKETS, registry=registry),
            delay=Histogram("i3tasks_queue_delay_seconds",
                            "From when a try was due to when it started.", labels,
                            buckets=BUCKETS, registry=registry),
        )
    return _metrics["registry"]


def outcome(status: str, error_type: str) -> str:
    """The ``outcome`` label of a ``task_finished`` status."""
    if status == "retry_scheduled":
        return "retry"
    if status == "failed" and error_type.endswith("TimeLimitExceeded"):
        return "time_limit"
    return status if status in OUTCOMES else "failed"


# --- receivers: they never raise (a metric must not fail a task) ----------------------------


def on_enqueued(sender: Any, *, task_name: str, queue_name: str, **_: Any) -> None:
    try:
        _metrics["enqueued"].labels(task_name, queue_name).inc()
    except Exception:  # noqa: BLE001
        logger.debug("metrics: enqueued not counted", exc_info=True)


def on_started(sender: Any, *, task_name: str, queue_name: str, due_at: Any = None,
               **_: Any) -> None:
    try:
        _metrics["started"].labels(task_name, queue_name).inc()
        if due_at is not None:  # read by the claim itself: no query of ours
            delay = max((timezone.now() - due_at).total_seconds(), 0.0)
            _metrics["delay"].labels(task_name, queue_name).observe(delay)
    except Exception:  # noqa: BLE001
        logger.debug("metrics: start not counted", exc_info=True)




def on_finished(sender: Any, *, task_name: str, queue_name: str, status: str,
                duration: float, error_type: str = "", **_: Any) -> None:
    try:
        _metrics["finished"].labels(task_name, queue_name, outcome(status, error_type)).inc()
        if duration is not None:
            _metrics["duration"].labels(task_name, queue_name).observe(max(duration, 0.0))
    except Exception:  # noqa: BLE001
        logger.debug("metrics: finish not counted", exc_info=True)


def on_publish_failed(sender: Any, *, queue_name: str, **_: Any) -> None:
    try:
        _metrics["publish_failures"].labels(queue_name).inc()
    except Exception:  # noqa: BLE001
        logger.debug("metrics: publish failure not counted", exc_info=True)


RECEIVERS = (
    (signals.task_enqueued, on_enqueued, "django_i3tasks.metrics.enqueued"),
    (signals.task_started, on_started, "django_i3tasks.metrics.started"),
    (signals.task_finished, on_finished, "django_i3tasks.metrics.finished"),
    (signals.publish_failed, on_publish_failed, "django_i3tasks.metrics.publish_failed"),
)


def connect() -> bool:
    """Connect the receivers when prometheus-client is installed; whether it is."""
    if not available():
        return False
    _registry()
    for signal, receiver, uid in RECEIVERS:
        signal.connect(receiver, dispatch_uid=uid)
    return True


def disconnect() -> None:
    """Stop counting (the benchmark's "off" side; tests)."""
    for signal, receiver, uid in RECEIVERS:
        signal.disconnect(receiver, dispatch_uid=uid)


# --- the scrape -----------------------------------------------------------------------------


class DatabaseCollector:
    """``i3tasks_executions{status,queue}`` (open statuses) and
    ``i3tasks_oldest_pending_seconds{queue}``, from one grouped query per scrape."""

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        from .stats import open_executions

        counts, oldest = open_executions()
        executions = GaugeMetricFamily("i3tasks_executions", "Open executions.",
                                       labels=["status", "queue"])
        for status, queue, n in counts:
            executions.add_metric([status, queue], n)
        yield executions
        now = timezone.now()
        age = GaugeMetricFamily("i3tasks_oldest_pending_seconds",
                                "Age of the oldest pending execution.", labels=["queue"])
        for queue, created in oldest.items():
            age.add_metric([queue], max((now - created).total_seconds(), 0.0))
        yield age


def counters_exposition() -> bytes:
    """The counters and histograms: this process's, or every process's in multiprocess mode
    (prometheus-client writes each process's values to ``PROMETHEUS_MULTIPROC_DIR``)."""
    from prometheus_client import CollectorRegistry, generate_latest

    own = _registry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        every = CollectorRegistry()
        multiprocess.MultiProcessCollector(every)
        return generate_latest(every)
    return generate_latest(own)


def exposition() -> tuple[bytes, str]:
    """The text of a scrape and its content type: the counters and the database gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    gauges = CollectorRegistry(auto_describe=True)
    gauges.register(DatabaseCollector())
    return counters_exposition() + generate_latest(gauges), CONTENT_TYPE_LATEST
