"""Tasks for the beat tests (registered when tests.testapp.tasks is autodiscovered)."""

from django_i3tasks import TaskDecorator
from tests.testapp.tasks import record


@TaskDecorator
def tick(tag):
    record(f"tick:{tag}")
    return tag
