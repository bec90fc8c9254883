import base64
import json
import uuid

import pytest

from django_i3tasks.messages import (
    SIGNATURE_ATTRIBUTE,
    InvalidMessage,
    TaskMessage,
    parse_push_body,
    sign,
)


def make_message(**changes):
    fields = dict(
        execution_id=1, execution_uuid=uuid.uuid4(), try_id=2, try_number=1,
        task_name="tests.testapp.tasks.add", queue_name="default", args=[1, 2], kwargs={},
        max_retries=3, group_id=None,
    )
    fields.update(changes)
    return TaskMessage(**fields)


def test_round_trip():
    message = make_message(kwargs={"x": [1, {"y": None}]}, group_id=7)
    data, attributes = message.encode()
    assert TaskMessage.decode(data, attributes) == message


def test_tampered_data_is_rejected():
    data, attributes = make_message().encode()
    forged = data.replace(b'"args":[1,2]', b'"args":[1,3]')
    with pytest.raises(InvalidMessage) as info:
        TaskMessage.decode(forged, attributes)
    assert info.value.code == "bad_signature" and info.value.status == 200


def test_unsigned_is_rejected():
    data, _ = make_message().encode()
    with pytest.raises(InvalidMessage) as info:
        TaskMessage.decode(data, {})
    assert info.value.code == "unsigned"


@pytest.mark.parametrize(
    "body, code",
    [
        ([], "bad_schema"),
        ({"v": 1}, "bad_schema"),
        ("string", "bad_schema"),
    ],
)
def test_schema_errors(body, code):
    data = json.dumps(body).encode()
    with pytest.raises(InvalidMessage) as info:
        TaskMessage.decode(data, {SIGNATURE_ATTRIBUTE: sign(data)})
    assert info.value.code == code


@pytest.mark.parametrize(
    "field, value",
    [
        ("execution_id", True),
        ("execution_id", 0),
        ("try_number", "1"),
        ("task", "os.system; rm"),
        ("task", "nodots"),
        ("queue", "bad queue"),
        ("args", {}),
        ("kwargs", []),
        ("execution_uuid", "not-a-uuid"),
        ("max_retries", -1),
        ("v", 3),
        ("group_id", "x"),
    ],
)
def test_each_field_is_validated(field, value):
    body = json.loads(make_message().to_json())
    body[field] = value
    with pytest.raises(InvalidMessage):
        TaskMessage.from_dict(body)


def test_extra_field_is_rejected():
    body = json.loads(make_message().to_json())
    body["module"] = "os"
    with pytest.raises(InvalidMessage, match="unexpected"):
        TaskMessage.from_dict(body)


def envelope(**message):
    return json.dumps({"message": message, "subscription": "s"}).encode()


def test_parse_push_body():
    parsed = parse_push_body(envelope(data=base64.b64encode(b"{}").decode(), messageId="m1",
                                      attributes={"a": "b"}))
    assert parsed.data == b"{}" and parsed.message_id == "m1" and parsed.attributes == {"a": "b"}


@pytest.mark.parametrize(
    "body, code",
    [
        (b"not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[]", "invalid_envelope"),
        (b"{}", "invalid_envelope"),
        (json.dumps({"message": "x"}).encode(), "invalid_envelope"),
        (envelope(), "invalid_envelope"),
        (envelope(data="!!!notbase64"), "invalid_base64"),
        (envelope(data="aGVsbG8", messageId="m"), "invalid_base64"),
        (envelope(data="e30=", attributes={"a": 1}), "invalid_envelope"),
        (envelope(data="e30=", messageId=5), "invalid_envelope"),
    ],
)
def test_bad_envelopes(body, code):
    with pytest.raises(InvalidMessage) as info:
        parse_push_body(body)
    assert info.value.code == code and info.value.status == 400


@pytest.mark.parametrize("field, value", [
    ("execution_id", 0), ("execution_id", 2**63), ("try_id", 2**64), ("try_id", -1),
    ("try_number", 0), ("try_number", 32768), ("group_id", 0), ("group_id", 2**63),
    ("max_retries", 1001),
])
def test_numbers_no_row_can_hold_are_refused(field, value):
    """Found by the fuzz test: a signed message with a 2**64 id reached SQLite (500)."""
    data, attributes = make_message(**{field: value}).encode()
    with pytest.raises(InvalidMessage) as info:
        TaskMessage.decode(data, attributes)
    assert info.value.code == "bad_schema" and "out of range" in info.value.detail


@pytest.mark.parametrize("field, value", [
    ("execution_id", 2**63 - 1), ("try_number", 32767), ("group_id", 2**63 - 1),
])
def test_largest_numbers_are_accepted(field, value):
    data, attributes = make_message(**{field: value}).encode()
    assert getattr(TaskMessage.decode(data, attributes), field) == value


def test_signatures_are_those_of_djangos_signer():
    """Messages signed by earlier versions (``django.core.signing.Signer``) still verify, and
    the other way round: the cached keyed HMAC changes the cost, not the bytes."""
    from django.core import signing

    signer = signing.Signer(salt="django_i3tasks.messages", algorithm="sha256")
    data, attributes = make_message(kwargs={"ü": "ß"}).encode()
    assert attributes[SIGNATURE_ATTRIBUTE] == signer.signature(data.decode())
    assert TaskMessage.decode(data, {**attributes, SIGNATURE_ATTRIBUTE: signer.signature(
        data.decode())}) == TaskMessage.decode(data, attributes)


def test_rotated_secret_key_still_verifies_messages_in_flight(settings):
    message = make_message()
    data, attributes = message.encode()
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY = "a-new-secret-key-" + "x" * 40
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert TaskMessage.decode(data, attributes) == message
    assert sign(data) != attributes[SIGNATURE_ATTRIBUTE]  # new messages use the new key
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(InvalidMessage) as info:
        TaskMessage.decode(data, attributes)
    assert info.value.code == "bad_signature"


@pytest.mark.parametrize("signature", ["é" * 43, "x", "a:b"])
def test_odd_signatures_are_refused_not_raised(signature):
    data, _ = make_message().encode()
    with pytest.raises(InvalidMessage) as info:
        TaskMessage.decode(data, {SIGNATURE_ATTRIBUTE: signature})
    assert info.value.code == "bad_signature"
