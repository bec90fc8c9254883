"""The wire format: the Pub/Sub push envelope and the task message inside it.

A task message names one try of one execution and carries the call (task name, args,
kwargs), so running it needs no read of the execution row. Its JSON ``data`` is signed with
the project's ``SECRET_KEY`` (attribute ``i3sig``): a message that was not published by this
project is rejected before anything is looked up, even when the endpoint is left open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from django.conf import settings
from django.utils.encoding import force_bytes

from . import tracing
from .exceptions import ArgumentsNotSerializable, InvalidMessage, PayloadTooLarge

__all__ = ["InvalidMessage", "PushEnvelope", "TaskMessage", "parse_push_body"]

#: Version 2 adds the optional ``expires`` field (a Unix time). A message without it is
#: written as version 1, byte for byte what 0.x wrote, so instances of both versions can serve
#: one subscription during a rolling deploy; both versions are read.
FORMAT_VERSION = 2
SIGNATURE_ATTRIBUTE = "i3sig"
TASK_ATTRIBUTE = "i3task"
_SIGNING_SALT = "django_i3tasks.messages"
# Whole-string matches (``fullmatch``): ``$`` would also accept a name ending in a newline.
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.~+%-]{1,100}")
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "execution_id": int,
    "execution_uuid": str,
    "try_id": int,
    "try_number": int,
    "task": str,
    "queue": str,
    "args": list,
    "kwargs": dict,
    "max_retries": int,
    "group_id": (int, type(None)),
}
#: Fields a version 2 message may add.
_OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {"expires": (int, float)}


#: Largest value of a 64-bit signed id column, and of the try number (a small integer).
_MAX_ID = 2**63 - 1
_MAX_TRY_NUMBER = 32767


#: Compact JSON without NaN, as every message is written and every payload or return value
#: is checked: one encoder for all (``json.dumps`` with options builds a new encoder per
#: call; a beat minute writes 10,000 messages, every successful try checks its value).
_compact = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def check_payload(
    task_name: str, args: Sequence[Any], kwargs: dict[str, Any], limit: int
) -> None:
    """Check that a call fits in a message: ``ArgumentsNotSerializable`` naming the first
    argument JSON cannot carry, ``PayloadTooLarge`` when its JSON is over ``limit`` bytes.

    One encoding of the whole call in the usual case; the arguments are examined one by
    one only to name the culprit when that fails.
    """
    for key in kwargs:
        if not isinstance(key, str):
            raise ArgumentsNotSerializable(
                f"keyword argument names of {task_name} must be str, got {key!r}"
            )
    try:
        size = len(_compact([list(args), kwargs]))
    except (TypeError, ValueError, RecursionError):
        named = [(f"positional argument {index}", value) for index, value in enumerate(args)]
        named += [(f"keyword argument {key!r}", value) for key, value in kwargs.items()]
        for what, value in named:
            try:
                _compact(value)
            except (TypeError, ValueError, RecursionError) as exc:
                raise ArgumentsNotSerializable(
                    f"{what} of {task_name} is not JSON serializable "
                    f"({type(value).__name__}): {exc}"
                ) from None
        raise
    if size > limit:
        raise PayloadTooLarge(
            f"arguments of {task_name} are {size} bytes of JSON; the limit "
            f"(I3TASKS.max_payload_bytes) is {limit}"
        )


def to_json_value(value: Any) -> tuple[Any, bool]:
    """A task's return value as stored: itself when JSON can carry it, else its ``repr``
    (second item True)."""
    try:
        _compact(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value), True
    return value, False


def _reject(code: str, detail: str) -> InvalidMessage:
    """An invalid message inside a valid envelope: acknowledged, never retried."""
    return InvalidMessage(code, detail, status=200)


@dataclass(frozen=True)
class TaskMessage:
    execution_id: int
    execution_uuid: uuid.UUID
    try_id: int
    try_number: int
    task_name: str
    queue_name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_retries: int = 0
    group_id: int | None = None
    #: The execution expires when not started by then (``expires=``): the try is not run.
    expires_at: datetime | None = None
    #: The W3C trace context of the PRODUCER span that published it (``tracing``); from the
    #: message's attributes, never part of its signed data.
    trace: dict[str, str] | None = field(default=None, compare=False)

    @classmethod
    def of(cls, execution: Any, try_id: int, try_number: int) -> TaskMessage:
        """The message of one try of ``execution`` (a ``TaskExecution``, or any object with
        its fields): the one way rows become a message."""
        return cls(
            execution_id=execution.pk, execution_uuid=execution.uuid, try_id=try_id,
            try_number=try_number, task_name=execution.task_name,
            queue_name=execution.queue_name, args=list(execution.args),
            kwargs=dict(execution.kwargs), max_retries=execution.max_retries,
            group_id=execution.group_id, expires_at=execution.expires_at,
        )

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "v": 1 if self.expires_at is None else FORMAT_VERSION,
            "execution_id": self.execution_id,
            "execution_uuid": str(self.execution_uuid),
            "try_id": self.try_id,
            "try_number": self.try_number,
            "task": self.task_name,
            "queue": self.queue_name,
            "args": self.args,
            "kwargs": self.kwargs,
            "max_retries": self.max_retries,
            "group_id": self.group_id,
        }
        if self.expires_at is not None:
            body["expires"] = self.expires_at.timestamp()
        return _compact(body).encode()

    def encode(self) -> tuple[bytes, dict[str, str]]:
        """Message data and attributes for publishing."""
        data = self.to_json()
        return data, {SIGNATURE_ATTRIBUTE: sign(data), TASK_ATTRIBUTE: self.task_name}

    @classmethod
    def decode(cls, data: bytes, attributes: dict[str, str]) -> TaskMessage:
        """Verify and parse; raises ``InvalidMessage`` naming the problem."""
        signature = attributes.get(SIGNATURE_ATTRIBUTE)
        if not isinstance(signature, str) or not signature:
            raise _reject("unsigned", f"message has no {SIGNATURE_ATTRIBUTE} attribute")
        if not verify(data, signature):
            raise _reject("bad_signature", "message signature does not match its data")
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise _reject("data_not_json", "message data is not JSON") from None
        message = cls.from_dict(body)
        carrier = tracing.carrier_of(attributes)
        return message if carrier is None else replace(message, trace=carrier)

    @classmethod
    def from_dict(cls, body: Any) -> TaskMessage:
        if not isinstance(body, dict):
            raise _reject("bad_schema", "message data must be a JSON object")
        allowed = set(_FIELDS) | (set(_OPTIONAL_FIELDS) if body.get("v") != 1 else set())
        missing = sorted(set(_FIELDS) - set(body))
        extra = sorted(set(body) - allowed)
        if missing or extra:
            raise _reject("bad_schema", f"message fields: missing {missing}, unexpected {extra}")
        for name, kind in {**_FIELDS, **_OPTIONAL_FIELDS}.items():
            if name not in body:
                continue
            value = body[name]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise _reject("bad_schema", f"message field {name!r} has the wrong type")
        if body["v"] not in (1, FORMAT_VERSION):
            raise _reject("bad_version", f"unsupported message version {body['v']!r}")
        expires_at = None
        if "expires" in body:
            if not math.isfinite(body["expires"]) or not 0 <= body["expires"] < 1e11:
                raise _reject("bad_schema", "message field 'expires' is out of range")
            expires_at = datetime.fromtimestamp(body["expires"], tz=dt_timezone.utc)
        # Bounded by the columns they are compared with (bigint ids, smallint try number), so
        # a value no row can hold is refused here rather than by the database driver.
        for name, limit in (("execution_id", _MAX_ID), ("try_id", _MAX_ID),
                            ("try_number", _MAX_TRY_NUMBER)):
            if not 1 <= body[name] <= limit:
                raise _reject("bad_schema", f"message field {name!r} is out of range")
        if body["group_id"] is not None and not 1 <= body["group_id"] <= _MAX_ID:
            raise _reject("bad_schema", "message field 'group_id' is out of range")
        if not 0 <= body["max_retries"] <= 1000:
            raise _reject("bad_schema", "message field 'max_retries' is out of range")
        if not _TASK_NAME.fullmatch(body["task"]) or len(body["task"]) > 255:
            raise _reject("bad_schema", "message field 'task' is not a dotted name")
        if not _QUEUE_NAME.fullmatch(body["queue"]):
            raise _reject("bad_schema", "message field 'queue' is not a queue name")
        if not all(isinstance(key, str) for key in body["kwargs"]):
            raise _reject("bad_schema", "message kwargs must have string keys")
        try:
            execution_uuid = uuid.UUID(body["execution_uuid"])
        except ValueError:
            raise _reject("bad_schema", "message field 'execution_uuid' is not a UUID") from None
        return cls(
            execution_id=body["execution_id"],
            execution_uuid=execution_uuid,
            try_id=body["try_id"],
            try_number=body["try_number"],
            task_name=body["task"],
            queue_name=body["queue"],
            args=body["args"],
            kwargs=body["kwargs"],
            max_retries=body["max_retries"],
            group_id=body["group_id"],
            expires_at=expires_at,
        )


#: HMAC states keyed as ``django.core.signing.Signer(salt=_SIGNING_SALT, algorithm="sha256")``
#: keys them, for ``SECRET_KEY`` and then each of ``SECRET_KEY_FALLBACKS``; derived again
#: when those settings change. Copying a keyed state per message is what makes signing
#: 10,000 messages (a beat minute, a fan-out) cheap; the signatures are Signer's, byte for
#: byte, so messages signed by earlier versions still verify.
_macs: tuple[tuple[Any, ...], list[Any]] = ((), [])


def _keyed() -> list[Any]:
    global _macs
    secrets = (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    cached = _macs
    if cached[0] != secrets:
        salt = (_SIGNING_SALT + "signer").encode()
        cached = (secrets, [
            hmac.new(hashlib.sha256(salt + force_bytes(secret)).digest(), digestmod=hashlib.sha256)
            for secret in secrets
        ])
        _macs = cached
    return cached[1]


def _signature(keyed: Any, data: bytes) -> bytes:
    mac = keyed.copy()
    mac.update(data)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")


def sign(data: bytes) -> str:
    return _signature(_keyed()[0], data).decode()


def verify(data: bytes, signature: str) -> bool:
    """Whether ``signature`` is the signature of ``data`` under the secret key or one of its
    fallbacks (a key rotation keeps the messages in flight valid)."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    given = signature.encode(errors="replace")
    return any(hmac.compare_digest(_signature(keyed, data), given) for keyed in _keyed())


