"""The emulator launcher's clear errors: a missing jar or JDK, an unknown kind, and the
fallback to the Python emulator without Java."""

from __future__ import annotations

import pytest

from django_i3tasks.testing.emulator import (
    EmulatorError,
    EmulatorNotFound,
    PubSubEmulator,
    choose_kind,
    find_emulator_jar,
)


def test_missing_jar_is_a_clear_error(monkeypatch, tmp_path):
    missing = tmp_path / "nope.jar"
    monkeypatch.setenv("I3TASKS_PUBSUB_EMULATOR_JAR", str(missing))
    with pytest.raises(EmulatorNotFound, match="nope.jar") as info:
        find_emulator_jar()
    assert "gcloud components install pubsub-emulator" in str(info.value)


def test_missing_java_is_a_clear_error_when_java_is_asked_for(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EmulatorNotFound, match="java"):
        PubSubEmulator(java="java-that-does-not-exist", kind="java").start()


def test_auto_falls_back_to_python_without_java(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("I3TASKS_EMULATOR", "auto")
    kind, why = choose_kind(java="java-that-does-not-exist")
    assert kind == "python" and "java" in why


def test_unknown_kind_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("I3TASKS_EMULATOR", "ruby")
    with pytest.raises(EmulatorError, match="I3TASKS_EMULATOR='ruby'"):
        PubSubEmulator().start()
