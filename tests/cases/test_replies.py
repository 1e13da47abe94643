"""The composer: replies that land in the outbox, notes, "send and set pending", collisions, API."""

import json
import re
import socket

import pytest
from celery.exceptions import Retry
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import include, path

from cases.fragments import render_reply_delivery
from cases.lifecycle import open_case
from cases.models import Case
from cases.replies import CollisionError, add_note, send_reply
from customers.models import Identity, Interaction
from customers.timeline import record_interaction
from tests.cases.factories import CalendarFactory, CustomerFactory, QueueFactory, SlaPolicyFactory
from workbench import urls as workbench_urls
from workbench.models import OutboxEmail
from workbench.tasks import deliver_interaction_task

# The replies API is wired by workbench/urls.py next to the cases API; these tests mount it
# themselves too, so they pass whichever order the lead wires things in.
urlpatterns = [path("api/cases/", include("cases.api_replies")), *workbench_urls.urlpatterns]


@pytest.fixture(autouse=True)
def _local_outbox(settings):
    # pytest-django swaps in locmem mail; the product's default without a provider is the outbox.
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"
    settings.DEFAULT_FROM_EMAIL = "Support <support@shop.example>"
    settings.WORKBENCH_MAIL_DOMAIN = "mail.shop.example"


@pytest.fixture
def support(agent):
    queue = QueueFactory(name="Support", calendar=CalendarFactory(working_hours={}))
    queue.members.add(agent)
    SlaPolicyFactory(queue=queue, priority="normal")
    return queue


@pytest.fixture
def ann(db):
    customer = CustomerFactory(display_name="Ann Lee")
    Identity.objects.create(customer=customer, channel="email", handle="ann@example.com")
    Identity.objects.create(customer=customer, channel="x", handle="@annlee")
    return customer


@pytest.fixture
def case(support, ann):
    return open_case(customer=ann, queue=support, subject="Refund for order 42", channel="email")


@pytest.fixture
def colleague(make_user, support):
    user = make_user("agent", username="bo", first_name="Bo", last_name="Berg")
    support.members.add(user)
    return user


def compose(case, action="compose"):
    return f"/cases/{case.pk}/{action}/"


def reply_form(**fields):
    return {"mode": "reply", "channel": "email", "body": "Your refund is on its way.", **fields}


def replies_of(case):
    return list(Interaction.objects.filter(subject_id=case.pk, kind="message", direction="out"))


def stored():
    return Interaction.objects.count(), OutboxEmail.objects.count()


def seen_id(html: str) -> int:
    return int(re.search(r'name="seen_interaction_id" value="(\d+)"', html).group(1))


# --- refusals first ----------------------------------------------------------------------------


def test_marketer_cannot_reply_and_nothing_is_stored(client_for, marketer, case):
    before = stored()
    response = client_for(marketer).post(compose(case), reply_form())
    assert response.status_code == 403
    assert stored() == before


def test_cco_reads_the_case_but_cannot_reply(client_for, cco, case):
    before = stored()
    client = client_for(cco)
    assert 'id="composer"' not in client.get(f"/cases/{case.pk}/").text
    assert client.post(compose(case), reply_form()).status_code == 403
    assert stored() == before


def test_agent_outside_the_queue_cannot_reply_or_note(client_for, make_user, case):
    stranger = make_user("agent")
    before = stored()
    client = client_for(stranger)
    assert client.post(compose(case), reply_form()).status_code == 403
    assert client.post(compose(case), {"mode": "note", "body": "hi"}).status_code == 403
    assert stored() == before


def test_service_refuses_an_author_outside_the_queue(make_user, case):
    with pytest.raises(PermissionDenied):
        send_reply(case=case, author=make_user("agent"), channel="email", body="Hi")
    assert replies_of(case) == []


def test_an_empty_reply_is_a_400_next_to_the_body_and_stores_nothing(client_for, agent, case):
    before = stored()
    response = client_for(agent).post(compose(case), reply_form(body="   "))
    assert response.status_code == 400
    assert 'id="composer-body-error"' in response.text
    assert "Write something before sending." in response.text
    assert stored() == before


def test_a_channel_without_a_connector_is_refused_and_nothing_is_stored(client_for, agent, case):
    # SMS has no sender (email, chat and the social channels have one).
    Identity.objects.create(customer=case.customer, channel="sms", handle="+447700900123")
    before = stored()
    response = client_for(agent).post(compose(case), reply_form(channel="sms"))
    assert response.status_code == 400
    error = re.search(r'id="composer-channel-error"[^>]*>([^<]*)<', response.text).group(1)
    assert error == "No outbound connector for SMS yet: reply by email."
    assert stored() == before
    case.refresh_from_db()
    assert (case.status, case.first_responded_at) == ("new", None)


