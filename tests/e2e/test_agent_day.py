"""An agent's day in the browser: take next, read, reply by email, promise, set pending, live.

Ada and Ben work the same queue in two browsers. Ada takes the most urgent case, reads the
customer's timeline, replies by email (the delivery task runs here, as a worker would, and the
mail lands in the local outbox), records a commitment and sets the case pending with her reply.
Ben's open queue page drops the case from "unassigned" without a reload, and when Ben opens the
case each of them sees the other on it.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from playwright.sync_api import expect

from cases.lifecycle import open_case
from cases.models import Case, Commitment
from customers.identity import resolve_customer
from customers.models import Channel, Direction, Interaction, Kind
from customers.timeline import record_interaction
from tests.cases.factories import QueueFactory, SlaPolicyFactory
from workbench.models import OutboxEmail
from workbench.tasks import deliver_interaction_task

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def in_thread(function, /, **kwargs):
    """Run a service that publishes from a thread of its own: Playwright's event loop runs in
    this one, and publishing (async_to_sync) refuses to run beside it."""

    def run():
        try:
            return function(**kwargs)
        finally:
            connections.close_all()  # this thread's own connection, or the flush waits on it

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=30)


@pytest.fixture
def ben(make_user):
    return make_user("agent", username="ben", first_name="Ben", last_name="Okafor")


@pytest.fixture
def waiting_case(agent, ben):
    """One unassigned email case in Ada's and Ben's queue, with the customer's message on it."""
    return in_thread(_open_waiting_case, agent=agent, ben=ben)


def _open_waiting_case(*, agent, ben) -> Case:
    queue = QueueFactory(name="Support", members=[agent, ben])
    SlaPolicyFactory(queue=queue)
    customer = resolve_customer(
        channel=Channel.EMAIL, handle="grace@example.com", display_name="Grace Hopper"
    ).customer
    case = open_case(
        customer=customer, queue=queue, subject="Kettle stopped working", channel=Channel.EMAIL
    )
    record_interaction(
        customer=customer,
        channel=Channel.EMAIL,
        kind=Kind.MESSAGE,
        direction=Direction.INBOUND,
        title="Kettle stopped working",
        body_text="My kettle stopped heating after a week. <b>Can you help?</b>",
        subject=case,
        external_id="<kettle-1@example.com>",
    )
    return case


def test_an_agents_day_take_next_reply_by_email_commit_set_pending_with_a_colleague_live(
    new_page, sign_in, live_server_url, agent, ben, waiting_case, settings
):
    # The worker's mail backend: with no provider configured, mail goes to the local outbox.
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"
    ada_page, ben_page = new_page(), new_page()
    sign_in(ben_page, "ben")
    ben_page.goto("/cases/?tab=queues")
    # An attribute, not wait_for_function: polling a string predicate is an eval the CSP refuses.
    expect(ben_page.locator("html")).to_have_attribute("data-wb-socket", "open")
    expect(ben_page.locator("#queue-list")).to_contain_text("Kettle stopped working")

    # Ada takes the most urgent case: it is hers, and Ben's unassigned list loses it live.
    sign_in(ada_page, "ada")
    ada_page.get_by_role("button", name="Take next").first.click()
    expect(ada_page).to_have_url(f"{live_server_url}/cases/{waiting_case.pk}/")
    expect(ada_page.locator("#case-header [data-field=assignee]")).to_have_text(
        agent.get_full_name() or agent.username
    )
    expect(ben_page.locator("#queue-list")).not_to_contain_text("Kettle stopped working")

    # She reads the timeline: the customer's words, escaped, marked as this case's.
    message = ada_page.locator("#timeline-entries li.this-case.direction-in")
    expect(message).to_contain_text("<b>Can you help?</b>")

    # Ben opens the same case: each sees the other there.
    ben_page.goto(f"/cases/{waiting_case.pk}/")
    expect(ben_page.locator("#case-presence")).to_contain_text("Also here:")
    expect(ada_page.locator("#case-presence")).to_contain_text("Ben Okafor")

    # A promise first: a replacement by Friday.
    ada_page.get_by_label("Kind").select_option("replacement")
    ada_page.get_by_label("What was promised").fill("A new kettle, sent by courier")
    due = (timezone.localtime() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    ada_page.get_by_label("Due").fill(due)
    ada_page.get_by_role("button", name="Record commitment").click()
    expect(ada_page.locator("ul.commitments")).to_contain_text("A new kettle, sent by courier")

    # Then the reply, by email, setting the case pending (keyboard: r focuses the composer).
    ada_page.wait_for_load_state("load")  # case.js (the shortcuts) is a deferred script
    ada_page.locator("h1").click()  # focus on the page, outside any field
    ada_page.keyboard.press("r")
    expect(ada_page.locator("#composer-body")).to_be_focused()
    ada_page.keyboard.type("Sorry, Grace! A new kettle is on its way.")
    ada_page.get_by_role("button", name="Send and set pending").click()
    expect(ada_page.locator("#case-header [data-field=status]")).to_have_text("Pending")
    expect(ben_page.locator("#case-header [data-field=status]")).to_have_text("Pending")

    reply = Interaction.objects.get(direction=Direction.OUTBOUND, kind=Kind.MESSAGE)
    assert reply.status == "queued"
    assert in_thread(deliver_interaction_task, interaction_id=reply.pk) == "sent"
    mail = OutboxEmail.objects.get()
    assert mail.to == "grace@example.com"
    assert mail.message_id == reply.data["message_id"]

    ada_page.get_by_role("link", name="Outbox").click()
    expect(ada_page.locator("main")).to_contain_text(f"[#{waiting_case.pk}]")
    expect(ada_page.locator("main")).to_contain_text("A new kettle is on its way.")

    case = Case.objects.get(pk=waiting_case.pk)
    assert (case.status, case.assignee_id) == ("pending", agent.pk)
    assert case.first_responded_at is not None
    assert Commitment.objects.filter(case=case, status="open").count() == 1
