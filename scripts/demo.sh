#!/usr/bin/env bash
# The demo command: sets up a virtualenv, then runs example_project end to end on SQLite and
# a Pub/Sub emulator (started and stopped by the demo itself): Google's when it is installed,
# else the Python one (I3TASKS_EMULATOR=python|java|auto chooses).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.i3tasks-demo-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1
  .venv/bin/python -m pip install -q -e . >.venv/pip-install.log 2>&1 \
    || { cat .venv/pip-install.log; exit 1; }
  touch "$stamp"
fi
exec .venv/bin/python example_project/run_demo.py "$@"
