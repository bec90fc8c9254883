"""Tasks for the limits and timing tests: each records when its body started and ended
(``SPANS``, in this process; the push view runs in the test's live server)."""

import os
import threading
import time

from django_i3tasks import TaskDecorator

#: (task, tag, started, ended) in ``time.time()`` seconds.
SPANS: list[tuple[str, str, float, float]] = []
_lock = threading.Lock()


def span(task: str, tag: str, seconds: float) -> None:
    started = time.time()
    time.sleep(seconds)
    with _lock:
        SPANS.append((task, tag, started, time.time()))


def spans(task: str) -> list[tuple[str, float, float]]:
    with _lock:
        return [(tag, start, end) for name, tag, start, end in SPANS if name == task]


@TaskDecorator(concurrency_limit=2)
def two_at_a_time(tag: str, seconds: float = 1.0) -> str:
    span("two_at_a_time", tag, seconds)
    return tag


@TaskDecorator(concurrency_limit=1,
               concurrency_key=lambda customer, *a, **kw: f"customer:{customer}")
def per_customer(customer: str, tag: str, seconds: float = 0.5) -> str:
    span(f"per_customer:{customer}", tag, seconds)
    return tag


@TaskDecorator(rate_limit="5/s")
def five_a_second(tag: str) -> str:
    span("five_a_second", tag, 0.0)
    return tag


@TaskDecorator
def stamped(tag: str) -> str:
    span("stamped", tag, 0.0)
    return tag


@TaskDecorator(max_retries=2, retry_backoff=(1, 2), retry_jitter=False)
def fails_twice(tag: str) -> str:
    span("fails_twice", tag, 0.0)
    if len(spans("fails_twice")) <= 2:
        raise RuntimeError("fails on its first two tries")
    return tag


@TaskDecorator(concurrency_limit=1, concurrency_key=lambda *a, **kw: None)
def one_at_a_time(tag: str) -> str:
    span("one_at_a_time", tag, 0.0)
    return tag


@TaskDecorator(queue_name="heavy", concurrency_limit=1, lease_seconds=3)
def slot_holder(key: str, seconds: float) -> str:
    """On the pull queue: the first run of ``key`` sleeps ``seconds`` (to be killed)."""
    from tests.testapp.models import Effect

    first = not Effect.objects.filter(key=key).exists()
    Effect.objects.create(key=key, pid=os.getpid())
    if first:
        time.sleep(seconds)
    return key


def bad_key(*args, **kwargs):
    raise LookupError("no customer")


@TaskDecorator(concurrency_limit=1, concurrency_key=bad_key)
def raising_key(customer: str) -> None:
    pass


@TaskDecorator(concurrency_limit=1, concurrency_key=lambda n: n)
def int_key(n: int) -> None:
    pass


@TaskDecorator(queue_name="heavy")
def heavy_stamped(key: str) -> str:
    """On the pull queue: its try's ``started_at`` is the figure."""
    return key


@TaskDecorator(queue_name="heavy", max_retries=2, retry_backoff=(1, 2), retry_jitter=False)
def heavy_fails_twice(key: str) -> str:
    from tests.testapp.models import Effect

    Effect.objects.create(key=key, pid=os.getpid())
    if Effect.objects.filter(key=key).count() <= 2:
        raise RuntimeError("fails on its first two tries")
    return key
