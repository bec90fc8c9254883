"""Example tasks."""

import random

from django_i3tasks import TaskDecorator


@TaskDecorator
def add(a: int, b: int) -> int:
    return a + b


@TaskDecorator(bind=True)
def greet(name: str, task_metadata=None) -> str:
    return f"hello {name} from try {task_metadata.try_number} of {task_metadata.task_name}"


@TaskDecorator(max_retries=3)
def flaky(seed: int) -> str:
    """Fails on its first try, then succeeds: shows retries with backoff."""
    from django_i3tasks.models import TaskExecutionTry

    previous = TaskExecutionTry.objects.filter(
        execution__task_name="demo_app.tasks.flaky", execution__args=[seed], status="failed"
    ).count()
    if previous == 0:
        raise ConnectionError("the first try always fails")
    return f"succeeded after {previous} failed try"


@TaskDecorator(max_retries=1)
def broken() -> None:
    raise ValueError("this task always fails")


@TaskDecorator
def summarize(label: str) -> str:
    return f"all members of {label} succeeded"


@TaskDecorator
def roll() -> int:
    return random.randint(1, 6)


@TaskDecorator
def heartbeat() -> str:
    return "beat"


@TaskDecorator(queue_name="heavy")
def crunch(n: int) -> int:
    """A heavier task on the pull queue: ``i3tasks_worker --queue heavy`` runs it."""
    return sum(i * i for i in range(n))
