"""Meta webhooks (Messenger, Instagram, WhatsApp): handshake, signatures, payloads → timeline."""

import json
import time

import pytest
from django.test import Client

from cases.models import Case
from customers.models import Customer, Identity, Interaction
from customers.timeline import record_interaction
from tests.cases.factories import CustomerFactory, QueueFactory
from tests.concurrency import at_once
from tests.workbench.fake_provider import body_of, corpus, meta_signature

SECRET = "meta-app-secret-for-tests"
URL = "/inbound/meta/"


@pytest.fixture(autouse=True)
def _meta_settings(settings):
    settings.META_APP_SECRET = SECRET
    settings.META_VERIFY_TOKEN = "verify-me-please"


@pytest.fixture
def queue(db):
    return QueueFactory(name="Social")


def post(client, payload, signature="good"):
    body = body_of(payload)
    headers = {}
    if signature == "good":
        headers["X-Hub-Signature-256"] = meta_signature(SECRET, body)
    elif signature:
        headers["X-Hub-Signature-256"] = signature
    return client.post(URL, body, content_type="application/json", headers=headers)


def counts():
    return Interaction.objects.count(), Customer.objects.count(), Case.objects.count()


def inbound(channel):
    return Interaction.objects.filter(channel=channel, direction="in")


def our_reply(customer, channel, external_id, to, status="sent"):
    Identity.objects.get_or_create(channel=channel, handle=to, defaults={"customer": customer})
    interaction, _ = record_interaction(
        customer=customer,
        channel=channel,
        kind="message",
        direction="out",
        body_text="A replacement is on its way.",
        external_id=external_id,
        status=status,
        data={"to": to},
    )
    return interaction


# --- Handshake ----------------------------------------------------------------------------------


def test_handshake_answers_the_challenge_with_the_right_verify_token(client):
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": "verify-me-please",
        "hub.challenge": "1158201444",
    }
    response = client.get(URL, params)
    assert response.status_code == 200
    assert response.content == b"1158201444"


def test_handshake_with_a_wrong_verify_token_is_refused(client):
    params = {"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158201444"}
    response = client.get(URL, params)
    assert response.status_code == 403
    assert b"1158201444" not in response.content


def test_handshake_without_mode_or_challenge_is_a_400(client):
    assert client.get(URL, {"hub.verify_token": "verify-me-please"}).status_code == 400


# --- Signatures and malformed payloads ----------------------------------------------------------


def test_an_unsigned_post_is_401_and_stores_nothing(client, queue):
    response = post(client, corpus("meta/messenger_text.json"), signature=None)
    assert response.status_code == 401
    assert counts() == (0, 0, 0)


@pytest.mark.parametrize(
    "signature",
    [
        meta_signature("another-secret", body_of(corpus("meta/messenger_text.json"))),
        "sha256=deadbeef",
        "not-even-the-format",
    ],
)
def test_a_badly_signed_post_is_403_and_stores_nothing(client, queue, signature):
    response = post(client, corpus("meta/messenger_text.json"), signature=signature)
    assert response.status_code == 403
    assert counts() == (0, 0, 0)


def test_a_body_changed_after_signing_is_403(client, queue):
    original = body_of(corpus("meta/messenger_text.json"))
    tampered = original.replace(b"damaged", b"perfect")
    headers = {"X-Hub-Signature-256": meta_signature(SECRET, original)}
    response = client.post(URL, tampered, content_type="application/json", headers=headers)
    assert response.status_code == 403
    assert counts() == (0, 0, 0)


def test_no_secret_configured_refuses_everything(client, queue, settings):
    settings.META_APP_SECRET = ""
    response = post(client, corpus("meta/messenger_text.json"), signature="sha256=anything")
    assert response.status_code == 503
    assert counts() == (0, 0, 0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[1, 2]", "the body is not a JSON object"),
        (corpus("meta/malformed_no_entry.json"), '"entry" is missing or not a list'),
        ({"object": "user", "entry": []}, "\"object\" is 'user'"),
        (corpus("meta/whatsapp_missing_from.json"), "messages[0].from is missing"),
    ],
)
def test_a_malformed_payload_is_a_400_with_the_reason_and_stores_nothing(
    client, queue, payload, reason
):
    response = post(client, payload)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert counts() == (0, 0, 0)


