"""Email doors over HTTP: the raw endpoint's shared secret, size and format checks, concurrent
duplicates, and the Mailgun, SendGrid and Postmark inbound and tracking webhooks (anymail)."""

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from django.test import Client

from cases.models import Case
from cases.replies import send_reply
from customers.models import Customer, Interaction
from tests.cases.test_queue_page import make_queue
from tests.concurrency import at_once
from workbench.connectors.email_inbound import MAX_MAIL_BYTES

CORPUS = Path(__file__).parent / "corpus" / "email"
SECRET = "s3cret-raw-inbound-token"
MAILGUN_KEY = "key-mailgun-signing-0123456789"
BASIC = "anymail:webhook-pass"
RAW_URL = "/inbound/email/raw/"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


@pytest.fixture(autouse=True)
def _configured(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.INBOUND_EMAIL_SECRET = SECRET
    settings.ANYMAIL = {"WEBHOOK_SECRET": BASIC, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
    settings.WORKBENCH_MAIL_DOMAIN = "workbench.localhost"


@pytest.fixture
def email_queue(db, agent):
    return make_queue("Email desk", channels=["email"], members=[agent])


def post_raw(client, raw: bytes, token: str | None = SECRET, scheme: str = "Bearer"):
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return client.post(RAW_URL, raw, content_type="message/rfc822", headers=headers)


def basic(credentials: str = BASIC) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def messages() -> int:
    return Interaction.objects.filter(kind="message").count()


def nothing_stored() -> bool:
    return not Interaction.objects.exists() and not Customer.objects.exists()


# --- the raw endpoint ----------------------------------------------------------------------


def test_raw_mail_with_the_secret_lands_on_the_timeline_and_opens_a_case(client, email_queue):
    response = post_raw(client, corpus("plain.eml"))

    assert response.status_code == 201
    body = response.json()
    case = Case.objects.get()
    entry = Interaction.objects.get(pk=body["interaction_id"])
    assert body == {
        "status": "created",
        "interaction_id": entry.pk,
        "case_id": case.pk,
        "refused_attachments": [],
    }
    assert entry.subject == case
    assert (entry.title, case.subject) == ("Parcel never arrived", "Parcel never arrived")
    assert case.customer.identities.get().handle == "ann.lee@example.com"


def test_raw_mail_delivered_again_is_a_200_and_stores_nothing_more(client, email_queue):
    first = post_raw(client, corpus("plain.eml"))
    again = post_raw(client, corpus("plain.eml"))

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["status"] == "duplicate"
    assert again.json()["interaction_id"] == first.json()["interaction_id"]
    assert (messages(), Case.objects.count()) == (1, 1)


def test_raw_mail_without_a_secret_is_401_and_stores_nothing(client, email_queue):
    response = post_raw(client, corpus("plain.eml"), token=None)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="inbound-email"'
    assert nothing_stored()


@pytest.mark.parametrize(
    ("scheme", "token"), [("Bearer", "wrong"), ("Basic", SECRET), ("Bearer", SECRET + "x")]
)
def test_raw_mail_with_a_wrong_secret_is_403_and_stores_nothing(client, email_queue, scheme, token):
    response = post_raw(client, corpus("plain.eml"), token=token, scheme=scheme)

    assert response.status_code == 403
    assert response.json() == {"error": "Wrong shared secret."}
    assert nothing_stored()


def test_raw_endpoint_refuses_everything_while_no_secret_is_configured(
    client, email_queue, settings
):
    settings.INBOUND_EMAIL_SECRET = ""

    response = post_raw(client, corpus("plain.eml"), token="")

    assert response.status_code == 403
    assert "not configured" in response.json()["error"]
    assert nothing_stored()


def test_malformed_raw_mail_is_400_with_the_reason_and_stores_nothing(
    client, email_queue, settings
):
    raw = corpus("attachments.eml").replace(b"From: Carla Mendes <carla@example.pt>\r\n", b"")

    response = post_raw(client, raw)

    assert response.status_code == 400
    assert response.json() == {"error": "the mail has no sender address (From)"}
    assert nothing_stored()
    assert not [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]


def test_an_empty_raw_mail_is_400(client, email_queue):
    response = post_raw(client, b"")

    assert response.status_code == 400
    assert response.json() == {"error": "the mail is empty"}


def test_a_raw_mail_over_the_limit_is_413_and_stores_nothing(client, email_queue):
    raw = corpus("plain.eml") + b"x" * (MAX_MAIL_BYTES + 1)

    response = post_raw(client, raw)

    assert response.status_code == 413
    assert nothing_stored()


def test_get_on_the_raw_endpoint_is_405(client, email_queue):
    assert client.get(RAW_URL).status_code == 405


def test_a_raw_bounce_marks_our_reply_failed(client, email_queue, agent):
    post_raw(Client(), corpus("plain.eml"))
    case = Case.objects.get()
    reply = send_reply(case=case, author=agent, channel="email", body="Label attached.")
    our_id = "<case-1.0f0e0d0c0b0a09080706050403020100@workbench.localhost>"
    Interaction.objects.filter(pk=reply.pk).update(status="sent", external_id=our_id)

    response = post_raw(client, corpus("bounce.eml"))

    assert response.status_code == 200
    assert response.json() == {"status": "bounce", "interaction_id": reply.pk}
    reply.refresh_from_db()
    assert reply.status == "failed"
    assert "User unknown" in reply.data["delivery_error"]
    assert Case.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_deliveries_store_one_interaction_and_one_case(agent):
    make_queue("Email desk", channels=["email"], members=[agent])
    raw = corpus("plain.eml")
    statuses = at_once(lambda: post_raw(Client(), raw).status_code, times=4)

    assert sorted(statuses) == [200, 200, 200, 201]
    assert messages() == 1
    assert Case.objects.count() == 1
    assert Customer.objects.count() == 1


# --- Mailgun -------------------------------------------------------------------------------


def mailgun_signature(timestamp: str, token: str, key: str = MAILGUN_KEY) -> str:
    return hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


def mailgun_inbound_form(raw: bytes, *, key: str = MAILGUN_KEY, signed: bool = True) -> dict:
    timestamp, token = str(int(time.time())), "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
    form = {
        "recipient": "support@mg.workbench.localhost",
        "sender": "ann.lee@example.com",
        "from": "Ann Lee <ann.lee@example.com>",
        "subject": "Parcel never arrived",
        "body-mime": raw.decode("utf-8"),
        "timestamp": timestamp,
        "token": token,
    }
    if signed:
        form["signature"] = mailgun_signature(timestamp, token, key)
    return form


def test_mailgun_inbound_with_a_good_signature_opens_a_case(client, email_queue):
    # With ANYMAIL_WEBHOOK_SECRET set, every provider's URL carries it too (user:pass@host).
    response = client.post(
        "/inbound/email/mailgun/inbound_mime/",
        mailgun_inbound_form(corpus("plain.eml")),
        headers=basic(),
    )

    assert response.status_code == 201
    case = Case.objects.get()
    assert response.json()["case_id"] == case.pk
    assert Interaction.objects.get(kind="message").subject == case


def test_mailgun_inbound_with_a_bad_signature_is_403_and_stores_nothing(client, email_queue):
    form = mailgun_inbound_form(corpus("plain.eml"), key="not-the-key")

    response = client.post("/inbound/email/mailgun/inbound_mime/", form, headers=basic())

    assert response.status_code == 403
    assert "incorrect signature" in response.json()["error"]
    assert nothing_stored()


def test_mailgun_inbound_without_a_signature_is_401_and_stores_nothing(client, email_queue):
    form = mailgun_inbound_form(corpus("plain.eml"), signed=False)

    response = client.post("/inbound/email/mailgun/inbound/", form, headers=basic())

    assert response.status_code == 401
    assert nothing_stored()


def test_mailgun_signature_alone_suffices_when_no_basic_auth_is_configured(
    client, email_queue, settings
):
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}

    response = client.post(
        "/inbound/email/mailgun/inbound_mime/", mailgun_inbound_form(corpus("plain.eml"))
    )

    assert response.status_code == 201
    assert Case.objects.count() == 1


def test_mailgun_without_a_signing_key_refuses_everything(client, email_queue, settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": BASIC}

    response = client.post(
        "/inbound/email/mailgun/inbound/", mailgun_inbound_form(corpus("plain.eml"))
    )

    assert response.status_code == 403
    assert nothing_stored()


def test_mailgun_inbound_of_a_malformed_mail_is_400(client, email_queue):
    raw = corpus("plain.eml").replace(b"From: Ann Lee <Ann.Lee@Example.com>\r\n", b"")

    response = client.post(
        "/inbound/email/mailgun/inbound_mime/", mailgun_inbound_form(raw), headers=basic()
    )

    assert response.status_code == 400
    assert response.json() == {"error": "the mail has no sender address (From)"}
    assert nothing_stored()


# --- SendGrid ------------------------------------------------------------------------------


def sendgrid_form(raw: bytes) -> dict:
    return {
        "email": raw.decode("utf-8"),
        "to": "support@parse.workbench.localhost",
        "from": "Bo Svensson <bo@example.org>",
        "envelope": json.dumps({"to": ["support@parse.workbench.localhost"],
                                "from": "bo@example.org"}),
        "charsets": json.dumps({"to": "UTF-8", "from": "UTF-8", "subject": "UTF-8"}),
        "spam_score": "0.1",
        "SPF": "pass",
    }  # fmt: skip


def test_sendgrid_inbound_with_basic_auth_keeps_text_and_html(client, email_queue):
    response = client.post(
        "/inbound/email/sendgrid/inbound/",
        sendgrid_form(corpus("alternative.eml")),
        headers=basic(),
    )

    assert response.status_code == 201
    entry = Interaction.objects.get(kind="message")
    assert entry.title == "Re: Rückerstattung für Bestellung 7781"
    assert "<script" not in entry.body_html and "<p>Bo</p>" in entry.body_html
    assert Case.objects.get().customer.identities.get().handle == "bo@example.org"


def test_sendgrid_inbound_with_wrong_basic_auth_is_403_and_without_is_401(client, email_queue):
    form = sendgrid_form(corpus("alternative.eml"))

    wrong = client.post("/inbound/email/sendgrid/inbound/", form, headers=basic("anymail:nope"))
    missing = client.post("/inbound/email/sendgrid/inbound/", form)

    assert wrong.status_code == 403
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"] == 'Basic realm="anymail"'
    assert nothing_stored()


def test_basic_auth_webhooks_refuse_everything_while_no_secret_is_configured(
    client, email_queue, settings
):
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}

    response = client.post(
        "/inbound/email/sendgrid/inbound/", sendgrid_form(corpus("alternative.eml"))
    )

    assert response.status_code == 403
    assert "ANYMAIL_WEBHOOK_SECRET" in response.json()["error"]
    assert nothing_stored()


# --- Postmark ------------------------------------------------------------------------------


def postmark_post(client, url: str, payload, headers=None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload)
    return client.post(url, body, content_type="application/json", headers=headers or basic())


def test_postmark_inbound_stores_the_mail_its_attachment_and_opens_a_case(client, email_queue):
    payload = json.loads(corpus("postmark_inbound.json"))

    response = postmark_post(client, "/inbound/email/postmark/inbound/", payload)

    assert response.status_code == 201
    entry = Interaction.objects.get(kind="message")
    assert entry.external_id == (
        "<CAGXpo2WKfxHWZ5UFYCR3H_J9SNMG+5AXUovfEFL6DjWBJSyZaA@mail.example.ng>"
    )
    assert entry.actor_label == "Dana Okafor"
    assert entry.body_text == "I ordered size 42 and got 38. Receipt attached.\n\nDana"
    [attachment] = entry.data["attachments"]
    assert (attachment["name"], attachment["content_type"]) == ("receipt.txt", "text/plain")
    assert Case.objects.get().subject == "Wrong size delivered"


def test_postmark_inbound_twice_stores_one_interaction(client, email_queue):
    payload = json.loads(corpus("postmark_inbound.json"))

    first = postmark_post(client, "/inbound/email/postmark/inbound/", payload)
    again = postmark_post(client, "/inbound/email/postmark/inbound/", payload)

    assert (first.status_code, again.status_code) == (201, 200)
    assert messages() == 1


def test_postmark_inbound_with_bad_credentials_is_refused(client, email_queue):
    payload = json.loads(corpus("postmark_inbound.json"))
    url = "/inbound/email/postmark/inbound/"

    assert postmark_post(client, url, payload, headers=basic("x:y")).status_code == 403
    assert client.post(url, json.dumps(payload), content_type="application/json").status_code == 401
    assert nothing_stored()


@pytest.mark.parametrize(
    "payload", [b"{not json", json.dumps({"FromFull": {"Email": "", "Name": ""}}).encode()]
)
def test_postmark_inbound_malformed_payload_is_400(client, email_queue, payload):
    response = postmark_post(client, "/inbound/email/postmark/inbound/", payload)

    assert response.status_code == 400
    assert response.json()["error"]
    assert nothing_stored()


# --- tracking ------------------------------------------------------------------------------


@pytest.fixture
def sent_reply(client, email_queue, agent):
    post_raw(client, corpus("plain.eml"))
    case = Case.objects.get()
    reply = send_reply(case=case, author=agent, channel="email", body="We sent a new one.")
    Interaction.objects.filter(pk=reply.pk).update(status="sent")
    return reply


def with_provider_id(reply, provider_id: str):
    reply.data = {**reply.data, "provider_message_id": provider_id}
    reply.save(update_fields=["data"])
    return reply


def test_postmark_tracking_moves_a_reply_to_delivered_then_opened(client, sent_reply):
    reply = with_provider_id(sent_reply, "883953f4-6105-42a2-a16a-77a8eac79483")
    url = "/inbound/email/postmark/tracking/"

    delivered = postmark_post(client, url, json.loads(corpus("postmark_delivery.json")))
    reply.refresh_from_db()
    assert (delivered.status_code, reply.status) == (200, "delivered")

    postmark_post(client, url, json.loads(corpus("postmark_open.json")))
    reply.refresh_from_db()
    assert reply.status == "opened"
    # A late, repeated "delivered" does not move it back.
    postmark_post(client, url, json.loads(corpus("postmark_delivery.json")))
    reply.refresh_from_db()
    assert reply.status == "opened"
    assert [e["status"] for e in reply.data["delivery_events"]] == [
        "delivered", "opened", "delivered"
    ]  # fmt: skip


def test_postmark_bounce_marks_the_reply_failed_with_the_reason(client, sent_reply):
    reply = with_provider_id(sent_reply, "883953f4-6105-42a2-a16a-77a8eac79483")

    response = postmark_post(
        client, "/inbound/email/postmark/tracking/", json.loads(corpus("postmark_bounce.json"))
    )

    assert response.status_code == 200
    reply.refresh_from_db()
    assert reply.status == "failed"
    assert "unable to deliver your message" in reply.data["delivery_error"]
    assert "550 5.1.1" in reply.data["delivery_error"]
    # A later "open" does not hide the bounce.
    postmark_post(
        client, "/inbound/email/postmark/tracking/", json.loads(corpus("postmark_open.json"))
    )
    reply.refresh_from_db()
    assert reply.status == "failed"


def test_postmark_tracking_with_bad_credentials_changes_nothing(client, sent_reply):
    reply = with_provider_id(sent_reply, "883953f4-6105-42a2-a16a-77a8eac79483")

    response = postmark_post(
        client, "/inbound/email/postmark/tracking/", json.loads(corpus("postmark_bounce.json")),
        headers=basic("anymail:wrong"),
    )  # fmt: skip

    assert response.status_code == 403
    reply.refresh_from_db()
    assert reply.status == "sent"


def test_tracking_about_a_message_we_never_sent_is_acknowledged_and_changes_nothing(
    client, sent_reply
):
    response = postmark_post(
        client, "/inbound/email/postmark/tracking/", json.loads(corpus("postmark_bounce.json"))
    )

    assert response.status_code == 200
    sent_reply.refresh_from_db()
    assert sent_reply.status == "sent"


def mailgun_tracking_payload(message_id: str, *, key: str = MAILGUN_KEY) -> bytes:
    timestamp, token = str(int(time.time())), "9c9b7b3e1c0a4f0e8e5a7c1d2b3f4a5b6c7d8e9f0a1b2c3d4e"
    text = corpus("mailgun_failed.json").decode()
    for old, new in {
        "__TIMESTAMP__": timestamp,
        "__TOKEN__": token,
        "__SIGNATURE__": mailgun_signature(timestamp, token, key),
        "__MESSAGE_ID__": message_id,
    }.items():
        text = text.replace(old, new)
    return text.encode()


def test_mailgun_failed_event_marks_our_reply_failed_by_its_message_id(client, sent_reply):
    # Mailgun quotes the Message-ID we gave the mail, without its brackets.
    payload = mailgun_tracking_payload(sent_reply.external_id.strip("<>"))

    response = client.post(
        "/inbound/email/mailgun/tracking/", payload, content_type="application/json",
        headers=basic(),
    )  # fmt: skip

    assert response.status_code == 200
    sent_reply.refresh_from_db()
    assert sent_reply.status == "failed"
    assert "Delivery not authorized" in sent_reply.data["delivery_error"]


def test_mailgun_tracking_with_a_bad_signature_is_403(client, sent_reply):
    payload = mailgun_tracking_payload(sent_reply.external_id.strip("<>"), key="wrong")

    response = client.post(
        "/inbound/email/mailgun/tracking/", payload, content_type="application/json",
        headers=basic(),
    )  # fmt: skip

    assert response.status_code == 403
    sent_reply.refresh_from_db()
    assert sent_reply.status == "sent"


def test_sendgrid_events_mark_the_reply_delivered(client, sent_reply):
    reply = with_provider_id(sent_reply, "<14c5d75ce93.dfd.64b469@ismtpd-555>")

    response = client.post(
        "/inbound/email/sendgrid/tracking/", corpus("sendgrid_events.json"),
        content_type="application/json", headers=basic(),
    )  # fmt: skip

    assert response.status_code == 200
    reply.refresh_from_db()
    assert reply.status == "delivered"


def test_provider_urls_answer_head_and_refuse_get(client, email_queue):
    assert client.head("/inbound/email/postmark/inbound/").status_code == 200
    assert client.get("/inbound/email/postmark/inbound/").status_code == 405
    assert nothing_stored()
