"""``python -m django_i3tasks.testing.pubsub [--host H] [--port P]``: serve the Python
Pub/Sub emulator in the foreground; prints ``PUBSUB_EMULATOR_HOST=host:port`` once ready and
stops cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