def test_one_malformed_message_refuses_the_whole_request(client, queue):
    response = post(client, corpus("meta/messenger_one_malformed.json"))
    assert response.status_code == 400
    assert response.json()["error"] == "entry[0].messaging[1].message.mid is missing"
    assert counts() == (0, 0, 0)  # the good first message was not stored either


def test_a_sender_id_that_is_no_messenger_id_is_refused(client, queue):
    payload = corpus("meta/messenger_text.json")
    payload["entry"][0]["messaging"][0]["sender"]["id"] = "not-a-psid"
    response = post(client, payload)
    assert response.status_code == 400
    assert "sender.id" in response.json()["error"]
    assert counts() == (0, 0, 0)


# --- Messages → timeline entry and case ---------------------------------------------------------


def test_a_messenger_message_lands_on_the_timeline_and_opens_a_case(client, queue):
    response = post(client, corpus("meta/messenger_text.json"))
    assert response.status_code == 200
    assert response.json() == {"stored": 1, "duplicates": 0, "receipts": 0, "ignored": 0}
    entry = inbound("facebook").get()
    assert entry.external_id.startswith("m_AG5Hz2Uq7tuwNEhX")
    assert entry.body_text == "Hi, my order 4471 arrived damaged. Can I get a replacement?"
    assert entry.data["from"] == "6423815907712345"
    assert Identity.objects.get(channel="facebook").handle == "6423815907712345"
    case = Case.objects.get()
    assert (case.customer_id, case.channel, case.queue_id) == (
        entry.customer_id,
        "facebook",
        queue.pk,
    )
    assert case.subject == "Hi, my order 4471 arrived damaged. Can I get a replacement?"
    assert entry.subject == case
    assert entry.occurred_at.timestamp() == pytest.approx(1763900000.001)


def test_several_messages_in_one_request_are_all_stored(client, queue):
    response = post(client, corpus("meta/messenger_two_messages.json"))
    assert response.status_code == 200 and response.json()["stored"] == 2
    bodies = dict(inbound("facebook").values_list("external_id", "body_text"))
    assert bodies == {
        "m_two_first_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP": "Hello?",
        "m_two_second_Hz2Uq7tuwNEhXfYYKj8mJEM": "[image]",
    }
    image = inbound("facebook").get(external_id="m_two_second_Hz2Uq7tuwNEhXfYYKj8mJEM")
    assert image.data["social_attachments"][0]["type"] == "image"
    assert Customer.objects.count() == 2 and Case.objects.count() == 2


def test_an_instagram_message_lands_on_the_timeline_and_opens_a_case(client, queue):
    assert post(client, corpus("meta/instagram_text.json")).status_code == 200
    entry = inbound("instagram").get()
    assert entry.body_text == "Is the blue jacket back in stock?"
    assert Identity.objects.get(channel="instagram").handle == "@1234567890123456"
    assert Case.objects.get().channel == "instagram"


def test_a_whatsapp_message_lands_with_the_profile_name_and_e164_number(client, queue):
    assert post(client, corpus("meta/whatsapp_text.json")).status_code == 200
    entry = inbound("whatsapp").get()
    assert entry.external_id == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
    assert entry.body_text == "Does it come in another color?"
    identity = Identity.objects.get(channel="whatsapp")
    assert identity.handle == "+16505551234"
    assert identity.customer.display_name == "Sheena Nelson"
    case = Case.objects.get()
    assert case.channel == "whatsapp" and case.thread_key == "whatsapp:106540352242922:16505551234"


def test_two_whatsapp_messages_of_two_customers_in_one_request(client, queue):
    response = post(client, corpus("meta/whatsapp_two_messages.json"))
    assert response.status_code == 200 and response.json()["stored"] == 2
    bodies = dict(inbound("whatsapp").values_list("customer__display_name", "body_text"))
    assert bodies == {
        "Sheena Nelson": "This is what arrived",
        "Kofi Mensah": "My refund still hasn't arrived",
    }
    assert Case.objects.count() == 2


def test_the_same_webhook_delivered_again_stores_nothing_more(client, queue):
    assert post(client, corpus("meta/whatsapp_text.json")).json()["stored"] == 1
    again = post(client, corpus("meta/whatsapp_text.json"))
    assert again.status_code == 200
    assert again.json()["duplicates"] == 1 and again.json()["stored"] == 0
    assert inbound("whatsapp").count() == 1 and Case.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_webhook_delivered_twice_at_once_stores_one_interaction():
    QueueFactory(name="Social")
    body = body_of(corpus("meta/messenger_text.json"))
    headers = {"X-Hub-Signature-256": meta_signature(SECRET, body)}

    def deliver() -> int:
        return (
            Client().post(URL, body, content_type="application/json", headers=headers).status_code
        )

    assert at_once(deliver, times=4) == [200, 200, 200, 200]
    assert inbound("facebook").count() == 1
    assert Customer.objects.count() == 1 and Case.objects.count() == 1


