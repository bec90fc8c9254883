"""Unit tier: no database, emulator, server or subprocess; ``bash scripts/test.sh tests/unit``."""
