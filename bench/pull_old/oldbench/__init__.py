"""A tiny Django project for django-i3tasks 0.1.9 (the earlier public package), used by
``bench/pull.py``: settings on the benchmark's database and emulator, and the task."""