def test_a_channel_the_customer_has_no_handle_on_is_refused(client_for, agent, case):
    before = stored()
    response = client_for(agent).post(compose(case), reply_form(channel="whatsapp"))
    assert response.status_code == 400 and 'id="composer-channel-error"' in response.text
    assert stored() == before


def test_a_customer_without_handles_gets_a_note_only_composer(client_for, agent, support):
    nobody = CustomerFactory(display_name="No Handles")
    case = open_case(customer=nobody, queue=support, subject="Phone call", channel="phone")
    client = client_for(agent)
    html = client.get(f"/cases/{case.pk}/").text
    assert 'id="composer-no-channel"' in html
    assert re.search(r'id="composer-mode-note" checked', html)
    response = client.post(compose(case), reply_form())
    assert response.status_code == 400
    assert "has no handle on any channel to reply to" in response.text
    assert replies_of(case) == []


def test_a_closed_case_takes_no_reply(client_for, agent, case):
    Case.objects.filter(pk=case.pk).update(status="closed")
    before = stored()
    response = client_for(agent).post(compose(case), reply_form())
    assert response.status_code == 400
    assert "A closed case takes no more replies" in response.text
    assert stored() == before


def test_send_and_set_pending_on_a_solved_case_is_refused_whole(client_for, agent, case):
    Case.objects.filter(pk=case.pk).update(status="solved")
    before = stored()
    response = client_for(agent).post(compose(case), reply_form(set_status="pending"))
    assert response.status_code == 400
    assert 'id="composer-status-error"' in response.text
    assert "a solved case cannot become pending" in response.text
    assert stored() == before


def test_replies_need_csrf(agent, case):
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)
    before = stored()
    assert client.post(compose(case), reply_form()).status_code == 403
    assert stored() == before


# --- collision ---------------------------------------------------------------------------------


def test_collision_warns_with_the_other_agents_name_and_stores_nothing_until_confirmed(
    client_for, agent, colleague, case
):
    client = client_for(agent)
    seen = seen_id(client.get(f"/cases/{case.pk}/").text)
    send_reply(case=case, author=colleague, channel="email", body="Bo here: refund sent.")
    before = stored()

    form = reply_form(body="Ada here: <b>refund</b> on its way.", seen_interaction_id=seen)
    response = client.post(compose(case), form)

    assert response.status_code == 409
    warning = response.text.split('id="composer-collision"')[1].split("</div>")[0]
    assert "Bo Berg wrote on this case after you opened it." in warning
    assert "Send anyway" in warning and 'name="confirm_collision" value="1"' in warning
    # What the agent wrote is kept, escaped, in the composer.
    assert "Ada here: &lt;b&gt;refund&lt;/b&gt; on its way.</textarea>" in response.text
    assert stored() == before

    response = client.post(compose(case), {**form, "confirm_collision": "1"})
    assert response.status_code == 302
    assert [r.body_text for r in replies_of(case)] == [
        "Bo here: refund sent.",
        "Ada here: <b>refund</b> on its way.",
    ]


def test_send_anyway_keeps_send_and_set_pending(client_for, agent, colleague, case):
    client = client_for(agent)
    seen = seen_id(client.get(f"/cases/{case.pk}/").text)
    send_reply(case=case, author=colleague, channel="email", body="Bo here.")
    form = reply_form(seen_interaction_id=seen, set_status="pending")
    response = client.post(compose(case), form)
    assert response.status_code == 409
    assert re.search(
        r'name="set_status" value="pending">Send anyway and set pending<', response.text
    )
    assert client.post(compose(case), {**form, "confirm_collision": "1"}).status_code == 302
    case.refresh_from_db()
    assert case.status == "pending"


def test_a_customer_message_after_the_page_loaded_is_a_collision(client_for, agent, case, ann):
    client = client_for(agent)
    seen = seen_id(client.get(f"/cases/{case.pk}/").text)
    record_interaction(customer=ann, channel="email", kind="message", direction="in",
                       body_text="Any news?", subject=case)  # fmt: skip
    response = client.post(compose(case), reply_form(seen_interaction_id=seen))
    assert response.status_code == 409
    assert "Ann Lee (customer) wrote on this case after you opened it." in response.text
    assert replies_of(case) == []


