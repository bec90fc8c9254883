"""Where headless Chromium and its driver are: one answer for ``scripts/test.sh`` (which says
whether the browser test will run) and for ``tests/test_admin_browser.py`` (which runs it).

``I3TASKS_CHROMIUM`` / ``I3TASKS_CHROMEDRIVER`` name other executables.
``python tests/browser.py`` prints both paths, or says what is missing and exits 1.
"""

from __future__ import annotations

import os
import shutil
import sys

BROWSERS = ("chromium", "chromium-browser", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
DRIVERS = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _executable(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK)
                                       else None)
        if found:
            return found
    return None


def find_chromium() -> tuple[str | None, str | None]:
    """The browser and driver executables (None for each one that is missing)."""
    browser = os.environ.get("I3TASKS_CHROMIUM")
    driver = os.environ.get("I3TASKS_CHROMEDRIVER")
    return (_executable(*((browser,) if browser else BROWSERS)),
            _executable(*((driver,) if driver else DRIVERS)))


if __name__ == "__main__":
    found_browser, found_driver = find_chromium()
    if found_browser and found_driver:
        print(f"{found_browser} {found_driver}")
        sys.exit(0)
    missing = [name for name, path in (("chromium", found_browser),
                                       ("chromedriver", found_driver)) if not path]
    print(f"missing: {', '.join(missing)}")
    sys.exit(1)
