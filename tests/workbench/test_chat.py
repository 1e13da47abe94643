"""Live chat over the visitor socket: token, origin, limits, the inbound pipeline, replay, typing,
offline email, and agent replies reaching the widget live."""

import json
import re
from html import unescape

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core import signing
from django.test import Client

from cases.lifecycle import open_case
from cases.models import Case
from cases.replies import add_note, send_reply
from customers.identity import resolve_customer
from customers.models import Identity, Interaction
from customers.timeline import record_interaction
from tests.live import until_subscribed
from workbench import chat_settings, realtime
from workbench.asgi import application
from workbench.connectors import chat
from workbench.connectors.delivery import deliver_interaction
from workbench.models import ChatWidgetOrigin, OutboxEmail

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_chat")]

OWN = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
MARK = re.compile(r"^<!--wb:(?P<group>[a-z_.0-9]+):(?P<seq>[0-9]+)-->")


async def open_socket(headers=OWN) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, code = await socket.connect()
    assert connected, code
    return socket


async def say(socket, **frame) -> None:
    await socket.send_to(text_data=json.dumps(frame))


async def hear(socket, timeout: float = 3) -> dict:
    return json.loads(await socket.receive_from(timeout=timeout))


async def hello(socket, token=None, last_seen=None) -> dict:
    await say(socket, type="hello", token=token, last_seen=last_seen)
    welcome = await hear(socket)
    assert welcome["type"] == "welcome", welcome
    return welcome


async def closed_with(socket) -> int:
    output = await socket.receive_output(timeout=2)
    assert output["type"] == "websocket.close", output
    return output["code"]


def db(function):
    return database_sync_to_async(function)


def messages():
    return Interaction.objects.filter(kind="message")


def counts() -> tuple[int, int, int]:
    return Interaction.objects.count(), Identity.objects.count(), Case.objects.count()


# --- the token ------------------------------------------------------------------------------


def test_a_new_visitor_gets_a_signed_token_and_their_message_opens_a_chat_case(support):
    async def scenario():
        socket = await open_socket()
        welcome = await hello(socket)
        await say(socket, type="message", id="11111111-aaaa", text="Where is my kettle?")
        stored = await hear(socket)
        await socket.disconnect()
        return welcome, stored

    welcome, stored = async_to_sync(scenario)()
    visitor = welcome["visitor"]
    assert chat.visitor_of(welcome["token"]) == visitor
    assert welcome["agents_online"] is False
    assert stored["type"] == "message"
    assert (stored["direction"], stored["text"], stored["author"]) == (
        "in",
        "Where is my kettle?",
        "You",
    )
    assert stored["client_id"] == "11111111-aaaa"
    interaction = messages().get()
    assert interaction.pk == stored["id"]
    assert (interaction.channel, interaction.direction, interaction.body_text) == (
        "chat",
        "in",
        "Where is my kettle?",
    )
    identity = Identity.objects.get(channel="chat")
    assert identity.handle == visitor and identity.customer_id == interaction.customer_id
    case = Case.objects.get()
    assert (case.channel, case.thread_key, case.queue_id) == ("chat", visitor, support.pk)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        signing.dumps({"v": "v-" + "a" * 32}, salt="some.other.salt"),
        signing.dumps({"v": "v-" + "a" * 32}, salt=chat.TOKEN_SALT, key="a-guessed-secret-key"),
        signing.dumps({"v": "../../etc"}, salt=chat.TOKEN_SALT),
    ],
    # Fixed ids: a signed token embeds its timestamp, and xdist workers must collect the same names.
    ids=["garbage", "other-salt", "other-key", "bad-visitor-id"],
)
def test_a_forged_token_is_refused_and_nothing_is_stored(support, token):
    async def scenario():
        socket = await open_socket()
        await say(socket, type="hello", token=token, last_seen=None)
        error = await hear(socket)
        code = await closed_with(socket)
        return error, code

    error, code = async_to_sync(scenario)()
    assert error["code"] == "bad_token"
    assert code == chat.CLOSE_BAD_TOKEN
    assert counts() == (0, 0, 0)


