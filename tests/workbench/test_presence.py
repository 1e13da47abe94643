"""Presence on a case: who else views it and who types, live over the hub, for readers only."""

import json
import re
from html import unescape
from urllib.parse import urlencode

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from cases.fragments import render_case_presence
from tests.cases.test_queue_page import make_case, make_queue
from workbench import presence, realtime
from workbench.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

MARK = re.compile(r"^<!--wb:(?P<group>[a-z_.0-9]+):(?P<seq>[0-9]+)-->")


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(presence, "clock", fake)
    return fake


@pytest.fixture(autouse=True)
def no_presence_left_over():
    """Presence lives in Redis, not in the test database: start every test with none."""
    client = presence._redis()
    for key in client.scan_iter(f"{settings.REDIS_PREFIX}:presence:*"):
        client.delete(key)
    yield


@pytest.fixture
def ada(make_user):
    return make_user("agent", username="ada", first_name="Ada", last_name="Lovelace")


@pytest.fixture
def priya(make_user):
    return make_user("agent", username="priya", first_name="Priya", last_name="Shah")


@pytest.fixture
def support(ada, priya):
    return make_queue("Support", members=[ada, priya])


@pytest.fixture
def case(support):
    return make_case(support, subject="Refund for order 42")


def cookie_for(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def sockets_for(*users) -> list[dict]:
    """What each user's browser sends when it opens the hub: its session cookie and origin."""
    return [
        {
            "headers": [
                (b"origin", b"http://localhost"),
                (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie_for(user)}".encode()),
            ]
        }
        for user in users
    ]


async def connect(browser: dict, *groups: str) -> WebsocketCommunicator:
    """A socket on the real ASGI app (session auth, origin check), joined to `groups`."""
    query = urlencode([("group", group) for group in groups])
    socket = WebsocketCommunicator(application, f"/ws/hub/?{query}", headers=browser["headers"])
    connected, _ = await socket.connect()
    assert connected
    return socket


async def send(socket: WebsocketCommunicator, **frame) -> None:
    await socket.send_to(text_data=json.dumps(frame))


def heartbeat(case_pk: int) -> dict:
    return {"type": "presence", "case": case_pk}


async def shown(socket: WebsocketCommunicator, timeout: float = 2) -> str:
    """The next presence fragment the socket gets, as the words a user reads in it."""
    text = await socket.receive_from(timeout=timeout)
    html = MARK.sub("", text)
    assert 'id="case-presence"' in html, html
    assert 'hx-swap-oob="true"' in html
    return " ".join(unescape(re.sub(r"<[^>]+>", "", html)).split())


async def closed_with(socket: WebsocketCommunicator) -> int | None:
    """The close code the hub sent (then the server's disconnect), or None if it stayed open."""
    if await socket.receive_nothing(timeout=0.5):
        return None
    output = await socket.receive_output(timeout=1)
    assert output["type"] == "websocket.close", output
    await socket.disconnect(code=output["code"])
    return output["code"]


def here(case, viewer) -> list[tuple[str, bool]]:
    group = realtime.group_name("case", case.pk)
    return [(p.name, p.is_typing) for p in presence.people_here(group=group, viewer_id=viewer.pk)]


# --- who may take part ------------------------------------------------------------------------


def test_a_marketers_socket_cannot_join_presence(make_user, ada, case, marketer):
    group = realtime.group_name("case", case.pk)
    ada_browser, mia_browser = sockets_for(ada, marketer)

    async def scenario():
        ada_socket = await connect(ada_browser, group)
        await send(ada_socket, **heartbeat(case.pk))
        alone = await shown(ada_socket)
        # The marketer cannot join the case group at all, nor take part from another group.
        on_case = await connect(mia_browser, group)
        refused_join = await closed_with(on_case)
        on_customer = await connect(mia_browser, realtime.group_name("customer", case.customer_id))
        await send(on_customer, **heartbeat(case.pk))
        refused_frame = await closed_with(on_customer)
        ada_heard = await ada_socket.receive_nothing(timeout=0.5)
        await ada_socket.disconnect()
        return alone, refused_join, refused_frame, ada_heard

    alone, refused_join, refused_frame, ada_heard = async_to_sync(scenario)()
    assert alone == ""
    assert (refused_join, refused_frame) == (4403, 4403)
    assert ada_heard is True  # no fragment: nothing changed for Ada
    assert here(case, ada) == []


def test_an_agent_outside_the_queue_cannot_join_presence(make_user, ada, case):
    outsider = make_user("agent", username="olga", first_name="Olga", last_name="Out")
    group = realtime.group_name("case", case.pk)
    ada_browser, olga_browser = sockets_for(ada, outsider)

    async def scenario():
        ada_socket = await connect(ada_browser, group)
        await send(ada_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        # The role may hold the case group (it hears nothing from it), but not be present.
        olga_socket = await connect(olga_browser, group)
        await send(olga_socket, **heartbeat(case.pk), typing=True)
        refused = await closed_with(olga_socket)
        ada_heard = await ada_socket.receive_nothing(timeout=0.5)
        await ada_socket.disconnect()
        return refused, ada_heard

    assert async_to_sync(scenario)() == (4403, True)
    assert here(case, ada) == []


def test_an_agent_assigned_outside_their_queues_a_supervisor_and_the_cco_take_part(
    make_user, ada, support, case, supervisor, cco
):
    support.members.add(supervisor)  # a supervisor's team is their queues
    assigned = make_user("agent", username="abe", first_name="Abe", last_name="Assigned")
    case.assignee = assigned
    case.save(update_fields=["assignee"])
    group = realtime.group_name("case", case.pk)
    ada_browser, *browsers = sockets_for(ada, assigned, supervisor, cco)

    async def scenario():
        ada_socket = await connect(ada_browser, group)
        await send(ada_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        others = []
        for browser in browsers:
            socket = await connect(browser, group)
            await send(socket, **heartbeat(case.pk))
            others.append(socket)
            ada_sees = await shown(ada_socket)
        for socket in [ada_socket, *others]:
            await socket.disconnect()
        return ada_sees

    names = sorted(u.get_full_name() for u in (assigned, supervisor, cco))
    assert async_to_sync(scenario)() == "Also here: " + ", ".join(names)
    assert here(case, ada) == []


def test_a_frame_for_a_group_the_socket_has_not_joined_is_refused(ada, case, support):
    other = make_case(support, subject="Another case")
    [browser] = sockets_for(ada)

    async def scenario():
        socket = await connect(browser, realtime.group_name("case", case.pk))
        await send(socket, **heartbeat(other.pk))
        return await closed_with(socket)

    assert async_to_sync(scenario)() == 4403
    assert here(other, ada) == []


# --- what a viewer sees -------------------------------------------------------------------------


def test_two_agents_on_one_case_each_see_the_other(ada, priya, case):
    group = realtime.group_name("case", case.pk)
    ada_browser, priya_browser = sockets_for(ada, priya)

    async def scenario():
        ada_socket = await connect(ada_browser, group)
        await send(ada_socket, **heartbeat(case.pk))
        ada_alone = await shown(ada_socket)
        priya_socket = await connect(priya_browser, group)
        await send(priya_socket, **heartbeat(case.pk))
        ada_sees = await shown(ada_socket)
        priya_sees = await shown(priya_socket)
        # A heartbeat that changes nothing publishes nothing.
        await send(ada_socket, **heartbeat(case.pk))
        quiet = await priya_socket.receive_nothing(timeout=0.5)
        await ada_socket.disconnect()
        await priya_socket.disconnect()
        return ada_alone, ada_sees, priya_sees, quiet

    ada_alone, ada_sees, priya_sees, quiet = async_to_sync(scenario)()
    assert ada_alone == ""
    assert ada_sees == "Also here: Priya Shah"
    assert priya_sees == "Also here: Ada Lovelace"
    assert quiet is True


def test_a_page_that_changes_nothing_still_gets_the_current_state(ada, priya, case):
    """A second tab of someone already here changes nothing for the others, but needs to know."""
    group = realtime.group_name("case", case.pk)
    ada_browser, priya_browser, priya_tab = sockets_for(ada, priya, priya)

    async def scenario():
        ada_socket = await connect(ada_browser, group)
        await send(ada_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        priya_socket = await connect(priya_browser, group)
        await send(priya_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        await shown(priya_socket)
        second_tab = await connect(priya_tab, group)
        await send(second_tab, **heartbeat(case.pk))
        second_tab_text = await second_tab.receive_from(timeout=2)
        ada_heard = await ada_socket.receive_nothing(timeout=0.5)
        for socket in (ada_socket, priya_socket, second_tab):
            await socket.disconnect()
        return second_tab_text, ada_heard

    text, ada_heard = async_to_sync(scenario)()
    assert not MARK.match(text)  # sent to that socket alone: not a numbered group event
    assert "Also here:" in text and "Ada Lovelace" in text
    assert ada_heard is True


def test_typing_shows_and_then_clears(ada, priya, case):
    group = realtime.group_name("case", case.pk)
    ada_browser, priya_browser = sockets_for(ada, priya)

    async def scenario():
        ada_socket = await connect(ada_browser, group)
        await send(ada_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        priya_socket = await connect(priya_browser, group)
        await send(priya_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        await shown(priya_socket)
        await send(priya_socket, **heartbeat(case.pk), typing=True)
        typing = await shown(ada_socket)
        priya_own = await shown(priya_socket)
        # Stopping within the rate limit's second waits for it, then goes out.
        await send(priya_socket, **heartbeat(case.pk), typing=False)
        stopped = await shown(ada_socket, timeout=3)
        await ada_socket.disconnect()
        await priya_socket.disconnect()
        return typing, priya_own, stopped

    typing, priya_own, stopped = async_to_sync(scenario)()
    assert typing == "Also here: Priya Shah (typing…)"
    assert priya_own == "Also here: Ada Lovelace"  # nobody sees themself
    assert stopped == "Also here: Priya Shah"


def test_typing_runs_out_without_further_keystrokes(ada, priya, case, clock):
    group = realtime.group_name("case", case.pk)
    presence.update_presence(group=group, user_id=priya.pk, socket="tab-1", typing=True)
    assert here(case, ada) == [("Priya Shah", True)]
    clock.now += presence.TYPING_SECONDS + 1
    assert here(case, ada) == [("Priya Shah", False)]
    assert presence.expire_presence(group=group) is True  # the pages still showed "typing"
    assert presence.expire_presence(group=group) is False


def test_closing_the_page_removes_the_viewer_once_their_last_socket_is_gone(ada, priya, case):
    group = realtime.group_name("case", case.pk)
    ada_browser, priya_browser, priya_tab = sockets_for(ada, priya, priya)

    async def scenario():
        ada_socket = await connect(ada_browser, group)
        await send(ada_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        first = await connect(priya_browser, group)
        await send(first, **heartbeat(case.pk))
        await shown(ada_socket)
        second = await connect(priya_tab, group)
        await send(second, **heartbeat(case.pk))
        await second.receive_from(timeout=2)
        await first.disconnect()
        still_there = await ada_socket.receive_nothing(timeout=0.5)
        await second.disconnect()
        gone = await shown(ada_socket)
        await ada_socket.disconnect()
        return still_there, gone

    still_there, gone = async_to_sync(scenario)()
    assert still_there is True
    assert gone == ""
    assert here(case, priya) == []


def test_stale_heartbeats_expire(ada, priya, case, clock):
    """A browser (or server) that died says no goodbye: its heartbeat ages out."""
    group = realtime.group_name("case", case.pk)
    ada_browser, priya_browser = sockets_for(ada, priya)

    async def scenario():
        ada_socket = await connect(ada_browser, group)
        await send(ada_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        priya_socket = await connect(priya_browser, group)
        await send(priya_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        await shown(priya_socket)
        clock.now += presence.HEARTBEAT_SECONDS
        await send(ada_socket, **heartbeat(case.pk))
        within = await ada_socket.receive_nothing(timeout=0.5)
        clock.now += presence.VIEWING_SECONDS - presence.HEARTBEAT_SECONDS + 1
        await send(ada_socket, **heartbeat(case.pk))  # Priya's last heartbeat is 46 s old
        after = await shown(ada_socket)
        await ada_socket.disconnect()
        return within, after

    within, after = async_to_sync(scenario)()
    assert within is True
    assert after == ""
    assert here(case, ada) == []


def test_names_are_escaped(make_user, ada, support, case):
    eve = make_user("agent", username="eve", first_name="<b>Eve</b>", last_name="")
    support.members.add(eve)
    presence.update_presence(
        group=realtime.group_name("case", case.pk), user_id=eve.pk, socket="s", typing=None
    )
    html = render_case_presence(ada, pk=case.pk)
    assert "&lt;b&gt;Eve&lt;/b&gt;" in html
    assert "<b>" not in html
    assert re.search(r"<p hx-disable>.*Eve", html, re.S)


def test_the_fragment_is_empty_for_a_viewer_who_may_not_read_the_case(
    make_user, ada, case, marketer
):
    outsider = make_user("agent", username="olga")
    presence.update_presence(
        group=realtime.group_name("case", case.pk), user_id=ada.pk, socket="s", typing=None
    )
    assert render_case_presence(outsider, pk=case.pk) == ""
    assert render_case_presence(marketer, pk=case.pk) == ""


def test_the_fragment_costs_the_same_queries_for_one_or_many_viewers(
    make_user, supervisor, support, case, django_assert_num_queries, clock
):
    support.members.add(supervisor)  # a supervisor's team is their queues
    group = realtime.group_name("case", case.pk)
    first = make_user("agent", username="a0", first_name="A", last_name="Zero")
    presence.update_presence(group=group, user_id=first.pk, socket="s0", typing=True)
    render_case_presence(supervisor, pk=case.pk)  # warm the role cache on the viewer
    with django_assert_num_queries(2):  # the case, the names
        one = render_case_presence(supervisor, pk=case.pk)
    for n in range(1, 6):
        viewer = make_user("agent", username=f"a{n}", first_name="A", last_name=f"N{n}")
        presence.update_presence(group=group, user_id=viewer.pk, socket=f"s{n}", typing=None)
    with django_assert_num_queries(2):
        many = render_case_presence(supervisor, pk=case.pk)
    assert one.count('class="presence-person') == 1
    assert many.count('class="presence-person') == 6
    assert "A Zero <em>(typing…)</em>" in many


# --- bad frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"type": "presence", "case": "CASE"}', 1007),
        ('{"type": "presence", "case": true}', 1007),
        ('{"type": "presence", "case": 0}', 1007),
        ('{"type": "presence"}', 1007),
        ('{"type": "presence", "case": CASE, "typing": "yes"}', 1007),
        ('{"type": "presence", "case": CASE, "html": "<b>hi</b>"}', 1007),
        ('{"type": "presence", "case": CASE, "queue": 1}', 1007),
        ('{"type": "presence", "case": CASE, "pad": "' + "x" * 5000 + '"}', 1009),
    ],
)
def test_a_bad_presence_frame_closes_only_that_socket(ada, priya, case, frame, code):
    group = realtime.group_name("case", case.pk)
    ada_browser, priya_browser = sockets_for(ada, priya)

    async def scenario():
        ada_socket = await connect(ada_browser, group)
        await send(ada_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        priya_socket = await connect(priya_browser, group)
        await send(priya_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        await shown(priya_socket)
        await priya_socket.send_to(text_data=frame.replace("CASE", str(case.pk)))
        priya_code = await closed_with(priya_socket)
        ada_sees = await shown(ada_socket)  # Priya's page closed: she is gone
        await send(ada_socket, **heartbeat(case.pk))
        ada_still_open = await ada_socket.receive_nothing(timeout=0.5)  # no close, no change
        await ada_socket.disconnect()
        return priya_code, ada_sees, ada_still_open

    assert async_to_sync(scenario)() == (code, "", True)


def test_parse_frame_accepts_heartbeats_and_typing_states():
    assert presence.parse_frame({"type": "presence", "case": 12}) == presence.Update(
        kind="case", pk=12, typing=None
    )
    assert presence.parse_frame({"type": "presence", "case": 12, "typing": False}).typing is False
    with pytest.raises(ValueError):
        presence.parse_frame({"type": "presence", "case": 2**63})


# --- the typing rate limit --------------------------------------------------------------------


def test_typing_gate_relays_at_most_one_state_change_per_second():
    gate = presence.TypingGate(interval_seconds=1.0)
    assert gate.offer(False, now=0.0) is False  # not typing, and nobody thinks otherwise
    assert gate.offer(True, now=0.0) is True
    assert gate.offer(False, now=0.2) is False  # too soon: it waits
    assert gate.pending is False
    assert gate.wait_seconds(now=0.2) == pytest.approx(0.8)
    assert gate.offer(True, now=0.3) is False  # back to what was relayed: nothing waits
    assert gate.pending is None
    assert gate.offer(False, now=0.5) is False
    assert gate.offer(False, now=1.0) is True  # the second is over
    assert gate.offer(False, now=5.0) is False  # said already
    assert gate.offer(True, now=5.0) is True
    assert gate.offer(True, now=5.5) is False  # a refresh, too soon
    assert gate.pending is None
    assert gate.offer(True, now=6.1) is True  # a refresh keeps "typing" alive


def test_a_flood_of_typing_frames_publishes_at_most_once_a_second(ada, priya, case):
    group = realtime.group_name("case", case.pk)
    ada_browser, priya_browser = sockets_for(ada, priya)

    async def scenario():
        ada_socket = await connect(ada_browser, group)
        await send(ada_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        priya_socket = await connect(priya_browser, group)
        await send(priya_socket, **heartbeat(case.pk))
        await shown(ada_socket)
        await shown(priya_socket)
        for n in range(40):
            await send(priya_socket, **heartbeat(case.pk), typing=n % 2 == 0)
        seen = []
        while not await ada_socket.receive_nothing(timeout=1.5):
            seen.append(await shown(ada_socket))
        await ada_socket.disconnect()
        await priya_socket.disconnect()
        return seen

    seen = async_to_sync(scenario)()
    # The first state at once, then the last one (not typing) after the second is over.
    assert seen == ["Also here: Priya Shah (typing…)", "Also here: Priya Shah"]


# --- the case page ------------------------------------------------------------------------------


def test_the_case_page_has_the_presence_slot_shortcuts_and_take_next(client_for, ada, case):
    page = client_for(ada).get(f"/cases/{case.pk}/").text
    assert '<div id="case-presence" class="presence" aria-live="polite">' in page
    assert f'data-case-id="{case.pk}"' in page
    assert 'id="take-next-form"' in page and 'action="/cases/take-next/"' in page
    assert re.search(r'<section id="shortcuts-help"[^>]*hidden>', page)
    assert "/static/js/case.js" in page


def test_the_cco_reads_the_case_without_take_next(client_for, cco, case):
    page = client_for(cco).get(f"/cases/{case.pk}/").text
    assert 'id="case-presence"' in page
    assert 'id="take-next-form"' not in page
    assert "Take the next case" not in page


def test_a_marketer_gets_403_on_the_case_page(client_for, marketer, case):
    assert client_for(marketer).get(f"/cases/{case.pk}/").status_code == 403


def test_the_header_refetch_after_a_missed_event_brings_who_is_here(client_for, ada, priya, case):
    # A page drops an event that follows a gap in the group's sequence and refetches the header
    # (static/js/realtime.js); a dropped presence event must come back with it.
    presence.update_presence(
        group=realtime.group_name("case", case.pk), user_id=ada.pk, socket="s", typing=None
    )
    html = client_for(priya).get(f"/cases/{case.pk}/header/").text
    assert 'id="case-header"' in html
    assert re.search(r'<div id="case-presence"[^>]*hx-swap-oob="true"', html)
    assert "Also here:" in html and "Ada Lovelace" in html
    # Alone, the refetch empties the slot rather than leaving someone who went away.
    alone = client_for(ada).get(f"/cases/{case.pk}/header/").text
    assert 'id="case-presence"' in alone and "Also here:" not in alone