# --- Echoes and receipts ------------------------------------------------------------------------


def test_an_echo_of_our_own_message_is_not_stored_as_inbound(client, queue):
    response = post(client, corpus("meta/messenger_echo.json"))
    assert response.status_code == 200
    assert response.json()["stored"] == 0
    assert counts() == (0, 0, 0)


def test_an_echo_confirms_our_queued_message_left(client, queue):
    customer = CustomerFactory()
    reply = our_reply(customer, "facebook", "m_OUTBOUND_messenger_1", "6423815907712345", "sending")
    post(client, corpus("meta/messenger_echo.json"))
    reply.refresh_from_db()
    assert reply.status == "sent"
    assert inbound("facebook").count() == 0


def test_delivery_then_read_receipts_move_our_messenger_reply_forward(client, queue):
    customer = CustomerFactory()
    reply = our_reply(customer, "facebook", "m_OUTBOUND_messenger_1", "6423815907712345")
    assert post(client, corpus("meta/messenger_delivery.json")).json()["receipts"] == 1
    reply.refresh_from_db()
    assert reply.status == "delivered" and "delivered_at" in reply.data
    read = corpus("meta/messenger_read.json")
    read["entry"][0]["messaging"][0]["read"]["watermark"] = int(time.time() * 1000) + 1000
    assert post(client, read).json()["receipts"] == 1
    reply.refresh_from_db()
    assert reply.status == "read"
    # A late delivery receipt never moves it back.
    post(client, corpus("meta/messenger_delivery.json"))
    reply.refresh_from_db()
    assert reply.status == "read"


def test_a_read_watermark_before_our_message_leaves_it_alone(client, queue):
    customer = CustomerFactory()
    reply = our_reply(customer, "facebook", "m_OUTBOUND_messenger_1", "6423815907712345")
    read = corpus("meta/messenger_read.json")
    read["entry"][0]["messaging"][0]["read"]["watermark"] = int(time.time() * 1000) - 3_600_000
    assert post(client, read).json()["receipts"] == 0
    reply.refresh_from_db()
    assert reply.status == "sent"


def test_an_instagram_read_receipt_names_the_message(client, queue):
    customer = CustomerFactory()
    reply = our_reply(customer, "instagram", "m_OUTBOUND_instagram_1", "@1234567890123456")
    assert post(client, corpus("meta/instagram_read.json")).status_code == 200
    reply.refresh_from_db()
    assert reply.status == "read"


def test_whatsapp_statuses_mark_delivered_then_failed_is_ignored_after_delivery(client, queue):
    customer = CustomerFactory()
    reply = our_reply(customer, "whatsapp", "wamid.OUTBOUND_whatsapp_1", "+16505551234")
    assert post(client, corpus("meta/whatsapp_status_delivered.json")).json()["receipts"] == 1
    reply.refresh_from_db()
    assert reply.status == "delivered"
    post(client, corpus("meta/whatsapp_status_failed.json"))
    reply.refresh_from_db()
    assert reply.status == "delivered"  # another device got it: the failure does not win


def test_a_failed_whatsapp_status_marks_our_reply_failed_with_the_providers_error(client, queue):
    customer = CustomerFactory()
    reply = our_reply(customer, "whatsapp", "wamid.OUTBOUND_whatsapp_1", "+16505551234")
    assert post(client, corpus("meta/whatsapp_status_failed.json")).status_code == 200
    reply.refresh_from_db()
    assert reply.status == "failed"
    assert reply.data["delivery_error"] == (
        "Re-engagement message (code 131047): Message failed to send because more than 24 hours "
        "have passed since the customer last replied to this number."
    )


def test_a_receipt_for_a_message_we_never_sent_changes_nothing(client, queue):
    response = post(client, corpus("meta/whatsapp_status_delivered.json"))
    assert response.status_code == 200 and response.json()["receipts"] == 0
    assert counts() == (0, 0, 0)


def test_the_response_body_is_json(client, queue):
    response = post(client, corpus("meta/messenger_text.json"))
    assert json.loads(response.content)["stored"] == 1