def test_an_expired_token_is_refused(support, settings):
    token, _ = chat.issue_token()
    settings.CHAT_TOKEN_MAX_AGE_S = -1

    async def scenario():
        socket = await open_socket()
        await say(socket, type="hello", token=token)
        error = await hear(socket)
        return error, await closed_with(socket)

    error, code = async_to_sync(scenario)()
    assert (error["code"], code) == ("bad_token", 4401)


def test_a_message_before_hello_is_refused_and_not_stored(support):
    async def scenario():
        socket = await open_socket()
        await say(socket, type="message", id="11111111-aaaa", text="Hi")
        error = await hear(socket)
        await socket.disconnect()
        return error

    assert async_to_sync(scenario)()["code"] == "no_hello"
    assert counts() == (0, 0, 0)


# --- origins --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [(b"origin", b"https://evil.example"), (b"host", b"testserver")],
        [(b"host", b"testserver")],  # no Origin at all
        [(b"origin", b"http://testserver"), (b"host", b"evil.example")],  # a host not ours
        [(b"origin", b"null"), (b"host", b"testserver")],
    ],
)
def test_an_origin_not_allowed_is_refused_at_the_handshake(support, headers):
    async def scenario():
        socket = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
        return await socket.connect()

    assert async_to_sync(scenario)() == (False, chat.CLOSE_FORBIDDEN)


def test_an_origin_the_cco_allowed_may_open_the_socket(support, cco):
    chat_settings.allow_origin(origin="HTTPS://Shop.Example:443/", actor=cco)
    headers = [(b"origin", b"https://shop.example"), (b"host", b"workbench.example")]

    async def scenario():
        socket = await open_socket(headers)
        welcome = await hello(socket)
        await socket.disconnect()
        return welcome

    assert async_to_sync(scenario)()["type"] == "welcome"
    assert list(ChatWidgetOrigin.objects.values_list("origin", flat=True)) == [
        "https://shop.example"
    ]


# --- limits ---------------------------------------------------------------------------------


def test_a_frame_over_the_limit_gets_an_error_closes_and_stores_nothing(support):
    async def scenario():
        socket = await open_socket()
        await hello(socket)
        big = "x" * settings.CHAT_MAX_FRAME_BYTES
        await say(socket, type="message", id="11111111-aaaa", text=big)
        error = await hear(socket)
        return error, await closed_with(socket)

    error, code = async_to_sync(scenario)()
    assert error["code"] == "too_big"
    assert code == chat.CLOSE_TOO_BIG
    assert counts() == (0, 0, 0)


def test_past_the_rate_limit_a_visitor_gets_an_error_and_nothing_is_stored(support, settings):
    settings.CHAT_RATE_MESSAGES = 3
    settings.CHAT_RATE_WINDOW_S = 600

    async def scenario():
        socket = await open_socket()
        await hello(socket)
        frames = []
        for n in range(5):
            await say(socket, type="message", id=f"message-{n:04d}", text=f"Hello {n}")
            frames.append(await hear(socket))
        await socket.disconnect()
        return frames

    frames = async_to_sync(scenario)()
    assert [f["type"] for f in frames] == ["message"] * 3 + ["error"] * 2
    assert frames[3]["code"] == "rate_limited"
    assert sorted(messages().values_list("body_text", flat=True)) == [
        "Hello 0",
        "Hello 1",
        "Hello 2",
    ]


def test_a_malformed_frame_gets_an_error_and_the_socket_stays_open(support):
    async def scenario():
        socket = await open_socket()
        await hello(socket)
        await socket.send_to(text_data="[1, 2]")
        first = await hear(socket)
        await say(socket, type="message", id="x", text="too short an id")
        second = await hear(socket)
        await say(socket, type="message", id="11111111-aaaa", text="   ")
        third = await hear(socket)
        await say(socket, type="message", id="11111111-aaaa", text="Still here")
        fourth = await hear(socket)
        await socket.disconnect()
        return first, second, third, fourth

    first, second, third, fourth = async_to_sync(scenario)()
    assert [first["code"], second["code"], third["code"]] == ["invalid"] * 3
    assert fourth["text"] == "Still here"
    assert messages().count() == 1


# --- the pipeline: duplicates and replay ------------------------------------------------------