def test_my_own_earlier_reply_and_notes_are_no_collision(client_for, agent, colleague, case):
    client = client_for(agent)
    seen = seen_id(client.get(f"/cases/{case.pk}/").text)
    send_reply(case=case, author=agent, channel="email", body="First.")
    add_note(case=case, author=colleague, body="Internal only")
    response = client.post(compose(case), reply_form(body="Second.", seen_interaction_id=seen))
    assert response.status_code == 302
    assert [r.body_text for r in replies_of(case)] == ["First.", "Second."]


def test_collision_error_names_everyone_who_wrote(agent, colleague, case, ann):
    seen = Interaction.objects.latest("id").pk
    send_reply(case=case, author=colleague, channel="email", body="One")
    record_interaction(customer=ann, channel="email", kind="message", direction="in",
                       body_text="Two", subject=case)  # fmt: skip
    with pytest.raises(CollisionError) as caught:
        send_reply(case=case, author=agent, channel="email", body="Three",
                   seen_interaction_id=seen)  # fmt: skip
    assert caught.value.names == ["Bo Berg", "Ann Lee (customer)"]
    assert caught.value.code == "collision"


# --- sending -----------------------------------------------------------------------------------


def test_reply_lands_in_the_outbox_with_our_message_id_after_the_delivery_task(
    client_for, agent, case
):
    response = client_for(agent).post(compose(case), reply_form())
    assert response.status_code == 302
    [reply] = replies_of(case)
    message_id = reply.data["message_id"]
    assert re.fullmatch(rf"<case-{case.pk}\.[0-9a-f]{{32}}@mail\.shop\.example>", message_id)
    assert (reply.status, reply.channel, reply.actor_id, reply.external_id) == (
        "queued", "email", agent.pk, message_id,
    )  # fmt: skip
    assert reply.data["to"] == "ann@example.com"
    assert not OutboxEmail.objects.exists()  # queued, not sent: the worker sends

    assert deliver_interaction_task(reply.pk) == "sent"

    [mail] = OutboxEmail.objects.all()
    assert mail.to == "ann@example.com"
    assert mail.from_email == "Support <support@shop.example>"
    assert mail.subject == f"Re: Refund for order 42 [#{case.pk}]"
    assert mail.body == "Your refund is on its way."
    assert mail.message_id == message_id == mail.headers["Message-ID"]
    reply.refresh_from_db()
    assert reply.status == "sent"


def test_a_second_run_of_the_delivery_task_sends_nothing_more(agent, case):
    reply = send_reply(case=case, author=agent, channel="email", body="Hello")
    assert deliver_interaction_task(reply.pk) == "sent"
    assert deliver_interaction_task(reply.pk) == "sent"
    assert OutboxEmail.objects.count() == 1


def test_a_reply_already_being_sent_is_not_sent_again(agent, case):
    reply = send_reply(case=case, author=agent, channel="email", body="Hello")
    Interaction.objects.filter(pk=reply.pk).update(status="sending")  # a worker died mid-send
    assert deliver_interaction_task(reply.pk) == "sending"
    assert not OutboxEmail.objects.exists()


def test_the_delivery_task_ignores_an_unknown_id(db):
    assert deliver_interaction_task(987654) is None
    assert not OutboxEmail.objects.exists()


def test_reply_threads_to_the_customers_last_email(agent, case, ann):
    headers = {"message_id": "<m2@mail.example>", "references": "<m1@mail.example>"}
    record_interaction(customer=ann, channel="email", kind="message", direction="in",
                       body_text="Where is my refund?", subject=case,
                       data={**headers, "from": "ann@example.com"})  # fmt: skip
    reply = send_reply(case=case, author=agent, channel="email", body="On its way.")
    deliver_interaction_task(reply.pk)
    mail = OutboxEmail.objects.get()
    assert mail.headers["In-Reply-To"] == "<m2@mail.example>"
    assert mail.headers["References"] == "<m1@mail.example> <m2@mail.example>"
    # The next reply continues the thread from ours.
    second = send_reply(case=case, author=agent, channel="email", body="Sent today.")
    assert second.data["in_reply_to"] == reply.data["message_id"]
    assert second.data["references"].split() == [
        "<m1@mail.example>", "<m2@mail.example>", reply.data["message_id"],
    ]  # fmt: skip


def test_reply_goes_to_the_address_the_customer_wrote_from(agent, case, ann):
    Identity.objects.create(customer=ann, channel="email", handle="ann@work.example")
    record_interaction(customer=ann, channel="email", kind="message", direction="in",
                       body_text="From work", subject=case,
                       data={"from": "ann@work.example"})  # fmt: skip
    reply = send_reply(case=case, author=agent, channel="email", body="Hi")
    assert reply.data["to"] == "ann@work.example"


