"""End-to-end tier: the Pub/Sub emulator, the live server, subprocesses and races."""
