"""The live console: a sign-in elsewhere shows up without reloading; a gap makes it refetch."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import expect

from tests.live import wait_until_subscribed
from workbench import realtime
from workbench.audit import record_audit

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

# Opens a websocket from the page and resolves with its close code; closes it itself (1000)
# when the server has not closed it half a second after it opened.
OPEN_SOCKET = """(path) => new Promise((resolve) => {
  const socket = new WebSocket(`ws://${location.host}${path}`);
  socket.onopen = () => setTimeout(() => socket.close(1000), 500);
  socket.onclose = (event) => resolve(event.code);
})"""


def send_now(group: str, event: str) -> int:
    """realtime.send_now from a thread of its own: Playwright's event loop runs in this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(realtime.send_now, group, event, {}).result(timeout=10)


@pytest.fixture
def hub_log():
    """What the console page's sockets did: "open", then the start of each frame received."""
    return []


@pytest.fixture
def console_page(page, sign_in, live_server_url, cco, hub_log):
    """The CCO's console, open in its own browser, its socket subscribed to `console`."""

    def watch(socket):
        hub_log.append(f"open {socket.url}")
        socket.on("framereceived", lambda payload: hub_log.append(str(payload)[:30]))
        socket.on("close", lambda _socket: hub_log.append("close"))

    page.on("websocket", watch)
    sign_in(page, cco.username)
    expect(page).to_have_url(f"{live_server_url}/console/")
    # An attribute, not wait_for_function: polling a string predicate is an eval the CSP refuses.
    expect(page.locator("html")).to_have_attribute("data-wb-socket", "open")
    wait_until_subscribed("console")
    return page


def sign_in_rows(page):
    return page.locator("#sign-ins tbody tr td:first-child")


def test_sign_in_elsewhere_appears_on_the_open_console_without_reload(
    console_page, new_page, sign_in, live_server_url, agent, hub_log
):
    expect(console_page.get_by_test_id("signed-in-count")).to_have_text("1")
    expect(sign_in_rows(console_page)).to_have_text(["cleo"])
    console_requests = []
    console_page.on("request", lambda request: console_requests.append(request.url))

    other = new_page()
    sign_in(other, agent.username)

    expect(other).to_have_url(f"{live_server_url}/cases/")
    expect(console_page.get_by_test_id("signed-in-count")).to_have_text("2")
    expect(sign_in_rows(console_page)).to_have_text(["ada", "cleo"])
    expect(console_page.locator("#sign-ins .metric")).to_have_text("2 people signed in")
    assert console_requests == [], hub_log  # it came over the socket: no reload, no refetch
    assert console_page.evaluate("document.documentElement.dataset.wbSocket") == "open"


def test_a_missed_event_makes_the_console_refetch_its_sign_ins(
    console_page, live_server_url, make_user
):
    seen = console_page.evaluate(
        "JSON.parse(document.getElementById('realtime').dataset.wbSeq).console"
    )
    assert seen == realtime.current_seq("console")
    expect(console_page.get_by_test_id("signed-in-count")).to_have_text("1")
    ben = make_user("agent", username="ben")

    def is_refetch(request):
        return request.method == "GET" and request.url == f"{live_server_url}/console/"

    with console_page.expect_request(is_refetch) as refetch:
        realtime._redis().incr(realtime._seq_key("console"))  # an event that never arrives
        record_audit(actor=ben, action="sign_in", target=ben)
        sent = send_now("console", "console.sign_ins")

    assert sent == seen + 2
    assert refetch.value.headers["hx-request"] == "true"
    expect(console_page.get_by_test_id("signed-in-count")).to_have_text("2")
    expect(sign_in_rows(console_page)).to_have_text(["ben", "cleo"])


def test_marketer_page_cannot_subscribe_to_the_console(page, sign_in, live_server_url, marketer):
    sign_in(page, marketer.username)
    expect(page).to_have_url(f"{live_server_url}/campaigns/")

    assert page.evaluate(OPEN_SOCKET, "/ws/hub/?group=console") == 4403
    assert page.evaluate(OPEN_SOCKET, "/ws/hub/?group=campaign.1") == 1000