def test_an_unreachable_mail_server_keeps_the_reply_queued_for_retry_with_the_reason(
    settings, client_for, agent, case
):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
    reply = send_reply(case=case, author=agent, channel="email", body="Hello")
    with pytest.raises(Retry):  # the mail server is down: the task retries itself later
        deliver_interaction_task(reply.pk)
    reply.refresh_from_db()
    assert reply.status == "queued" and "refused" in reply.data["delivery_error"].lower()
    html = client_for(agent).get(f"/cases/{case.pk}/").text
    status = html.split(f'id="delivery-{reply.pk}"')[1].split("</span>")[0]
    assert "not delivered yet — retrying" in status


def test_first_reply_stamps_the_first_response_and_opens_a_new_case(agent, case):
    assert case.first_response_due_at is not None and case.first_responded_at is None
    send_reply(case=case, author=agent, channel="email", body="Hello")
    case.refresh_from_db()
    stamped = case.first_responded_at
    assert stamped is not None and case.status == "open"
    # The queue now sorts by the resolution target: first response is answered.
    assert case.sla_due_at == case.resolution_due_at
    send_reply(case=case, author=agent, channel="email", body="Again")
    case.refresh_from_db()
    assert case.first_responded_at == stamped


def test_send_and_set_pending_sets_the_status_and_pauses_the_sla(client_for, agent, case):
    response = client_for(agent).post(compose(case), reply_form(set_status="pending"))
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.status == "pending"
    assert case.first_responded_at is not None
    assert (case.sla_due_at, case.resolution_due_at, case.sla_clock_started_at) == (
        None, None, None,
    )  # fmt: skip
    [reply] = replies_of(case)
    assert reply.status == "queued"
    page = client_for(agent).get(f"/cases/{case.pk}/").text
    assert "paused while pending" in page
    assert "The case is pending now." in page


# --- notes -------------------------------------------------------------------------------------


def test_a_note_from_the_composer_is_private_and_sends_nothing(client_for, agent, case, ann):
    response = client_for(agent).post(compose(case), {"mode": "note", "body": "Upset customer"})
    assert response.status_code == 302
    note = Interaction.objects.get(kind="note")
    assert (note.is_private, note.subject_id, note.actor_id, note.body_text) == (
        True, case.pk, agent.pk, "Upset customer",
    )  # fmt: skip
    assert replies_of(case) == [] and not OutboxEmail.objects.exists()
    case.refresh_from_db()
    assert case.first_responded_at is None


def test_note_and_set_pending(client_for, agent, case):
    form = {"mode": "note", "body": "Waiting on the warehouse", "set_status": "pending"}
    assert client_for(agent).post(compose(case), form).status_code == 302
    case.refresh_from_db()
    assert case.status == "pending"


def test_an_empty_note_is_refused_next_to_the_body(client_for, agent, case):
    before = stored()
    response = client_for(agent).post(compose(case, "note"), {"body": ""})
    assert response.status_code == 400 and 'id="composer-body-error"' in response.text
    assert stored() == before


# --- the page ----------------------------------------------------------------------------------


def test_the_composer_offers_the_customers_channels_with_email_preselected(client_for, agent, case):
    html = client_for(agent).get(f"/cases/{case.pk}/").text
    composer = html.split('<section id="composer"')[1].split("</section>")[0]
    assert re.search(r'id="composer-mode-reply" checked', composer)
    assert 'id="composer-mode-note"' in composer
    options = re.findall(r'<option value="(\w+)"( selected)?>', composer)
    assert options == [("email", " selected"), ("x", "")]
    assert 'id="composer-body"' in composer and 'name="body"' in composer
    assert seen_id(composer) == Interaction.objects.latest("id").pk
    assert ">Send</button>" in composer
    assert 'name="set_status" value="pending">Send and set pending</button>' in composer
    # The macro picker sits right above the message.
    assert composer.index("<textarea") > composer.index('for="composer-body"')


def test_a_case_from_x_preselects_x(client_for, agent, support, ann):
    case = open_case(customer=ann, queue=support, subject="DM", channel="x")
    html = client_for(agent).get(f"/cases/{case.pk}/").text
    assert '<option value="x" selected>' in html


def test_the_timeline_shows_a_replys_delivery_status(client_for, agent, case):
    reply = send_reply(case=case, author=agent, channel="email", body="Hello")
    client = client_for(agent)
    page = f"/cases/{case.pk}/"
    assert f'id="delivery-{reply.pk}" class="status">queued<' in client.get(page).text
    deliver_interaction_task(reply.pk)
    assert f'id="delivery-{reply.pk}" class="status">sent<' in client.get(page).text


