"""Database tier: the transitions and what needs rows, on SQLite and PostgreSQL; no emulator,
live server or subprocess."""
