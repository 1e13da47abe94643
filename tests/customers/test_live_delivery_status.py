"""An outbound message's delivery status on the customer page: the same words as on the case page,
swapped live from the customer's group (queued → sending → sent, failed with the reason,
"not delivered yet — retrying"), for every role that reads customers, never a private body."""

import asyncio
import re
import socket

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.urls import reverse

from cases.fragments import render_reply_delivery
from cases.lifecycle import open_case
from cases.replies import send_reply
from customers.fragments import render_interaction_status
from customers.models import Identity, Interaction
from customers.timeline import record_interaction
from tests.cases.factories import CalendarFactory, CustomerFactory, QueueFactory, SlaPolicyFactory
from tests.live import until_subscribed
from workbench import realtime
from workbench.connectors import delivery
from workbench.connectors.receipts import record_receipt
from workbench.consumers import HubConsumer
from workbench.tasks import deliver_interaction_task

LIVE = ' hx-swap-oob="true"'


@pytest.fixture(autouse=True)
def _local_outbox(settings):
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"
    settings.DEFAULT_FROM_EMAIL = "Support <support@shop.example>"
    settings.WORKBENCH_MAIL_DOMAIN = "mail.shop.example"


@pytest.fixture
def ann(db):
    customer = CustomerFactory(display_name="Ann Lee")
    Identity.objects.create(customer=customer, channel="email", handle="ann@example.com")
    Identity.objects.create(customer=customer, channel="whatsapp", handle="+447700900123")
    return customer


@pytest.fixture
def case(agent, ann):
    queue = QueueFactory(name="Support", calendar=CalendarFactory(working_hours={}))
    queue.members.add(agent)
    SlaPolicyFactory(queue=queue, priority="normal")
    return open_case(customer=ann, queue=queue, subject="Refund for order 42", channel="email")


def customer_page(client, customer) -> str:
    return client.get(reverse("customers:detail", args=[customer.pk])).text


def status_span(html: str, entry) -> str:
    """The entry's status as the page shows it: `<span id="delivery-<pk>" …>…</span>`."""
    match = re.search(rf'<span id="delivery-{entry.pk}"[^>]*>.*?</span>', html)
    assert match, f"no delivery status for interaction {entry.pk} on the page"
    return match[0]


def pushed_form(span: str) -> str:
    """What a live update of that span carries: the same element, swapped out of band by id."""
    return span.replace(' class="status">', f' class="status"{LIVE}>', 1)


def seq(kind: str, pk: int) -> int:
    return realtime.current_seq(realtime.group_name(kind, pk))


def whatsapp_message(customer, *, status="sent", is_private=False, data=None):
    """An outbound WhatsApp message the provider accepted (its id is what receipts name)."""
    return record_interaction(
        customer=customer, channel="whatsapp", kind="message", direction="out",
        body_text="Your replacement ships today.", external_id="wamid.HBgLNDQ3NzAwOTAwMTIz",
        status=status, is_private=is_private, data={"to": "+447700900123", **(data or {})},
    )[0]  # fmt: skip


# --- the page -----------------------------------------------------------------------------------


def test_the_customer_page_shows_a_replys_delivery_status_as_it_moves(client_for, agent, case):
    reply = send_reply(case=case, author=agent, channel="email", body="Hello")
    client = client_for(agent)
    assert status_span(customer_page(client, case.customer), reply) == (
        f'<span id="delivery-{reply.pk}" class="status">queued</span>'
    )
    deliver_interaction_task(reply.pk)
    assert status_span(customer_page(client, case.customer), reply) == (
        f'<span id="delivery-{reply.pk}" class="status">sent</span>'
    )


def test_a_failed_message_shows_the_providers_reason_escaped(client_for, marketer, ann):
    message = whatsapp_message(ann)
    assert record_receipt(channel="whatsapp", external_id=message.external_id, status="failed",
                          error="<b>131026</b> Message undeliverable")  # fmt: skip

    html = customer_page(client_for(marketer), ann)

    assert status_span(html, message) == (
        f'<span id="delivery-{message.pk}" class="status"><strong>not delivered</strong>: '
        "&lt;b&gt;131026&lt;/b&gt; Message undeliverable</span>"
    )
    assert "<b>131026</b>" not in html
    assert html.count("Message undeliverable") == 1  # said once, in the status


