"""OpenTelemetry traces (the ``[otel]`` extra installs the API; the project configures a
tracer provider with the SDK and an exporter, e.g. Cloud Trace).

- Publishing a message starts and ends a PRODUCER span ``i3tasks.enqueue <task name>`` in
  the current context (the request that called ``.delay()``, or the try that released a
  chain step, a group callback or a retry) and puts its W3C trace context
  (``traceparent``/``tracestate``) in the message's attributes.
- Each try runs in a CONSUMER span ``i3tasks.run <task name>``, a child of that PRODUCER span:
  chains, groups and retries continue the trace of the request that started them.

Nothing happens (no import, no span) while no tracer provider is configured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: Message attributes that carry the trace context (W3C Trace Context).
CARRIER_KEYS = ("traceparent", "tracestate")
_api: list[Any] = []


def _trace() -> Any:
    """``opentelemetry.trace`` when a tracer provider is configured, else ``None``."""
    if not _api:
        try:
            from opentelemetry import propagate, trace
        except ImportError:
            _api.append(None)
        else:
            _api.append((trace, propagate))
    if _api[0] is None:
        return None
    trace = _api[0][0]
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return trace


def active() -> bool:
    """Whether a tracer provider is configured (checked once per published batch)."""
    return _trace() is not None


def _attributes(task_name: str, destination: str, execution_uuid: Any,
                try_number: int) -> dict[str, Any]:
    return {"messaging.system": "gcp_pubsub", "messaging.destination.name": destination,
            "i3tasks.execution_uuid": str(execution_uuid), "i3tasks.try": try_number}


def enqueue_attributes(task_name: str, destination: str, execution_uuid: Any,
                       try_number: int) -> dict[str, str]:
    """The trace context of a new PRODUCER span, as message attributes ({} when off)."""
    trace = _trace()
    if trace is None:
        return {}
    tracer = trace.get_tracer("django_i3tasks")
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span(
        f"i3tasks.enqueue {task_name}", kind=trace.SpanKind.PRODUCER,
        attributes=_attributes(task_name, destination, execution_uuid, try_number),
    ):
        _api[0][1].inject(carrier)
    return {key: value for key, value in carrier.items() if key in CARRIER_KEYS}


def carrier_of(attributes: dict[str, str]) -> dict[str, str] | None:
    """The trace context a message carries, if any."""
    found = {key: attributes[key] for key in CARRIER_KEYS
             if isinstance(attributes.get(key), str)}
    return found or None


@contextmanager
def run_span(task_name: str, destination: Callable[[], str], execution_uuid: Any,
             try_number: int, carrier: dict[str, str] | None) -> Iterator[Any]:
    """The CONSUMER span of one try (``None`` when tracing is off; ``destination`` gives the
    topic, only then)."""
    trace = _trace()
    if trace is None:
        yield None
        return
    parent = _api[0][1].extract(carrier) if carrier else None
    tracer = trace.get_tracer("django_i3tasks")
    with tracer.start_as_current_span(
        f"i3tasks.run {task_name}", context=parent, kind=trace.SpanKind.CONSUMER,
        attributes=_attributes(task_name, destination(), execution_uuid, try_number),
        record_exception=True, set_status_on_exception=True,
    ) as span:
        yield span


def failed(span: Any, exc: BaseException) -> None:
    """The try raised (and the error was recorded, not re-raised): the span says so."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))
