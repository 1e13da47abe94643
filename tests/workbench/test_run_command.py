"""`manage.py run`: starts Daphne, a Celery worker and beat; Ctrl-C stops every one of them.

Each test gives the command a fresh database of its own on the same PostgreSQL server (never the
development database) and a Redis key prefix of its own.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import psycopg
import pytest
import redis
from psycopg import sql

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("run")]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30


def database_url_for(name: str) -> str:
    """This process's DATABASE_URL (same server, maybe a unix socket dir) with another db name."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tables_in(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return sorted(name for (name,) in rows)


@pytest.fixture
def fresh_database():
    """A new, empty database on the test server for one run; dropped (connections and all) after."""
    name = f"workbench_runtest_{os.getpid()}"
    admin = database_url_for("postgres")
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(drop)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield database_url_for(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(drop)


@pytest.fixture
def run_env(fresh_database):
    """The environment of `manage.py run`: the fresh database, the same Redis, its own prefix."""
    prefix = f"wbruntest-{os.getpid()}"
    env = {**os.environ, "DATABASE_URL": fresh_database, "WORKBENCH_REDIS_PREFIX": prefix,
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    yield env
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def manage_run(*args: str) -> list[str]:
    return [sys.executable, "manage.py", "run", "--no-demo", "--host", "127.0.0.1", *args]


def wait_until_ready(url: str, run: subprocess.Popen, log: Path) -> None:
    """Until /healthz answers 200 and `run` has said so (its banner names the URL)."""
    banner = f"Workbench is running at {url}/"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert run.poll() is None, f"run exited with {run.returncode}:\n{log.read_text()}"
        try:
            healthy = httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy and banner in log.read_text():
            return
        time.sleep(0.3)
    pytest.fail(f"{url} was not ready within {READY_TIMEOUT_S}s:\n{log.read_text()}")


def kind_of(process: psutil.Process) -> str:
    """daphne, worker (the Celery worker or one of its pool processes), beat, or the cmdline."""
    argv = process.cmdline()
    if argv[1:3] == ["-m", "daphne"]:
        return "daphne"
    if argv[1:3] == ["-m", "celery"] and "worker" in argv:
        return "worker"
    if argv[1:3] == ["-m", "celery"] and "beat" in argv:
        return "beat"
    return " ".join(argv)


# Daphne, the worker with its two pool processes (--concurrency 2), beat.
EXPECTED_KINDS = ["beat", "daphne", "worker", "worker", "worker"]


def wait_for_descendants(run: subprocess.Popen, timeout: float = 60) -> list[psutil.Process]:
    """Every process below `run` once all of them have started (the pool comes up last)."""
    deadline = time.monotonic() + timeout
    while True:
        found = psutil.Process(run.pid).children(recursive=True)
        try:
            kinds = sorted(kind_of(p) for p in found)
        except psutil.NoSuchProcess:
            kinds = []
        if kinds == EXPECTED_KINDS or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def is_gone(process: psutil.Process) -> bool:
    """Exited: no such process any more, or only a zombie waiting for an init to reap it."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_run_starts_daphne_worker_and_beat_and_ctrl_c_stops_every_process(run_env, tmp_path):
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen(
            manage_run("--port", str(port)), cwd=ROOT, env=run_env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    descendants: list[psutil.Process] = []
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", run, log)
        descendants = wait_for_descendants(run)
        kinds = {p.pid: kind_of(p) for p in descendants}
        assert sorted(kinds.values()) == EXPECTED_KINDS
        leaders = [p for p in descendants if p.ppid() == run.pid]
        assert sorted(kind_of(p) for p in leaders) == ["beat", "daphne", "worker"]
        # Each child leads a session of its own, so a terminal's Ctrl-C reaches only `run`.
        assert all(os.getsid(p.pid) == p.pid for p in leaders)

        os.kill(run.pid, signal.SIGINT)

        assert run.wait(timeout=STOP_TIMEOUT_S) == 0
        deadline = time.monotonic() + 5
        while not all(is_gone(p) for p in descendants) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [kinds[p.pid] for p in descendants if not is_gone(p)] == []
        output = log.read_text()
        assert "Stopping Daphne, the Celery worker and beat…" in output
        assert output.endswith("Stopped. Data stays in var/ for the next run.\n")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for process in descendants:
            if not is_gone(process):
                process.kill()


def test_run_refuses_a_taken_port_at_once_naming_it(run_env, fresh_database):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            manage_run("--port", str(port)), cwd=ROOT, env=run_env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        elapsed = time.monotonic() - started

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"CommandError: port {port} on 127.0.0.1 is taken (Address already in use); "
        "choose another with PORT=… (make run PORT=8001)"
    )
    assert result.stdout == ""
    assert elapsed < 20  # refused before migrating or starting anything
    assert tables_in(fresh_database) == []


@pytest.mark.parametrize(
    ("port", "code", "message"),
    [
        ("0", 1, "CommandError: --port must be between 1 and 65535, not 0"),
        ("65536", 1, "CommandError: --port must be between 1 and 65535, not 65536"),
        ("http", 2, "manage.py run: error: argument --port: invalid int value: 'http'"),
    ],
)
def test_run_refuses_a_port_that_is_not_one(run_env, fresh_database, port, code, message):
    result = subprocess.run(
        manage_run("--port", port), cwd=ROOT, env=run_env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip

    assert result.returncode == code
    assert result.stderr.splitlines()[-1] == message
    assert result.stdout == ""
    assert tables_in(fresh_database) == []
