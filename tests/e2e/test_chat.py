"""Live chat in two browsers: a visitor on the demo shop page and Ada on the case, both ways live.

The visitor opens the widget on /chat/demo/ (Ada is signed in, so the widget says someone is
online), writes; Ada opens the case the message opened, sees the visitor typing and their next
message arrive without a reload; she types (the widget shows "Ada is typing…") and replies on
the chat channel from the composer; the delivery task runs here, as a worker would, and the
reply appears in the widget. Screenshots of both land in /tmp/chat_*.png.
"""

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import expect

from cases.models import Case
from customers.models import Direction, Interaction, Kind
from tests.cases.factories import CalendarFactory, QueueFactory, SlaPolicyFactory
from tests.live import wait_until_subscribed
from workbench import realtime
from workbench.tasks import deliver_interaction_task

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
# Screenshots of the widget and the agent's page, kept after a passing run too, to look at.
SHOTS = Path(tempfile.gettempdir())


def in_thread(function, /, **kwargs):
    """Run database work from a thread of its own: Playwright's event loop runs in this one."""

    def run():
        try:
            return function(**kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=30)


def _chat_queue(*, agent):
    queue = QueueFactory(
        name="Chat", default_for_channels=["chat"], calendar=CalendarFactory(working_hours={})
    )
    queue.members.add(agent)
    SlaPolicyFactory(queue=queue, priority="normal")
    return queue


def _the_chat_case() -> Case | None:
    return Case.objects.filter(channel="chat").first()


def wait_for_case(timeout: float = 10) -> Case:
    deadline = time.monotonic() + timeout
    while (case := in_thread(_the_chat_case)) is None:
        assert time.monotonic() < deadline, "the visitor's message opened no case"
        time.sleep(0.1)
    return case


def _queued_chat_reply() -> Interaction:
    return Interaction.objects.get(
        channel="chat", direction=Direction.OUTBOUND, kind=Kind.MESSAGE, status="queued"
    )


