"""A module with an import-time side effect: the suite proves no message ever imports it."""

import os

MARKER = os.environ.get("I3TASKS_SIDE_EFFECT_MARKER")
if MARKER:
    with open(MARKER, "a") as fh:
        fh.write("imported\n")


def not_a_task(*args, **kwargs):
    """A real function that is not a task."""
    return "should never run"
