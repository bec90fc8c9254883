#!/usr/bin/env bash
# The demo command: sets up a virtualenv, then runs example_project end to end on SQLite and
# a Pub/Sub emulator (started and stopped by the demo itself): Google's when it is installed,
# else the Python one (I3TASKS_EMULATOR=python|java|auto chooses).
set -euo pipefail
cd "$(dirname "$0")/.."
# Any Python 3.10-3.13 will do: the newest of python3.13 … python3.10, else python3.
find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3.10 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c \
        'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "the demo needs Python 3.10-3.13 (python3.13 … python3.10 or python3 on PATH)" >&2
  return 1
}
if [ ! -x .venv/bin/python ]; then
  python=$(find_python)
  "$python" -m venv .venv
fi
stamp=.venv/.i3tasks-demo-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1
  .venv/bin/python -m pip install -q -e . >.venv/pip-install.log 2>&1 \
    || { cat .venv/pip-install.log; exit 1; }
  touch "$stamp"
fi
exec .venv/bin/python example_project/run_demo.py "$@"
