"""Browser tests: Debian's Chromium (Playwright) against a real Daphne serving the test database.

The Daphne child reads the pytest-django test database live, so the tests use transactional
databases (their rows are committed, and visible to it). It and this process share a Redis key
prefix of their own (this worker's prefix + "-e2e"), so an event published here or by a sign-in
in the child reaches the browser, and no other test's event (sign-ins elsewhere publish to the
console too) can arrive as an unexpected sequence number.

Each transactional test ends with a flush, after which workbench's post_migrate hook makes the
role groups again. Every test module here is marked `e2e` and runs in one xdist worker
(`xdist_group("e2e")`).
"""

from __future__ import annotations

import copy
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from django.conf import settings
from django.db import connection, connections
from playwright.sync_api import expect

from tests.factories import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY_TIMEOUT_S = 60
# Assertions wait up to 10 s (Playwright's default is 5): CI machines are shared, and a live
# update that takes longer than that is a bug worth a failure, a slow one is not.
expect.set_options(timeout=10_000)
SCREENSHOTS = "test-results"

_reports = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test, so fixtures can tell whether it failed."""
    report = yield
    item.stash.setdefault(_reports, {})[report.when] = report
    return report


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url_for(name: str) -> str:
    """This process's DATABASE_URL (same server, maybe a unix socket dir) with another db name."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def e2e_redis_prefix() -> str:
    return f"{settings.REDIS_PREFIX}-e2e"


@pytest.fixture
def e2e_realtime(settings, e2e_redis_prefix):
    """This process publishes with the Daphne child's prefix (sequence numbers, channel layer)."""
    settings.REDIS_PREFIX = e2e_redis_prefix
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["prefix"] = f"{e2e_redis_prefix}:asgi"
    settings.CHANNEL_LAYERS = layers  # channels drops its cached layers on this change


@pytest.fixture
def live_server_url(django_db_setup, e2e_redis_prefix, tmp_path_factory):
    """Daphne in a child process, on a free port, serving the test database; one per test.

    Not one per session: each transactional test ends with a flush, after which post_migrate
    makes the content types again under new ids, and a long-lived Daphne would keep the ids it
    cached before (its next timeline entry about a case would then break a foreign key).
    """
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not at /usr/bin/chromium (apt-get install chromium)")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for(connection.settings_dict["NAME"]),
        "WORKBENCH_REDIS_PREFIX": e2e_redis_prefix,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    log_path = tmp_path_factory.mktemp("daphne") / "daphne.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "workbench.asgi:application"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until_healthy(url, daphne, log_path)
        yield url
    finally:
        daphne.terminate()
        try:
            daphne.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daphne.kill()
            daphne.wait()


def wait_until_healthy(url: str, daphne: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if daphne.poll() is not None:
            pytest.fail(f"Daphne exited with code {daphne.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(
        f"{url}/healthz did not answer 200 within {READY_TIMEOUT_S}s:\n{log_path.read_text()}"
    )


@pytest.fixture
def new_page(request, transactional_db, live_server_url, e2e_realtime, monkeypatch):
    """new_page() → a page in a fresh browser context (own cookies) on the live server.

    Playwright's sync API keeps an event loop running in this thread, which Django takes for an
    async context; the test's own database calls are plain sync code, so allow them. Chromium is
    stopped before the database is flushed. On failure every page is saved to test-results/.
    """
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    pages = []

    def make():
        context = browser.new_context(
            base_url=live_server_url, viewport={"width": 1280, "height": 800}
        )
        context.set_default_timeout(10_000)
        page = context.new_page()
        pages.append(page)
        return page

    try:
        yield make
    finally:
        reports = request.node.stash.get(_reports, {})
        if any(report.failed for report in reports.values()):
            save_screenshots(request, pages)
        # While Playwright runs, this thread is in another contextvars context, so Django (whose
        # connections are context-local) gave the test body a connection of its own: close it,
        # or the test database cannot be dropped at the end of the session.
        connections.close_all()
        browser.close()
        playwright.stop()


def save_screenshots(request, pages) -> None:
    folder = request.config.rootpath / SCREENSHOTS
    folder.mkdir(exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
    for index, page in enumerate(pages):
        path = folder / f"{stem}-{index}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
        except Exception as exc:  # a crashed page must not hide the test's own failure
            request.node.add_report_section("teardown", "screenshot", f"{path}: {exc}")
        else:
            request.node.add_report_section("teardown", "screenshot", str(path))


@pytest.fixture
def page(new_page):
    return new_page()


@pytest.fixture
def sign_in():
    """sign_in(page, username) → signs in through the real form: type, then press Enter."""

    def submit(page, username: str, password: str = PASSWORD):
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        with page.expect_navigation() as navigation:
            page.get_by_label("Password").press("Enter")
        return navigation.value

    return submit


def wait_until_wired(page, url) -> None:
    """After a navigation, before touching an htmx-driven control: the new document is there
    (its URL, a string or a regex) and htmx has wired it (`data-wb-htmx`, set by realtime.js).
    htmx's scripts are deferred, so a change or click that comes earlier is simply lost."""
    expect(page).to_have_url(url)
    expect(page.locator("html")).to_have_attribute("data-wb-htmx", "ready")