def test_pushed_delivery_status_swaps_the_pages_status_out_of_band(agent, make_user, case):
    reply = send_reply(case=case, author=agent, channel="email", body="Hello")
    deliver_interaction_task(reply.pk)
    pushed = render_reply_delivery(agent, interaction_id=reply.pk, case_id=case.pk)
    assert pushed == f'<span id="delivery-{reply.pk}" class="status" hx-swap-oob="true">sent</span>'
    assert render_reply_delivery(make_user("agent"), interaction_id=reply.pk, case_id=case.pk) == ""


# --- the API -----------------------------------------------------------------------------------


def api(client, case, what, payload):
    return client.post(
        f"/api/cases/{case.pk}/{what}/", data=json.dumps(payload), content_type="application/json"
    )


@pytest.mark.urls(__name__)
def test_api_reply_is_201_with_the_queued_interaction(client_for, agent, case):
    response = api(client_for(agent), case, "replies",
                   {"channel": "email", "body": "Hi", "set_status": "pending"})  # fmt: skip
    assert response.status_code == 201
    body = response.json()
    assert body["interaction"]["status"] == "queued"
    assert body["interaction"]["data"]["to"] == "ann@example.com"
    assert body["case"]["status"] == "pending" and body["case"]["first_responded_at"]
    assert deliver_interaction_task(body["interaction"]["id"]) == "sent"
    assert OutboxEmail.objects.get().message_id == body["interaction"]["external_id"]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"channel": "email", "body": ""}, "body"),
        ({"channel": "whatsapp", "body": "Hi"}, "channel"),  # ann has no WhatsApp number
        ({"channel": "pigeon", "body": "Hi"}, "channel"),
        ({"channel": "email", "body": "Hi", "set_status": "lost"}, "set_status"),
        ({"channel": "email", "body": "Hi", "set_status": "closed"}, "set_status"),
    ],
)
def test_api_reply_with_bad_input_is_400_by_field(client_for, agent, case, payload, field):
    before = stored()
    response = api(client_for(agent), case, "replies", payload)
    assert response.status_code == 400 and field in response.json()
    assert stored() == before


@pytest.mark.urls(__name__)
def test_api_collision_is_409_naming_who_wrote(client_for, agent, colleague, case):
    seen = Interaction.objects.latest("id").pk
    send_reply(case=case, author=colleague, channel="email", body="Bo here.")
    before = stored()
    payload = {"channel": "email", "body": "Hi", "seen_interaction_id": seen}
    response = api(client_for(agent), case, "replies", payload)
    assert response.status_code == 409
    assert response.json()["code"] == "collision"
    assert response.json()["replied_by"] == ["Bo Berg"]
    assert stored() == before
    confirmed = api(client_for(agent), case, "replies", {**payload, "confirm_collision": True})
    assert confirmed.status_code == 201


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("role", ["marketer", "cco"])
def test_api_refuses_marketers_and_the_cco(client_for, make_user, case, role):
    client = client_for(make_user(role))
    before = stored()
    assert api(client, case, "replies", {"channel": "email", "body": "Hi"}).status_code == 403
    assert api(client, case, "notes", {"body": "Hi"}).status_code == 403
    assert stored() == before


@pytest.mark.urls(__name__)
def test_api_refuses_an_agent_outside_the_queue_before_reading_input(client_for, make_user, case):
    client = client_for(make_user("agent"))
    assert api(client, case, "replies", {"channel": "email", "body": ""}).status_code == 403
    assert api(client, case, "notes", {"body": "Hi"}).status_code == 403
    assert replies_of(case) == []


@pytest.mark.urls(__name__)
def test_api_without_credentials_is_401(client, case):
    assert api(client, case, "replies", {"channel": "email", "body": "Hi"}).status_code == 401
    assert api(client, case, "notes", {"body": "Hi"}).status_code == 401


@pytest.mark.urls(__name__)
def test_api_unknown_case_is_404(client_for, supervisor, db):
    response = client_for(supervisor).post(
        "/api/cases/999999/notes/", data=json.dumps({"body": "Hi"}), content_type="application/json"
    )
    assert response.status_code == 404


@pytest.mark.urls(__name__)
def test_api_note_is_201_and_private(client_for, supervisor, case):
    case.queue.members.add(supervisor)  # a supervisor's team is their queues
    response = api(client_for(supervisor), case, "notes", {"body": "Escalate @ada"})
    assert response.status_code == 201
    interaction = response.json()["interaction"]
    assert (interaction["kind"], interaction["is_private"], interaction["body_text"]) == (
        "note", True, "Escalate @ada",
    )  # fmt: skip
    assert api(client_for(supervisor), case, "notes", {"body": " "}).status_code == 400