def test_a_message_resent_after_a_reconnect_is_stored_once(support):
    async def scenario():
        first = await open_socket()
        welcome = await hello(first)
        await say(first, type="message", id="22222222-bbbb", text="Is it in stock?")
        original = await hear(first)
        await first.disconnect()
        second = await open_socket()
        await hello(second, token=welcome["token"], last_seen=None)
        replayed = await hear(second)
        await say(second, type="message", id="22222222-bbbb", text="Is it in stock?")
        resent = await hear(second)
        await second.disconnect()
        return original, replayed, resent

    original, replayed, resent = async_to_sync(scenario)()
    assert original["id"] == replayed["id"] == resent["id"]
    assert messages().count() == 1
    assert Case.objects.count() == 1


def test_two_visitors_using_the_same_message_id_each_store_their_own(support):
    async def scenario():
        frames = []
        for _ in range(2):
            socket = await open_socket()
            await hello(socket)
            await say(socket, type="message", id="33333333-cccc", text="Same id")
            frames.append(await hear(socket))
            await socket.disconnect()
        return frames

    one, two = async_to_sync(scenario)()
    assert one["id"] != two["id"]
    assert messages().count() == 2
    assert Identity.objects.filter(channel="chat").count() == 2


def test_a_reconnect_replays_only_the_chat_messages_missed_never_notes_or_other_channels(
    support, ada
):
    async def first_visit():
        socket = await open_socket()
        welcome = await hello(socket)
        await say(socket, type="message", id="44444444-dddd", text="My order is late")
        seen = await hear(socket)
        await socket.disconnect()
        return welcome, seen

    welcome, seen = async_to_sync(first_visit)()
    case = Case.objects.get()
    reply = send_reply(case=case, author=ada, channel="chat", body="Sorry! Checking now.")
    assert deliver_interaction(interaction_id=reply.pk) == "sent"
    add_note(case=case, author=ada, body="Warehouse says Tuesday.")
    record_interaction(
        customer=case.customer,
        channel="email",
        kind="message",
        direction="in",
        body_text="An email from them",
    )
    other = resolve_customer(channel="chat", handle="v-" + "b" * 32).customer
    record_interaction(
        customer=other, channel="chat", kind="message", direction="in", body_text="Not yours"
    )

    async def second_visit():
        socket = await open_socket()
        await hello(socket, token=welcome["token"], last_seen=seen["id"])
        replayed = [await hear(socket)]
        nothing_else = await socket.receive_nothing(timeout=0.5)
        await socket.disconnect()
        return replayed, nothing_else

    replayed, nothing_else = async_to_sync(second_visit)()
    assert [(f["direction"], f["author"], f["text"]) for f in replayed] == [
        ("out", "Ada", "Sorry! Checking now.")
    ]
    assert nothing_else is True


# --- agents: replies and typing -------------------------------------------------------------


