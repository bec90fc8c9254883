"""Django's own ``tests/tasks`` run against ``PubSubBackend`` (``scripts/conformance.py``)."""