@dataclass(frozen=True)
class PushEnvelope:
    """The JSON body Pub/Sub POSTs to a push endpoint."""

    message_id: str
    data: bytes
    attributes: dict[str, str]
    subscription: str
    delivery_attempt: int | None


def parse_push_body(body: bytes) -> PushEnvelope:
    """Parse a push request body; raises ``InvalidMessage`` (status 400) naming the problem."""
    try:
        envelope = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidMessage("invalid_json", "request body is not JSON") from None
    if not isinstance(envelope, dict):
        raise InvalidMessage("invalid_envelope", "request body must be a JSON object")
    message = envelope.get("message")
    if not isinstance(message, dict):
        raise InvalidMessage("invalid_envelope", "request body has no 'message' object")
    subscription = envelope.get("subscription", "")
    if not isinstance(subscription, str):
        raise InvalidMessage("invalid_envelope", "'subscription' must be a string")
    message_id = message.get("messageId", message.get("message_id", ""))
    if not isinstance(message_id, str):
        raise InvalidMessage("invalid_envelope", "'message.messageId' must be a string")
    raw_data = message.get("data")
    if not isinstance(raw_data, str) or not raw_data:
        raise InvalidMessage("invalid_envelope", "'message.data' must be a non-empty string")
    try:
        data = base64.b64decode(raw_data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMessage("invalid_base64", "'message.data' is not valid base64") from None
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise InvalidMessage("invalid_envelope", "'message.attributes' must map str to str")
    attempt = envelope.get("deliveryAttempt")
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int)):
        raise InvalidMessage("invalid_envelope", "'deliveryAttempt' must be an integer")
    return PushEnvelope(
        message_id=message_id,
        data=data,
        attributes=attributes,
        subscription=subscription,
        delivery_attempt=attempt,
    )