def cookie_for(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def hub_for(cookie: str, *groups) -> WebsocketCommunicator:
    query = "&".join(f"group={g}" for g in groups)
    headers = [
        (b"origin", b"http://localhost"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
    ]
    return WebsocketCommunicator(application, f"/ws/hub/?{query}", headers=headers)


def test_an_agent_reply_reaches_the_visitor_socket_live(support, ada):
    async def scenario():
        socket = await open_socket()
        await hello(socket)
        await say(socket, type="message", id="55555555-eeee", text="Can I change my address?")
        await hear(socket)
        case = await db(Case.objects.get)()
        reply = await db(send_reply)(case=case, author=ada, channel="chat", body="Yes, which one?")
        status = await db(deliver_interaction)(interaction_id=reply.pk)
        live = await hear(socket)
        await socket.disconnect()
        return reply, status, live

    reply, status, live = async_to_sync(scenario)()
    assert status == "sent"
    assert live == {
        "type": "message",
        "id": reply.pk,
        "client_id": None,
        "direction": "out",
        "author": "Ada",
        "text": "Yes, which one?",
        "at": live["at"],
    }
    reply.refresh_from_db()
    assert reply.status == "sent"


def test_a_reply_to_another_visitor_never_reaches_this_socket(support, ada):
    async def scenario():
        mine = await open_socket()
        await hello(mine)
        theirs = await open_socket()
        their_welcome = await hello(theirs)
        await say(theirs, type="message", id="66666666-ffff", text="Theirs")
        await hear(theirs)
        case = await db(Case.objects.get)()
        reply = await db(send_reply)(case=case, author=ada, channel="chat", body="For them only")
        await db(deliver_interaction)(interaction_id=reply.pk)
        got = await hear(theirs)
        mine_heard_nothing = await mine.receive_nothing(timeout=0.5)
        await mine.disconnect()
        await theirs.disconnect()
        return their_welcome, got, mine_heard_nothing

    _, got, mine_heard_nothing = async_to_sync(scenario)()
    assert got["text"] == "For them only"
    assert mine_heard_nothing is True


def words(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", "", MARK.sub("", html))).split())


def test_typing_shows_both_ways_and_agents_online_is_told(support, ada):
    ada_cookie = cookie_for(ada)

    async def scenario():
        visitor = await open_socket()
        await hello(visitor)
        await say(visitor, type="message", id="77777777-abcd", text="Hello?")
        await hear(visitor)
        case = await db(Case.objects.get)()
        case_group = realtime.group_name("case", case.pk)
        user_group = realtime.group_name("user", ada.pk)
        agent = hub_for(ada_cookie, case_group, user_group)
        assert (await agent.connect())[0]
        await until_subscribed(case_group)
        await until_subscribed(user_group)
        # The visitor types: the agent's case page hears "… is typing…".
        await say(visitor, type="typing", typing=True)
        shown = words(await agent.receive_from(timeout=3))
        # The agent types on the case: the visitor hears the agent's first name.
        await agent.send_to(text_data=json.dumps({"type": "presence", "case": case.pk}))
        await agent.send_to(
            text_data=json.dumps({"type": "presence", "case": case.pk, "typing": True})
        )
        heard = await hear(visitor)
        # Another visitor arriving now is told that someone is online.
        newcomer = await open_socket()
        newcomer_welcome = await hello(newcomer)
        for socket in (visitor, agent, newcomer):
            await socket.disconnect()
        return case, shown, heard, newcomer_welcome

    case, shown, heard, newcomer_welcome = async_to_sync(scenario)()
    assert shown == f"{case.customer.display_name} is typing…"
    assert heard == {"type": "typing", "typing": True, "name": "Ada"}
    assert newcomer_welcome["agents_online"] is True


def test_the_visitor_typing_fragment_is_empty_for_an_agent_outside_the_queue(support, make_user):
    outsider = make_user("agent", username="olga")
    customer = resolve_customer(channel="chat", handle="v-" + "c" * 32).customer
    case = open_case(customer=customer, queue=support, subject="Hi", channel="chat")
    assert chat.render_visitor_typing(outsider, case_id=case.pk, typing=True) == ""
    ada = support.members.get()
    assert "is typing" in chat.render_visitor_typing(ada, case_id=case.pk, typing=True)


# --- away: answer by email --------------------------------------------------------------------


def test_leaving_an_email_links_it_to_the_chat_customer_and_the_case_is_answered_by_email(
    support, ada
):
    async def scenario():
        socket = await open_socket()
        welcome = await hello(socket)
        await say(
            socket,
            type="email",
            id="88888888-abcd",
            email=" Grace@Example.com ",
            text="My kettle leaks.",
        )
        stored = await hear(socket)
        saved = await hear(socket)
        await socket.disconnect()
        return welcome, stored, saved

    welcome, stored, saved = async_to_sync(scenario)()
    assert welcome["agents_online"] is False
    assert saved == {"type": "email_saved", "email": "grace@example.com"}
    assert "grace@example.com" in stored["text"] and "My kettle leaks." in stored["text"]
    chat_identity = Identity.objects.get(channel="chat")
    email_identity = Identity.objects.get(channel="email")
    assert email_identity.handle == "grace@example.com"
    assert email_identity.customer_id == chat_identity.customer_id
    case = Case.objects.get()
    reply = send_reply(case=case, author=ada, channel="email", body="We'll send a new one.")
    assert deliver_interaction(interaction_id=reply.pk) == "sent"
    mail = OutboxEmail.objects.get()
    assert mail.to == "grace@example.com"
    assert "We'll send a new one." in mail.body


def visit(*frames) -> None:
    """A new visitor says hello and sends the frames, each answered before the next."""

    async def scenario():
        socket = await open_socket()
        await hello(socket)
        for frame in frames:
            await say(socket, **frame)
            await hear(socket)
            if frame["type"] == "email":
                await hear(socket)  # email_saved
        await socket.disconnect()

    async_to_sync(scenario)()


def composer_channel(client, case) -> str:
    html = client.get(f"/cases/{case.pk}/").text
    select = html.split('name="channel"')[1].split("</select>")[0]
    return re.search(r'<option value="([a-z]+)" selected>', select).group(1)


def test_a_case_whose_visitor_left_an_email_offers_email_first_in_the_composer(
    support, ada, client_for
):
    visit(
        {"type": "message", "id": "aaaaaaaa-0001", "text": "Is anyone there?"},
        {"type": "email", "id": "aaaaaaaa-0002", "email": "grace@example.com"},
    )

    assert composer_channel(client_for(ada), Case.objects.get()) == "email"


def test_a_visitor_who_chats_again_after_leaving_an_email_is_answered_in_chat(
    support, ada, client_for
):
    visit(
        {"type": "email", "id": "aaaaaaaa-0003", "email": "grace@example.com"},
        {"type": "message", "id": "aaaaaaaa-0004", "text": "Oh, you're back!"},
    )

    assert composer_channel(client_for(ada), Case.objects.get()) == "chat"


def test_a_chat_customer_with_an_email_who_never_asked_for_it_is_answered_in_chat(
    support, ada, client_for
):
    visit({"type": "message", "id": "aaaaaaaa-0005", "text": "Hi"})
    customer = Identity.objects.get(channel="chat").customer
    Identity.objects.create(customer=customer, channel="email", handle="grace@example.com")

    assert composer_channel(client_for(ada), Case.objects.get()) == "chat"


def test_an_email_another_customer_holds_is_not_moved_to_the_visitor(support):
    owner = resolve_customer(channel="email", handle="grace@example.com").customer

    async def scenario():
        socket = await open_socket()
        await hello(socket)
        await say(socket, type="email", id="99999999-abcd", email="grace@example.com")
        await hear(socket)
        saved = await hear(socket)
        await socket.disconnect()
        return saved

    assert async_to_sync(scenario)()["type"] == "email_saved"
    assert Identity.objects.get(channel="email").customer_id == owner.pk
    visitor_customer = Identity.objects.get(channel="chat").customer
    assert visitor_customer.pk != owner.pk


def test_a_malformed_email_is_refused_and_nothing_is_stored(support):
    async def scenario():
        socket = await open_socket()
        await hello(socket)
        await say(socket, type="email", id="99999999-abcd", email="not an address")
        error = await hear(socket)
        await socket.disconnect()
        return error

    assert async_to_sync(scenario)()["code"] == "invalid_email"
    assert counts() == (0, 0, 0)


# --- the demo page --------------------------------------------------------------------------


def test_the_demo_page_embeds_the_widget_for_anyone(client):
    response = client.get("/chat/demo/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'src="/static/js/chat-widget.js"' in html
    assert 'data-workbench="http://testserver"' in html
    assert "<script>" not in html  # CSP: no inline script


def test_a_visitor_who_arrived_while_nobody_was_online_is_told_when_an_agent_comes(support, ada):
    ada_cookie = cookie_for(ada)

    async def scenario():
        visitor = await open_socket()
        welcome = await hello(visitor)
        user_group = realtime.group_name("user", ada.pk)
        agent = hub_for(ada_cookie, user_group)
        assert (await agent.connect())[0]
        await until_subscribed(user_group)
        await say(visitor, type="message", id="12121212-abcd", text="Anyone there?")
        stored = await hear(visitor)
        status = await hear(visitor)
        for socket in (visitor, agent):
            await socket.disconnect()
        return welcome, stored, status

    welcome, stored, status = async_to_sync(scenario)()
    assert welcome["agents_online"] is False
    assert stored["text"] == "Anyone there?"
    assert status == {"type": "status", "agents_online": True}
