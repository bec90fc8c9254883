"""The reference endpoints: the transport ceiling (no work at all), the design's floor (only
the writes exactly-once recording needs, in as few statements as they fit) and the naive
Django version of that floor (the same writes through the ORM, as most projects would write
them)."""

import base64
import json
import time
import uuid

import redis
from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from .models import FloorResult, FloorTry

_redis = redis.Redis.from_url(settings.REDIS_URL)
_TRY = FloorTry._meta.db_table
_RESULT = FloorResult._meta.db_table

#: Claim: one conditional UPDATE; only the delivery that moves the try out of "queued" runs it.
CLAIM = f"UPDATE {_TRY} SET status = 'running', claim = %s, started_at = %s " \
        f"WHERE id = %s AND status = 'queued'"
#: Finish and record in one autocommit statement (PostgreSQL): the try becomes "success"
#: only for the claim that holds it, and the result row is written by the same statement,
#: so there is never a finished try without its result, nor a result of another claim.
FINISH = f"WITH done AS (UPDATE {_TRY} SET status = 'success', finished_at = %s " \
         f"WHERE id = %s AND claim = %s RETURNING id) " \
         f"INSERT INTO {_RESULT} (task_try_id, value) SELECT id, %s::jsonb FROM done"


def _payload(request: HttpRequest) -> dict:
    envelope = json.loads(request.body)
    return json.loads(base64.b64decode(envelope["message"]["data"]))


@csrf_exempt
def ceiling(request: HttpRequest) -> HttpResponse:
    """Acknowledge; count the delivery (one Redis round trip) so the driver sees the end."""
    _redis.pipeline(transaction=False).incr("cmp:ceiling").set(
        "cmp:ceiling:last", time.time()).execute()
    return HttpResponse(status=204)


@csrf_exempt
def floor(request: HttpRequest) -> JsonResponse:
    """The 2-statement floor: claim, run the no-op, then finish the try and write its result
    in one statement. Raw SQL in autocommit: no BEGIN/COMMIT round trips. SQLite has no
    UPDATE inside WITH, so there the second step is two statements in one transaction."""
    payload = _payload(request)
    token = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(CLAIM, [token.hex if connection.vendor == "sqlite" else token,
                               timezone.now(), payload["try"]])
        if cursor.rowcount != 1:
            return JsonResponse({"status": "duplicate"})
        value = json.dumps(payload["args"][0])  # the task: a no-op returning its argument
        if connection.vendor == "postgresql":
            cursor.execute(FINISH, [timezone.now(), payload["try"], token, value])
        else:
            with transaction.atomic():
                cursor.execute(f"UPDATE {_TRY} SET status = 'success', finished_at = %s "
                               f"WHERE id = %s AND claim = %s",
                               [timezone.now(), payload["try"], token.hex])
                if cursor.rowcount == 1:
                    cursor.execute(f"INSERT INTO {_RESULT} (task_try_id, value) VALUES (%s, %s)",
                                   [payload["try"], value])
    return JsonResponse({"status": "success"})


@csrf_exempt
def naive_floor(request: HttpRequest) -> JsonResponse:
    """The same writes through the ORM: a conditional UPDATE, then the try and its result in
    one transaction (BEGIN, UPDATE, INSERT, COMMIT: 5 round trips in all)."""
    payload = _payload(request)
    token = uuid.uuid4()
    claimed = FloorTry.objects.filter(pk=payload["try"], status="queued").update(
        status="running", claim=token, started_at=timezone.now())
    if not claimed:
        return JsonResponse({"status": "duplicate"})
    value = payload["args"][0]
    with transaction.atomic():
        FloorTry.objects.filter(pk=payload["try"], claim=token).update(
            status="success", finished_at=timezone.now())
        FloorResult.objects.create(task_try_id=payload["try"], value=value)
    return JsonResponse({"status": "success"})
