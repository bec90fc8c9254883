#!/usr/bin/env bash
# The test command: sets up a virtualenv, checks the Pub/Sub emulator (Google's when installed,
# else the Python one; I3TASKS_EMULATOR=python|java|auto chooses) and PostgreSQL, runs
# ruff, then the whole suite on SQLite and on PostgreSQL. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==== %s\n' "$*"; }

step "virtualenv and packages"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || exit 1
fi
stamp=.venv/.i3tasks-test-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || exit 1
  .venv/bin/python -m pip install -q -e '.[test]' >.venv/pip-install.log 2>&1 \
    || { cat .venv/pip-install.log; exit 1; }
  touch "$stamp"
fi

step "Pub/Sub emulator"
.venv/bin/python -m django_i3tasks.testing.emulator --check || exit 1

step "PostgreSQL on 127.0.0.1:5432"
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_lsclusters >/dev/null; then
    read -r version cluster _ < <(pg_lsclusters --no-header | head -n 1)
    echo "starting PostgreSQL cluster $version/$cluster"
    pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || true
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
fi
if ! pg_isready -h 127.0.0.1 -p 5432; then
  echo "PostgreSQL is not answering on 127.0.0.1:5432 (user postgres, trust auth expected)" >&2
  exit 1
fi

step "ruff"
.venv/bin/ruff check . || exit 1

step "import layers (import-linter)"
.venv/bin/lint-imports --no-cache || exit 1

step "types (mypy)"
.venv/bin/mypy || exit 1

status=0
for db in sqlite postgres; do
  step "pytest on $db"
  I3TASKS_TEST_DB=$db .venv/bin/python -m pytest "$@"
  code=$?
  if [ "$code" -ne 0 ]; then
    echo "pytest on $db failed (exit $code)" >&2
    status=1
  fi
done
exit $status
