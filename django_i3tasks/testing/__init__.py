"""Helpers for testing with django-i3tasks: a launcher for the Pub/Sub emulator."""