def test_a_retrying_reply_reads_the_same_on_the_customer_page_as_on_the_case_page(
    settings, client_for, agent, case
):
    with socket.socket() as probe:  # a port nobody listens on: the mail server is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
    reply = send_reply(case=case, author=agent, channel="email", body="Hello")
    assert delivery.deliver_interaction(interaction_id=reply.pk) == "queued"
    client = client_for(agent)

    on_customer_page = status_span(customer_page(client, case.customer), reply)
    on_case_page = status_span(client.get(f"/cases/{case.pk}/").text, reply)

    assert on_customer_page == on_case_page
    assert on_customer_page.startswith(
        f'<span id="delivery-{reply.pk}" class="status"><strong>not delivered yet — retrying'
        "</strong> (attempt 1 failed: "
    )


def test_statuses_that_are_not_deliveries_stay_plain(client_for, agent, ann):
    note, _ = record_interaction(customer=ann, channel="system", kind="case_event",
                                 direction="internal", title="Case assigned",
                                 status="assigned")  # fmt: skip
    html = customer_page(client_for(agent), ann)
    assert f'id="delivery-{note.pk}"' not in html
    assert '<span class="status">assigned</span>' in html
    assert render_interaction_status(agent, interaction_id=note.pk, customer_id=ann.pk) == ""


# --- live updates -------------------------------------------------------------------------------


def test_a_status_change_is_pushed_to_the_customer_and_the_case_groups(
    agent, case, django_capture_on_commit_callbacks
):
    reply = send_reply(case=case, author=agent, channel="email", body="Hello")
    customer_before, case_before = seq("customer", case.customer_id), seq("case", case.pk)

    with django_capture_on_commit_callbacks(execute=True):
        assert deliver_interaction_task(reply.pk) == "sent"

    # queued → sending → sent: two changes, each heard by both groups.
    assert seq("customer", case.customer_id) == customer_before + 2
    assert seq("case", case.pk) == case_before + 2


def test_a_receipt_for_a_message_outside_any_case_is_pushed_to_the_customer_alone(
    client_for, agent, ann, django_capture_on_commit_callbacks
):
    message = whatsapp_message(ann)
    before = seq("customer", ann.pk)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert record_receipt(channel="whatsapp", external_id=message.external_id,
                              status="delivered")  # fmt: skip

    assert seq("customer", ann.pk) == before + 1
    assert len(callbacks) == 1
    pushed = render_interaction_status(agent, interaction_id=message.pk, customer_id=ann.pk)
    assert pushed == pushed_form(status_span(customer_page(client_for(agent), ann), message))
    assert pushed == f'<span id="delivery-{message.pk}" class="status"{LIVE}>delivered</span>'


def test_a_repeated_or_backward_receipt_pushes_nothing(
    agent, ann, django_capture_on_commit_callbacks
):
    message = whatsapp_message(ann, status="read")
    before = seq("customer", ann.pk)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert not record_receipt(channel="whatsapp", external_id=message.external_id,
                                  status="delivered")  # fmt: skip
        assert not record_receipt(channel="whatsapp", external_id="wamid.unknown", status="read")

    assert callbacks == []
    assert seq("customer", ann.pk) == before
    assert Interaction.objects.get(pk=message.pk).status == "read"


def test_the_pushed_status_is_what_each_role_sees_after_a_reload(
    client_for, make_user, agent, marketer, case
):
    reply = send_reply(case=case, author=agent, channel="email", body="Hello")
    deliver_interaction_task(reply.pk)

    for viewer in (agent, marketer, make_user("supervisor"), make_user("cco")):
        page = customer_page(client_for(viewer), case.customer)
        pushed = render_interaction_status(
            viewer, interaction_id=reply.pk, customer_id=case.customer_id
        )
        assert pushed == pushed_form(status_span(page, reply))
        assert pushed == f'<span id="delivery-{reply.pk}" class="status"{LIVE}>sent</span>'
    # The case page's own event swaps the very same element.
    assert pushed == render_reply_delivery(agent, interaction_id=reply.pk, case_id=case.pk)


def test_nothing_is_pushed_for_another_customers_entry_or_to_a_user_without_a_role(
    make_user, agent, ann
):
    message = whatsapp_message(ann, status="delivered")
    other = CustomerFactory(display_name="Bob Roe")

    assert render_interaction_status(agent, interaction_id=message.pk, customer_id=other.pk) == ""
    assert render_interaction_status(make_user(None), interaction_id=message.pk,
                                     customer_id=ann.pk) == ""  # fmt: skip
    assert render_interaction_status(agent, interaction_id=10**9, customer_id=ann.pk) == ""


