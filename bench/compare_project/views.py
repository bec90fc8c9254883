"""The two reference endpoints: the transport ceiling (no work at all) and the design's floor
(only the writes exactly-once recording needs)."""

import base64
import json
import time
import uuid

import redis
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from .models import FloorResult, FloorTry

_redis = redis.Redis.from_url(settings.REDIS_URL)


@csrf_exempt
def ceiling(request: HttpRequest) -> HttpResponse:
    """Acknowledge; count the delivery (one Redis round trip) so the driver sees the end."""
    _redis.pipeline(transaction=False).incr("cmp:ceiling").set(
        "cmp:ceiling:last", time.time()).execute()
    return HttpResponse(status=204)


@csrf_exempt
def floor(request: HttpRequest) -> JsonResponse:
    """Parse the envelope, claim the try (one conditional UPDATE), run the no-op, record the
    outcome (one transaction: the try and its result)."""
    envelope = json.loads(request.body)
    payload = json.loads(base64.b64decode(envelope["message"]["data"]))
    token = uuid.uuid4()
    claimed = FloorTry.objects.filter(pk=payload["try"], status="queued").update(
        status="running", claim=token, started_at=timezone.now())
    if not claimed:
        return JsonResponse({"status": "duplicate"})
    value = payload["args"][0]  # the task: a no-op returning its argument
    with transaction.atomic():
        FloorTry.objects.filter(pk=payload["try"], claim=token).update(
            status="success", finished_at=timezone.now())
        FloorResult.objects.create(task_try_id=payload["try"], value=value)
    return JsonResponse({"status": "success"})
