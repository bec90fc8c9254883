"""The Python emulator's subscription filter language."""

from __future__ import annotations

import pytest

from django_i3tasks.testing.pubsub.filters import compile_filter
from django_i3tasks.testing.pubsub.proto import PubSubError


def test_filter_language():
    match = compile_filter('attributes.kind = "a" AND (attributes:urgent OR '
                           'hasPrefix(attributes.region, "eu-")) AND NOT attributes.x = "1"')
    assert match({"kind": "a", "urgent": ""})
    assert match({"kind": "a", "region": "eu-west"})
    assert not match({"kind": "a", "region": "us-east"})
    assert not match({"kind": "b", "urgent": ""})
    assert not match({"kind": "a", "urgent": "", "x": "1"})
    assert compile_filter("")({})
    for bad in ('attributes.a = ', "kind = 'a'", "(attributes:a", 'attributes.a == "b"'):
        with pytest.raises(PubSubError, match="Invalid filter"):
            compile_filter(bad)