def test_a_marketer_never_gets_a_private_entrys_reason_or_body(client_for, marketer, agent, ann):
    reason = {"delivery_error": "Ann blocked us after the refund row"}
    hidden = whatsapp_message(ann, status="failed", is_private=True, data=reason)

    marketer_page = customer_page(client_for(marketer), ann)
    assert "Private note by service" in marketer_page
    assert "refund row" not in marketer_page
    assert "Your replacement ships today." not in marketer_page
    assert f'id="delivery-{hidden.pk}"' not in marketer_page
    assert '<span class="status">failed</span>' in marketer_page
    assert render_interaction_status(marketer, interaction_id=hidden.pk, customer_id=ann.pk) == ""

    # Service reads private entries: for them it is live like any other.
    agent_page = customer_page(client_for(agent), ann)
    for_agent = render_interaction_status(agent, interaction_id=hidden.pk, customer_id=ann.pk)
    assert for_agent == pushed_form(status_span(agent_page, hidden))
    assert "Ann blocked us after the refund row" in for_agent


def test_the_pushed_status_costs_one_query(agent, ann, django_assert_num_queries):
    message = whatsapp_message(ann)
    render_interaction_status(agent, interaction_id=message.pk, customer_id=ann.pk)  # role cache
    with django_assert_num_queries(1):
        render_interaction_status(agent, interaction_id=message.pk, customer_id=ann.pk)


# --- through the hub ----------------------------------------------------------------------------


def frames_by_group(texts: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Each pushed frame as (seq, html), per group, in arrival order."""
    found: dict[str, list[tuple[int, str]]] = {}
    for text in texts:
        match = re.match(r"<!--wb:([a-z_]+\.\d+):(\d+)-->(.*)", text, re.S)
        assert match, text
        found.setdefault(match[1], []).append((int(match[2]), match[3]))
    return found


@pytest.mark.django_db(transaction=True)
def test_the_customer_page_and_the_case_page_hear_a_delivery_over_the_hub(
    client_for, agent, marketer, case
):
    reply = send_reply(case=case, author=agent, channel="email", body="Hello")
    customer_group = realtime.group_name("customer", case.customer_id)
    case_group = realtime.group_name("case", case.pk)

    def deliver_in_a_worker():
        try:
            assert deliver_interaction_task(reply.pk) == "sent"
        finally:
            connection.close()  # this thread's own connection, so the test database can go

    async def open_socket(user, *groups):
        query = "&".join(f"group={group}" for group in groups)
        communicator = WebsocketCommunicator(HubConsumer.as_asgi(), f"/ws/hub/?{query}")
        communicator.scope["user"] = user
        connected, _ = await communicator.connect()
        assert connected
        return communicator

    async def received(communicator, count):
        texts = [await communicator.receive_from(timeout=5) for _ in range(count)]
        assert await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()
        return texts

    async def scenario():
        # A marketer on the customer page; an agent on the case page (both groups).
        customer_page_socket = await open_socket(marketer, customer_group)
        case_page_socket = await open_socket(agent, case_group, customer_group)
        await until_subscribed(customer_group)
        await until_subscribed(case_group)
        await asyncio.to_thread(deliver_in_a_worker)
        return await received(customer_page_socket, 2), await received(case_page_socket, 4)

    on_customer_page, on_case_page = async_to_sync(scenario)()

    sent = f'<span id="delivery-{reply.pk}" class="status"{LIVE}>sent</span>'
    last = seq("customer", case.customer_id)
    marketer_frames = frames_by_group(on_customer_page)
    assert list(marketer_frames) == [customer_group]
    assert [n for n, _ in marketer_frames[customer_group]] == [last - 1, last]
    # The last swap leaves what a reload shows (an earlier one may already read "sent").
    assert marketer_frames[customer_group][-1][1] == sent
    assert sent == pushed_form(
        status_span(customer_page(client_for(marketer), case.customer), reply)
    )
    # The case page hears its own event and the customer's: both swap the same element.
    agent_frames = frames_by_group(on_case_page)
    assert sorted(agent_frames) == sorted([case_group, customer_group])
    assert agent_frames[case_group][-1][1] == sent
    assert agent_frames[customer_group][-1][1] == sent
    assert sent == pushed_form(status_span(client_for(agent).get(f"/cases/{case.pk}/").text, reply))
