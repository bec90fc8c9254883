"""WSGI entry for gunicorn. With ``CMP_INFLIGHT=1`` every request's start and end go to Redis
(``cmp:spans``, batched by a thread every 0.2 s), so the driver can count how many requests
were in flight at once across all gunicorn workers: the same small cost for every endpoint.
With ``CMP_METRICS=off`` the Prometheus receivers are disconnected (metrics on and off)."""

import os
import threading
import time
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compare_project.settings")
application = get_wsgi_application()

if os.environ.get("CMP_METRICS") == "off":  # the "ours-push-metrics-off" row
    from django_i3tasks import metrics

    metrics.disconnect()

if os.environ.get("CMP_INFLIGHT") == "1":
    import redis
    from django.conf import settings

    _spans: list[str] = []
    _client = redis.Redis.from_url(settings.REDIS_URL)

    def _flush() -> None:
        while True:
            time.sleep(0.2)
            taken = len(_spans)
            if taken:
                batch = _spans[:taken]
                del _spans[:taken]
                _client.rpush("cmp:spans", *batch)

    threading.Thread(target=_flush, name="cmp-spans", daemon=True).start()
    _django = application

    def application(environ: dict, start_response: Any) -> Any:  # type: ignore[no-redef]
        began = time.time()
        try:
            return _django(environ, start_response)
        finally:
            _spans.append(f"{began:.6f} {time.time():.6f}")
