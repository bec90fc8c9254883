#!/usr/bin/env bash
# The test command: builds one virtualenv per leg of the Django/Python matrix, checks the
# Pub/Sub emulator, PostgreSQL and the headless browser, runs ruff, then pytest:
#   main  .venv       Python 3.11, Django 5.2   whole suite on SQLite and on PostgreSQL
#   dj42  .venv-dj42  Python 3.11, Django 4.2   SQLite, without the slow subprocess-worker tests
#   dj6   .venv-dj6   Python 3.12, Django 6.x   SQLite, without the slow subprocess-worker tests
# The main leg also runs import-linter (the layer contract) and mypy; the dj6 leg also runs
# Django's own tests/tasks against PubSubBackend (scripts/conformance.py). The Pub/Sub emulator is
# Google's when it is installed, else the package's Python one (I3TASKS_EMULATOR=python|java|auto).
# Extra arguments go to pytest (every leg). I3TASKS_LEGS="main" (or "dj42 dj6"…) picks legs.
# Tests come in tiers (tests/unit, tests/db, tests/e2e); all run by default, and
# `bash scripts/test.sh tests/unit` is the quick loop (below).
set -uo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==== %s\n' "$*"; }

# --- the matrix --------------------------------------------------------------------------
# Each leg: a virtualenv, a Python version, a Django requirement, its databases (below).
# Extra packages for one leg's virtualenv go in its *_EXTRA array (e.g. "django-tasks>=0.8").
MAIN_EXTRA=()
DJ42_EXTRA=()
DJ6_EXTRA=()
# The focused legs leave out the tests that start worker subprocesses (tens of seconds each);
# the main leg runs them on both databases.
FOCUSED=(-m "not subprocess_worker")

leg_venv()   { case $1 in main) echo .venv ;; dj42) echo .venv-dj42 ;; dj6) echo .venv-dj6 ;; esac; }
leg_python() { case $1 in main|dj42) echo 3.11 ;; dj6) echo 3.12 ;; esac; }
leg_django() {
  case $1 in main) echo "django>=5.2,<5.3" ;; dj42) echo "django>=4.2,<5.0" ;;
    dj6) echo "django>=6.0,<7.0" ;; esac
}
leg_dbs()    { case $1 in main) echo "sqlite postgres" ;; *) echo "sqlite" ;; esac; }
leg_extra()  {
  case $1 in main) echo "${MAIN_EXTRA[*]:-}" ;; dj42) echo "${DJ42_EXTRA[*]:-}" ;;
    dj6) echo "${DJ6_EXTRA[*]:-}" ;; esac
}

LEGS=${I3TASKS_LEGS:-main dj42 dj6}
# The quick loop: when every path given is under tests/unit (`bash scripts/test.sh tests/unit`),
# only the first leg on SQLite, without the emulator, PostgreSQL and Chromium checks.
quick=""
for arg in "$@"; do
  case $arg in -*) ;; tests/unit|tests/unit/*|./tests/unit|./tests/unit/*) quick=1 ;;
    *) quick=""; break ;; esac
done
[ -z "$quick" ] || LEGS=${LEGS%% *}
for leg in $LEGS; do
  [ -n "$(leg_venv "$leg")" ] || { echo "unknown leg '$leg' (main, dj42, dj6)" >&2; exit 2; }
done

# Whether the interpreter $2 is Python $1 (e.g. 3.12).
is_python() {
  command -v "$2" >/dev/null 2>&1 && [ "$("$2" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$1" ]
}

# An interpreter of Python $1: on PATH, or installed by pyenv.
find_python() {
  local candidate
  for candidate in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python python3; do
    if is_python "$1" "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

# Create (or bring up to date) the virtualenv of leg $1. A stamp records what was installed,
# so a change of setup.py or of the leg's requirements reinstalls.
build_venv() {
  local leg=$1 venv python spec stamp
  venv=$(leg_venv "$leg")
  python=$(find_python "$(leg_python "$leg")") || {
    echo "leg $leg needs Python $(leg_python "$leg") (not on PATH, not under pyenv)" >&2
    return 1
  }
  spec="$(leg_django "$leg") $(leg_extra "$leg") $("$python" -V 2>&1) $(md5sum setup.py)"
  stamp=$venv/.i3tasks-test-installed
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$spec" ]; then
    return 0
  fi
  echo "building $venv ($("$python" -V 2>&1), $(leg_django "$leg") $(leg_extra "$leg"))"
  if ! is_python "$(leg_python "$leg")" "$venv/bin/python"; then
    rm -rf "$venv"
    "$python" -m venv "$venv" || return 1
  fi
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || return 1
  # shellcheck disable=SC2046
  "$venv/bin/python" -m pip install -q -e '.[test]' "$(leg_django "$leg")" $(leg_extra "$leg") \
    >"$venv/pip-install.log" 2>&1 || { cat "$venv/pip-install.log"; return 1; }
  echo "$spec" >"$stamp"
}

step "virtualenvs: $LEGS"
for leg in $LEGS; do
  build_venv "$leg" || exit 1
  printf '%-5s %-11s %s, Django %s\n' "$leg" "$(leg_venv "$leg")" \
    "$("$(leg_venv "$leg")/bin/python" -V 2>&1)" \
    "$("$(leg_venv "$leg")/bin/python" -c 'import django; print(django.get_version())')"
done
first_venv=$(leg_venv "${LEGS%% *}")
if [ -n "$quick" ]; then
  step "ruff"
  "$first_venv/bin/ruff" check . || exit 1
  step "pytest (quick loop): leg $LEGS ($first_venv), sqlite, $*"
  I3TASKS_TEST_DB=sqlite exec "$first_venv/bin/python" -m pytest -rs "$@"
fi

step "Pub/Sub emulator"
"$first_venv/bin/python" -m django_i3tasks.testing.emulator --check || exit 1

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

step "headless Chromium (the admin browser test)"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing the Debian packages chromium and chromium-driver"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; } \
      >/tmp/i3tasks-apt-chromium.log 2>&1 \
      || echo "could not install them (log: /tmp/i3tasks-apt-chromium.log)"
  fi
fi
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  chromium --version 2>/dev/null || true
else
  echo "NOTE: chromium/chromedriver missing and not installable here:" \
       "tests/e2e/test_admin_browser.py will be SKIPPED"
fi

step "ruff"
"$first_venv/bin/ruff" check . || exit 1

if [[ " $LEGS " == *" main "* ]]; then
  step "import layers (import-linter)"
  .venv/bin/lint-imports --no-cache || exit 1

  step "types (mypy)"
  .venv/bin/mypy || exit 1
fi

status=0
summary=()
for leg in $LEGS; do
  venv=$(leg_venv "$leg")
  for db in $(leg_dbs "$leg"); do
    args=("$@")
    [ "$leg" = main ] || args=("${FOCUSED[@]}" "$@")
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
done
step "summary"
printf '%s\n' "${summary[@]}"
exit $status
