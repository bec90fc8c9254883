"""Counts requests to the push view per message id (test instrumentation only)."""

import json
import threading
from collections import Counter

PUSHES: Counter = Counter()
_lock = threading.Lock()


class PushCounter:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.endswith("/tasks-push/"):
            try:
                task = json.loads(response.content).get("execution", "?")
            except ValueError:
                task = "?"
            with _lock:
                PUSHES[task] += 1
                PUSHES["*"] += 1
        return response
