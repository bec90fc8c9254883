"""Counts requests to the push view per message id (test instrumentation only).

A request is counted when its answer is ready, after the view committed what it recorded; so
a test that saw a status change must wait for ``idle()`` before it reads ``PUSHES`` as a
baseline, or the request that made the change may be counted after the read."""

import json
import threading
from collections import Counter

PUSHES: Counter = Counter()
_lock = threading.Lock()
_in_flight = 0


def idle() -> bool:
    """No push request is being answered now."""
    with _lock:
        return _in_flight == 0


class PushCounter:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        global _in_flight
        if not request.path.endswith("/tasks-push/"):
            return self.get_response(request)
        with _lock:
            _in_flight += 1
        try:
            response = self.get_response(request)
            try:
                task = json.loads(response.content).get("execution", "?")
            except ValueError:
                task = "?"
            with _lock:
                PUSHES[task] += 1
                PUSHES["*"] += 1
        finally:
            with _lock:
                _in_flight -= 1
        return response