def test_a_visitor_and_an_agent_chat_both_ways_live_with_typing(new_page, sign_in, agent):
    agent.first_name, agent.last_name = "Ada", "Lovelace"
    in_thread(agent.save)
    in_thread(_chat_queue, agent=agent)
    ada_page, visitor = new_page(), new_page()

    # Ada is at work: her queue page holds her live socket, so the widget says "online".
    sign_in(ada_page, "ada")
    ada_page.goto("/cases/")
    expect(ada_page.locator("html")).to_have_attribute("data-wb-socket", "open")
    wait_until_subscribed(realtime.group_name("user", agent.pk))

    # The visitor opens the shop page and the chat bubble, keyboard only.
    visitor.goto("/chat/demo/")
    expect(visitor.get_by_role("heading", name="Tea things, made to last")).to_be_visible()
    bubble = visitor.get_by_role("button", name="Open chat: Kettle & Co. support")
    bubble.focus()
    visitor.keyboard.press("Enter")
    widget = visitor.get_by_role("dialog", name="Kettle & Co. support")
    message_box = widget.get_by_label("Your message")
    expect(message_box).to_be_focused()
    expect(widget.locator(".wbchat-state")).to_have_text("We're online: ask away.")
    expect(widget.locator(".wbchat-offline")).to_be_hidden()

    visitor.keyboard.type("Hello! My copper kettle arrived dented.")
    visitor.keyboard.press("Enter")
    log = widget.get_by_role("log")
    expect(log.locator(".wbchat-mine").last).to_contain_text("My copper kettle arrived dented.")
    expect(log.locator(".wbchat-sending")).to_have_count(0)

    # Ada opens the case the message opened: the visitor's words are on its timeline.
    case = wait_for_case()
    ada_page.goto(f"/cases/{case.pk}/")
    expect(ada_page.locator("html")).to_have_attribute("data-wb-socket", "open")
    timeline = ada_page.locator("#timeline-entries")
    expect(timeline).to_contain_text("My copper kettle arrived dented.")
    wait_until_subscribed(realtime.group_name("case", case.pk))

    # The visitor types: Ada sees it; then the message arrives on her page without a reload.
    message_box.type("Can you send a new one")
    expect(ada_page.locator("#chat-typing")).to_contain_text("is typing…")
    ada_page.locator("#case-actions").screenshot(path=SHOTS / "chat_agent_visitor_typing.png")
    message_box.type("?")
    message_box.press("Enter")
    expect(timeline.locator("li.direction-in").first).to_contain_text("Can you send a new one?")
    expect(ada_page.locator("#chat-typing")).not_to_contain_text("is typing")

    # Ada types in the composer: the widget shows it; the reply goes out on the chat channel.
    ada_page.get_by_label("Reply to the customer").check()
    expect(ada_page.locator("select[name=channel]")).to_have_value("chat")
    ada_page.locator("#composer-body").type("So sorry! A new kettle leaves today.")
    expect(widget.locator(".wbchat-typing")).to_have_text("Ada is typing…")
    visitor.screenshot(path=SHOTS / "chat_widget_typing.png")
    ada_page.screenshot(path=SHOTS / "chat_agent_typing.png", full_page=True)
    ada_page.get_by_role("button", name="Send", exact=True).click()
    reply = wait_for_reply()
    assert in_thread(deliver_interaction_task, interaction_id=reply.pk) == "sent"

    theirs = log.locator(".wbchat-theirs")
    expect(theirs).to_have_count(1)
    expect(theirs).to_contain_text("So sorry! A new kettle leaves today.")
    expect(theirs).to_contain_text("Ada")
    expect(widget.locator(".wbchat-typing")).to_have_text("")
    expect(timeline).to_contain_text("So sorry! A new kettle leaves today.")
    visitor.screenshot(path=SHOTS / "chat_widget.png")
    ada_page.screenshot(path=SHOTS / "chat_agent.png", full_page=True)

    # A reload of the shop page keeps the conversation (token and replay), nothing twice.
    visitor.reload()
    expect(visitor.get_by_role("dialog", name="Kettle & Co. support")).to_be_visible()
    expect(log.locator(".wbchat-msg")).to_have_count(3)
    messages = in_thread(
        lambda: list(
            Interaction.objects.filter(channel="chat", kind="message")
            .order_by("id")
            .values_list("direction", flat=True)
        )
    )
    assert messages == ["in", "in", "out"]


def wait_for_reply(timeout: float = 10) -> Interaction:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return in_thread(_queued_chat_reply)
        except Interaction.DoesNotExist:
            assert time.monotonic() < deadline, "the reply was not stored"
            time.sleep(0.1)


def test_with_nobody_online_the_visitor_leaves_an_email_to_be_answered_there(new_page, agent):
    in_thread(_chat_queue, agent=agent)
    visitor = new_page()
    visitor.goto("/chat/demo/")
    visitor.get_by_role("button", name="Open chat: Kettle & Co. support").click()
    widget = visitor.get_by_role("dialog", name="Kettle & Co. support")
    expect(widget.locator(".wbchat-state")).to_have_text("We're away right now.")
    offline = widget.locator(".wbchat-offline")
    expect(offline).to_contain_text("Leave your email and we'll answer you by email.")
    widget.get_by_label("Your message").fill("Do you ship to Norway?")
    widget.get_by_label("Your email").fill("grace@example.com")
    visitor.screenshot(path=SHOTS / "chat_widget_offline.png")
    widget.get_by_role("button", name="Answer me by email").click()
    expect(widget.get_by_role("log")).to_contain_text("We'll answer you at grace@example.com.")
    expect(offline).to_be_hidden()
    visitor.screenshot(path=SHOTS / "chat_widget_offline_saved.png")

    def identities():
        from customers.models import Identity

        return sorted(Identity.objects.values_list("channel", "customer_id"))

    (chat_channel, chat_owner), (email_channel, email_owner) = in_thread(identities)
    assert (chat_channel, email_channel) == ("chat", "email")
    assert chat_owner == email_owner
