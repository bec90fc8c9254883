"""Tasks for the chain and group tests (registered when tests.testapp.tasks is discovered)."""

import threading

from django_i3tasks import TaskDecorator
from tests.testapp.tasks import record

#: Tags in the order ``link`` ran them.
ORDER: list[str] = []
_lock = threading.Lock()


@TaskDecorator
def link(tag):
    with _lock:
        ORDER.append(tag)
    record(f"link:{tag}")
    return tag


@TaskDecorator(max_retries=0)
def broken_link(tag):
    record(f"broken_link:{tag}")
    raise RuntimeError(f"link {tag} is broken")


@TaskDecorator
def collect(value):
    record(f"collect:{value}")
    return value


@TaskDecorator(on_success=collect)
def produce(tag):
    record(f"produce:{tag}")
    return f"produced:{tag}"


@TaskDecorator
def member(index):
    record(f"member:{index}")
    return index


@TaskDecorator(max_retries=1)
def member_fails(index):
    record(f"member_fails:{index}")
    raise ValueError(f"member {index} fails")
