"""`python manage.py run`: one machine, everything: migrate, demo data, Daphne, Celery worker, beat.

The embedded PostgreSQL and Redis were already started (or joined) when settings loaded, and
their URLs are in the environment the children inherit. Children run in their own sessions so
that Ctrl-C reaches only this supervisor, which then stops them in order. If any child dies, the
others are stopped and the command exits non-zero naming it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from workbench.management.commands.seed_demo import DEMO_PASSWORD, DEMO_USERS

READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 15


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None


class Command(BaseCommand):
    help = "Start Workbench on this machine: Daphne (HTTP + websockets), a Celery worker and beat."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
        parser.add_argument("--no-demo", action="store_true", help="do not load the demo users")

    def handle(self, *args, host: str, port: int, no_demo: bool, **options) -> None:
        if not 0 < port < 65536:
            raise CommandError(f"--port must be between 1 and 65535, not {port}")
        ensure_port_free(host, port)
        self.stdout.write("Migrating the database…")
        call_command("migrate", interactive=False, verbosity=0)
        if not no_demo:
            call_command("seed_demo", stdout=self.stdout)
        python = sys.executable
        children = [
            Child("daphne", [python, "-m", "daphne", "-b", host, "-p", str(port),
                             "--proxy-headers", "workbench.asgi:application"]),
            Child("celery worker", [python, "-m", "celery", "-A", "workbench", "worker",
                                    "--loglevel", "INFO", "--concurrency", "2",
                                    "--without-gossip", "--without-mingle", "-n", "worker@%h"]),
            Child("celery beat", [python, "-m", "celery", "-A", "workbench", "beat",
                                  "--loglevel", "INFO"]),
        ]  # fmt: skip
        stopping = {"signal": None}

        def on_signal(signum, _frame):
            stopping["signal"] = signum

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            for child in children:
                child.process = subprocess.Popen(child.argv, start_new_session=True)
            url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
            base_url = f"http://{url_host}:{port}"
            self.wait_until_ready(base_url, children, stopping)
            if stopping["signal"] is None:
                self.print_banner(f"http://{host}:{port}/", no_demo)
            while stopping["signal"] is None:
                dead = next((c for c in children if c.process.poll() is not None), None)
                if dead is not None:
                    raise CommandError(
                        f"{dead.name} exited with code {dead.process.returncode}; "
                        "stopping the others."
                    )
                time.sleep(0.3)
            self.stdout.write("\nStopping Daphne, the Celery worker and beat…")
        finally:
            stop_children(children)
        self.stdout.write("Stopped. Data stays in var/ for the next run.")

    def wait_until_ready(self, base_url: str, children: list[Child], stopping: dict) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and stopping["signal"] is None:
            dead = next((c for c in children if c.process.poll() is not None), None)
            if dead is not None:
                code = dead.process.returncode
                raise CommandError(f"{dead.name} did not start (exit code {code})")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        if stopping["signal"] is None:
            raise CommandError(f"{base_url}/healthz did not answer 200 within {READY_TIMEOUT_S}s")

    def print_banner(self, url: str, no_demo: bool) -> None:
        lines = ["", "=" * 64, f"  Workbench is running at {url}", ""]
        if not no_demo:
            lines.append(f"  Demo logins (password for all: {DEMO_PASSWORD})")
            for username, first, last, role, _tz in DEMO_USERS:
                lines.append(f"    {username:<8} {first} {last:<12} {role or 'no role yet'}")
            lines.append("")
        if "var" in settings.DATABASE_URL + settings.REDIS_URL:
            lines.append("  PostgreSQL and Redis: embedded, under var/")
        lines += ["  Ctrl-C stops everything.", "=" * 64, ""]
        self.stdout.write("\n".join(lines))


def ensure_port_free(host: str, port: int) -> None:
    """Refuse early, naming the port, when something already listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CommandError(
                f"port {port} on {host} is taken ({exc.strerror}); "
                f"choose another with PORT=… (make run PORT=8001)"
            ) from exc


def stop_children(children: list[Child]) -> None:
    """SIGTERM every child still running, wait, then SIGKILL what is left (whole sessions)."""
    running = [c for c in children if c.process is not None and c.process.poll() is None]
    for child in running:
        _signal_group(child.process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in running:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child.process, signal.SIGKILL)
            child.process.wait()
    for child in children:
        if child.process is not None:
            _signal_group(child.process, signal.SIGKILL)  # stragglers: pool processes


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
