"""Tasks for the workflow tests: ``pipe``, group results and failure handlers."""

import threading
import time

from django_i3tasks import TaskDecorator
from tests.testapp.tasks import record

#: ``(failure, args)`` of every ``alert`` run; ``summarize``'s lists; ``store``'s calls.
HANDLED: list[tuple[dict, tuple]] = []
SUMMARIES: list[list] = []
STORED: list[tuple] = []
_lock = threading.Lock()


@TaskDecorator
def fetch(url):
    record(f"fetch:{url}")
    return {"url": url, "body": f"<p>{url}</p>"}


@TaskDecorator
def parse(page, upper=False):
    record(f"parse:{page['url']}")
    text = page["body"][3:-4]
    return {"text": text.upper() if upper else text, "from": page["url"]}


@TaskDecorator
def store(doc, bucket):
    with _lock:
        STORED.append((doc, bucket))
    record(f"store:{bucket}")
    return f"{bucket}/{doc['text']}"


@TaskDecorator
def square(index):
    record(f"square:{index}")
    return {"index": index, "square": index * index}


@TaskDecorator
def summarize(values, label="sum"):
    with _lock:
        SUMMARIES.append(values)
    record(f"summarize:{label}")
    return len(values)


@TaskDecorator
def alert(failure, *channels):
    with _lock:
        HANDLED.append((failure, channels))
    record(f"alert:{failure['task_name'].rsplit('.', 1)[-1]}")


@TaskDecorator(max_retries=0)
def breaks(tag):
    record(f"breaks:{tag}")
    raise RuntimeError(f"step {tag} is broken")


@TaskDecorator(max_retries=0)
def square_or_break(index):
    record(f"square_or_break:{index}")
    if index == 7:
        raise ValueError(f"member {index} breaks")
    return index * index


@TaskDecorator(max_retries=0, on_failure=alert)
def slow_break(tag, seconds):
    record(f"slow_break:{tag}")
    time.sleep(seconds)
    raise RuntimeError(f"{tag} broke after {seconds} s")


@TaskDecorator
def unjsonable(tag):
    record(f"unjsonable:{tag}")
    return {tag}  # a set: stored as its repr
