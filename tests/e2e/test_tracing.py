"""OpenTelemetry: a try's span is a child of the request that enqueued it, across a real
push through the emulator; failures, retries and chains stay in the same trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from django_i3tasks import transport
from django_i3tasks.models import ExecutionStatus, TaskExecution
from tests.helpers import wait_for
from tests.testapp import tasks
from tests.testapp.chain_tasks import link

otel = pytest.importorskip("opentelemetry.sdk.trace", reason="the [otel] test extra")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def spans() -> Iterator[object]:
    """The SDK with an in-memory exporter as the global tracer provider, for this test only
    (the global is reset afterwards, so other tests run without tracing)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None


def by_name(exporter, name):
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_without_a_provider_nothing_is_added(push_queue):
    from django_i3tasks import tracing

    assert tracing.enqueue_attributes("t", "topic", "u", 1) == {}
    handle = tasks.add.delay(1, 1)
    transport.flush()
    wait_for(lambda: TaskExecution.objects.get(pk=handle.id).status == ExecutionStatus.SUCCESS)


def test_the_run_span_is_a_child_of_the_request_through_the_enqueue_span(push_queue, spans):
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, StatusCode

    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("GET /order/7") as request:
        handle = tasks.add.delay(2, 3)
    transport.flush()
    wait_for(lambda: TaskExecution.objects.get(pk=handle.id).status == ExecutionStatus.SUCCESS)
    wait_for(lambda: by_name(spans, f"i3tasks.run {tasks.add.name}"), timeout=10)
    (enqueue,) = by_name(spans, f"i3tasks.enqueue {tasks.add.name}")
    (run,) = by_name(spans, f"i3tasks.run {tasks.add.name}")
    context = request.get_span_context()
    assert enqueue.kind == SpanKind.PRODUCER and run.kind == SpanKind.CONSUMER
    assert enqueue.parent.span_id == context.span_id
    assert run.parent.span_id == enqueue.context.span_id
    assert run.context.trace_id == enqueue.context.trace_id == context.trace_id
    assert run.attributes["messaging.system"] == "gcp_pubsub"
    assert run.attributes["messaging.destination.name"].endswith(".default")
    assert run.attributes["i3tasks.execution_uuid"] == str(handle.uuid)
    assert run.attributes["i3tasks.try"] == 1
    assert run.status.status_code != StatusCode.ERROR


def test_failures_retries_and_chains_continue_the_trace(push_queue, spans):
    from opentelemetry import trace
    from opentelemetry.trace import StatusCode

    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request") as request:
        failing = tasks.always_fails.delay("otel")
        chained = tasks.add.delay(1, 2).then(link, "next")
    trace_id = request.get_span_context().trace_id
    transport.flush()
    wait_for(lambda: TaskExecution.objects.get(pk=failing.id).status == ExecutionStatus.FAILED,
             timeout=30)
    wait_for(lambda: TaskExecution.objects.get(pk=chained.id).status == ExecutionStatus.SUCCESS,
             timeout=30)
    wait_for(lambda: by_name(spans, f"i3tasks.run {link.name}"), timeout=10)
    wait_for(lambda: len(by_name(spans, f"i3tasks.run {tasks.always_fails.name}")) == 3,
             timeout=10)
    runs = sorted(by_name(spans, f"i3tasks.run {tasks.always_fails.name}"),
                  key=lambda s: s.attributes["i3tasks.try"])
    assert [s.attributes["i3tasks.try"] for s in runs] == [1, 2, 3]
    assert {s.context.trace_id for s in runs} == {trace_id}
    for run in runs:
        assert run.status.status_code == StatusCode.ERROR
        assert [e.name for e in run.events] == ["exception"]
        assert run.events[0].attributes["exception.type"] == "ValueError"
    # Each retry's enqueue span is a child of the failed try's run span.
    enqueues = {s.context.span_id: s for s in
                by_name(spans, f"i3tasks.enqueue {tasks.always_fails.name}")}
    for before, after in zip(runs, runs[1:], strict=False):
        assert enqueues[after.parent.span_id].parent.span_id == before.context.span_id
    (step,) = by_name(spans, f"i3tasks.run {link.name}")
    (first,) = by_name(spans, f"i3tasks.run {tasks.add.name}")
    assert step.context.trace_id == trace_id
    assert enqueues.get(step.parent.span_id) is None  # its enqueue span is link's
    (step_enqueue,) = by_name(spans, f"i3tasks.enqueue {link.name}")
    assert step.parent.span_id == step_enqueue.context.span_id
    assert step_enqueue.parent.span_id == first.context.span_id


def test_a_group_callback_continues_the_trace(push_queue, spans):
    from opentelemetry import trace

    from django_i3tasks import TaskGroup
    from tests.testapp.chain_tasks import member

    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request") as request:
        group = TaskGroup.create(callback=link.build_chain("joined"), total_count=2)
        member.map([1, 2], group=group)
    transport.flush()
    wait_for(lambda: by_name(spans, f"i3tasks.run {link.name}"), timeout=30)
    members = by_name(spans, f"i3tasks.run {member.name}")
    (callback,) = by_name(spans, f"i3tasks.run {link.name}")
    trace_id = request.get_span_context().trace_id
    assert len(members) == 2 and {s.context.trace_id for s in members} == {trace_id}
    assert callback.context.trace_id == trace_id
    (callback_enqueue,) = by_name(spans, f"i3tasks.enqueue {link.name}")
    # Released by the member that finished last, inside its run span.
    assert callback_enqueue.parent.span_id in {s.context.span_id for s in members}
