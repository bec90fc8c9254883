"""Subscription filters: the attribute subset of the Pub/Sub filter language.

Supported: ``attributes.KEY = "v"``, ``attributes.KEY != "v"``, ``attributes:KEY`` (has the
key), ``hasPrefix(attributes.KEY, "p")``, ``NOT``/``-``, ``AND``, ``OR`` and parentheses;
keys and values may be quoted with double quotes (backslash escapes). A filter that does not
parse is INVALID_ARGUMENT when the subscription is created. Real Pub/Sub also refuses ``AND``
and ``OR`` mixed without parentheses; here ``AND`` simply binds tighter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from .proto import invalid

Predicate = Callable[[Mapping[str, str]], bool]
_TOKEN = re.compile(
    r'\s*(?:(?P<attr>attributes\.(?:"(?:[^"\\]|\\.)*"|[^\s=!:(),"]+))'
    r'|(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>!=|[=:(),-])|(?P<word>[A-Za-z_][\w.-]*))'
)


def compile_filter(text: str) -> Predicate:
    """A predicate on message attributes; every message matches the empty filter."""
    if not text.strip():
        return lambda attributes: True
    if len(text) > 256:
        raise invalid("Invalid filter: longer than 256 characters")
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if not match:
                raise invalid(f"Invalid filter: unexpected text at {text[position:]!r}")
            kind = match.lastgroup or ""
            value = match.group(kind)
            if kind == "attr":
                value = value[len("attributes."):]
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            self.tokens.append((kind, value))
            position = match.end()
        self.index = 0

    def parse(self) -> Predicate:
        predicate = self._or()
        if self.index != len(self.tokens):
            raise invalid(f"Invalid filter: unexpected {self.tokens[self.index][1]!r}")
        return predicate

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.index] if self.index < len(self.tokens) else ("end", "")

    def _take(self, kind: str, value: str | None = None) -> str:
        token = self._peek()
        if token[0] != kind or (value is not None and token[1] != value):
            raise invalid(f"Invalid filter {self.text!r}: expected {value or kind}, got "
                          f"{token[1] or 'the end'!r}")
        self.index += 1
        return token[1]

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._peek() == ("word", "OR"):
            self.index += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda a: any(p(a) for p in parts))

    def _and(self) -> Predicate:
        parts = [self._not()]
        while self._peek() == ("word", "AND"):
            self.index += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda a: all(p(a) for p in parts))

    def _not(self) -> Predicate:
        if self._peek() in (("word", "NOT"), ("op", "-")):
            self.index += 1
            inner = self._not()
            return lambda a: not inner(a)
        return self._atom()

    def _key(self) -> str:
        kind, value = self._peek()
        if kind not in ("word", "str"):
            raise invalid(f"Invalid filter {self.text!r}: expected an attribute key")
        self.index += 1
        return value

    def _atom(self) -> Predicate:
        if self._peek() == ("op", "("):
            self.index += 1
            inner = self._or()
            self._take("op", ")")
            return inner
        if self._peek() == ("word", "hasPrefix"):
            self.index += 1
            self._take("op", "(")
            key = self._attribute()
            self._take("op", ",")
            prefix = self._take("str")
            self._take("op", ")")
            return lambda a: key in a and a[key].startswith(prefix)
        if self._peek() == ("word", "attributes"):
            self.index += 1
            self._take("op", ":")
            key = self._key()
            return lambda a: key in a
        key = self._attribute()
        op = self._take("op")
        if op not in ("=", "!="):
            raise invalid(f"Invalid filter {self.text!r}: expected = or !=, got {op!r}")
        value = self._take("str")
        if op == "=":
            return lambda a: a.get(key) == value
        return lambda a: a.get(key) != value

    def _attribute(self) -> str:
        return self._take("attr")
