"""What every benchmark shares: its own database, its own Redis prefix, a Daphne child, figures."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import redis
from django.conf import settings
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, connections

BENCH_PREFIX = "wbbench-"
BENCH_ASGI = "workbench.bench.asgi:application"
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
LOG_TAIL_CHARS = 4000


def bench_prefix(*parts: str) -> str:
    """A Redis prefix no dev server or test worker uses: `wbbench-<pid>[-part…]`."""
    return "-".join([f"{BENCH_PREFIX}{os.getpid()}", *parts])


def database_url_for(name: str) -> str:
    """This process's DATABASE_URL (same server, maybe a unix socket dir) with another db name."""
    parts = urlsplit(settings.DATABASE_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """Create and migrate `workbench_bench_<pid>`, point this process at it, and drop it after.

    Yields the URL a child process (Daphne) uses to reach it. The pid keeps a smoke test and a
    manual run apart; the demo database is never touched. Dropped even on error: WITH (FORCE)
    ends the sessions a killed Daphne may have left behind.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    original_name = connection.settings_dict["NAME"]
    original_test = dict(connection.settings_dict["TEST"])
    name = f"workbench_bench_{os.getpid()}"
    if name == original_name:
        raise CommandError(f"the bench database name {name} is the configured database's name")
    connection.settings_dict["TEST"]["NAME"] = name
    try:
        # Django's test machinery: creates the database, switches settings to it, migrates.
        connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        yield database_url_for(name)
    finally:
        connection.close()
        settings.DATABASES[DEFAULT_DB_ALIAS]["NAME"] = original_name
        connection.settings_dict["NAME"] = original_name
        connection.settings_dict["TEST"] = original_test
        quoted = connection.ops.quote_name(name)
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")


def forget_redis_prefix(prefix: str) -> None:
    """Delete every key under the bench prefix (sequence numbers, core layer groups, cache)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def raise_open_file_limit(wanted: int) -> None:
    """Lift the soft limit on open files (children inherit it): a socket is a file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        raise CommandError(f"needs {wanted} open files but the hard limit is {hard} (ulimit -Hn)")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` drops the database and stops Daphne."""

    def on_sigterm(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return self.base_url

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""


@contextlib.contextmanager
def daphne(*, database_url: str, env: dict[str, str]) -> Iterator[Server]:
    """One Daphne process (as `manage.py run` starts it) serving the bench ASGI app on loopback.

    `env` adds to this process's environment (the Redis prefix, the channel layer); the
    access log goes to a temporary file, kept and named only when something went wrong.
    """
    port = free_port()
    child_env = {**os.environ, **env, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    child_env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    handle, log_name = tempfile.mkstemp(prefix="wbbench-daphne-", suffix=".log")
    log_path = Path(log_name)
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), BENCH_ASGI]
    with os.fdopen(handle, "wb") as log:
        # Its own session: Ctrl-C reaches the bench, which then stops Daphne in order.
        process = subprocess.Popen(
            argv, env=child_env, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = Server(port=port, process=process, log_path=log_path)
    failed = True
    try:
        wait_until_healthy(server)
        yield server
        failed = False
    finally:
        stop_process(process)
        if failed:
            sys.stderr.write(f"bench: Daphne's log is kept in {log_path}\n")
        else:
            log_path.unlink(missing_ok=True)


def wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(trust_env=False, timeout=2) as client, _quiet("httpx"):
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise CommandError(
                    f"Daphne exited with code {server.process.returncode}:\n{server.log_tail()}"
                )
            try:
                if client.get(f"{server.base_url}/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise CommandError(
        f"Daphne's /healthz did not answer 200 in {READY_TIMEOUT_S}s:\n{server.log_tail()}"
    )


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Hold a logger at WARNING: a line per readiness poll would bury the report."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def stop_process(process: subprocess.Popen, *, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM its whole session, wait, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class CpuMeter:
    """CPU used by this process and by the server over a window, as % of one core."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __enter__(self) -> CpuMeter:
        self.started = time.perf_counter()
        self.own = time.process_time()
        self.servers = self.server.cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.perf_counter() - self.started, 1e-9)
        self.client_pct = round(100 * (time.process_time() - self.own) / wall, 1)
        self.server_pct = round(100 * (self.server.cpu_seconds() - self.servers) / wall, 1)


def load_average() -> float:
    """The 1-minute load average: the bench shares the machine, and the figures say with what."""
    return round(os.getloadavg()[0], 2)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values); sorting sorted values again costs one pass."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: first column left-aligned, figures right-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        first, *rest = row
        return "  ".join(
            [first.ljust(widths[0]), *(v.rjust(w) for v, w in zip(rest, widths[1:], strict=True))]
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


CHILD_STOP_TIMEOUT_S = 60


def run_forked(worker: Callable, args_per_process: Sequence[tuple], *, what: str,
               timeout_s: float) -> tuple[list[dict], float]:  # fmt: skip
    """Fork a process per args tuple running `worker(*args, start, results)`, release them
    together, and return each one's report (what it put on `results`) with the monotonic time
    they were released at.

    A worker waits on the `start` barrier before its timed work, puts exactly one dict on
    `results`, and on failure aborts the barrier and puts {"error": ...}: the first error is
    raised here as a CommandError naming `what`. This process's database connections are closed
    first, so no child shares their sockets (each connects on its own).
    """
    connections.close_all()
    context = multiprocessing.get_context("fork")
    start = context.Barrier(len(args_per_process) + 1)
    results = context.Queue()
    workers = [
        context.Process(target=worker, args=(*args, start, results), daemon=True)
        for args in args_per_process
    ]
    for process in workers:
        process.start()
    try:
        try:
            start.wait(timeout=timeout_s)
        except threading.BrokenBarrierError:
            report = results.get(timeout=CHILD_STOP_TIMEOUT_S)
            raise CommandError(f"{what} failed: {report.get('error')}") from None
        started = time.monotonic()
        reports = [results.get(timeout=timeout_s) for _ in workers]
    finally:
        for process in workers:
            process.join(timeout=CHILD_STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
    errors = [report["error"] for report in reports if report.get("error")]
    if errors:
        raise CommandError(f"{what} failed: {errors[0]}")
    return reports, started


def is_isolated() -> bool:
    """True when this process's settings were read with a bench Redis prefix."""
    return settings.REDIS_PREFIX.startswith(BENCH_PREFIX)


def run_isolated(scenario: str, scale: str, extra: Sequence[str] = ()) -> dict:
    """`manage.py bench SCENARIO` again (with the `extra` arguments) and a bench Redis prefix
    in its environment (settings read the prefix once, at import); return the figures its last
    line printed.

    The child has its own session and is stopped with SIGTERM (a clean exit that drops its
    database) if this process is interrupted; its stderr passes straight through. A child that
    fails but printed figures naming what failed returns them, so the report still shows them.
    """
    argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "bench", scenario,
            "--scale", scale, "--json", *extra]  # fmt: skip
    env = {**os.environ, "WORKBENCH_REDIS_PREFIX": bench_prefix(scenario)}
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        stdout, _ = child.communicate()
    finally:
        if child.poll() is None:
            stop_process(child, timeout_s=CHILD_STOP_TIMEOUT_S)
    try:
        figures = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise CommandError(f"the {scenario} run printed no figures:\n{stdout[-2000:]}") from exc
    if child.returncode != 0 and not figures.get("failed"):
        raise CommandError(f"the {scenario} run failed (exit code {child.returncode})")
    return figures
