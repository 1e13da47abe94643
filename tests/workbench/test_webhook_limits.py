"""Provider webhooks larger than Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB): each door takes
bodies up to its own limit and answers a clear 413 above it, while the site-wide setting stays."""

import base64
import hashlib
import hmac
import json
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from cases.models import Case
from customers.models import Customer, Interaction
from tests.cases.factories import QueueFactory
from tests.cases.test_queue_page import make_queue
from tests.workbench.fake_provider import body_of, corpus, meta_signature, x_signature
from workbench.connectors.email_views import MAX_WEBHOOK_BYTES
from workbench.connectors.webhooks import MAX_BODY_BYTES

META_SECRET = "meta-app-secret-for-tests"
X_SECRET = "x-consumer-secret-for-tests"
MAILGUN_KEY = "key-mailgun-signing-0123456789"
BASIC = "anymail:webhook-pass"
THREE_MB = 3 * 1024 * 1024
EMAIL_CORPUS = Path(__file__).parent / "corpus" / "email"


@pytest.fixture(autouse=True)
def _configured(settings, tmp_path):
    settings.META_APP_SECRET = META_SECRET
    settings.X_CONSUMER_SECRET = X_SECRET
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.ANYMAIL = {"WEBHOOK_SECRET": BASIC, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
    settings.WORKBENCH_MAIL_DOMAIN = "workbench.localhost"


def test_the_site_wide_upload_limit_stays_below_the_provider_limits():
    # What makes the tests below meaningful: Django alone would refuse these bodies.
    assert django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 2_621_440
    assert MAX_BODY_BYTES == 5 * 1024 * 1024
    assert MAX_WEBHOOK_BYTES > 25 * 1024 * 1024


def padded(payload: dict, size: int) -> bytes:
    """The payload as JSON of exactly `size` bytes, padded with a key the parsers ignore."""
    bare = body_of({**payload, "padding": ""})
    body = body_of({**payload, "padding": "x" * (size - len(bare))})
    assert len(body) == size
    return body


def nothing_stored() -> bool:
    return not Interaction.objects.exists() and not Customer.objects.exists()


# --- Meta and X: 5 MB -----------------------------------------------------------------------


def meta_post(client, body: bytes):
    headers = {"X-Hub-Signature-256": meta_signature(META_SECRET, body)}
    return client.post("/inbound/meta/", body, content_type="application/json", headers=headers)


def x_post(client, body: bytes):
    headers = {"x-twitter-webhooks-signature": x_signature(X_SECRET, body)}
    return client.post("/inbound/x/", body, content_type="application/json", headers=headers)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("post", "payload", "channel"),
    [(meta_post, "meta/messenger_text.json", "facebook"), (x_post, "x/dm.json", "x")],
)
def test_a_signed_batch_of_exactly_the_limit_is_stored(client, post, payload, channel):
    QueueFactory(name="Social")

    response = post(client, padded(corpus(payload), MAX_BODY_BYTES))

    assert response.status_code == 200, response.content[:300]
    assert response.json()["stored"] == 1
    assert Interaction.objects.filter(channel=channel, direction="in").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(("post", "payload"), [(meta_post, "meta/messenger_text.json"),
                                               (x_post, "x/dm.json")])  # fmt: skip
def test_a_batch_one_byte_over_the_limit_is_a_413_and_stores_nothing(client, post, payload):
    QueueFactory(name="Social")

    response = post(client, padded(corpus(payload), MAX_BODY_BYTES + 1))

    assert response.status_code == 413
    assert response.json() == {"error": "the body is larger than 5,242,880 bytes"}
    assert nothing_stored() and not Case.objects.exists()


@pytest.mark.django_db
def test_a_batch_over_django_s_limit_but_badly_signed_is_still_refused(client):
    body = padded(corpus("meta/messenger_text.json"), THREE_MB)
    headers = {"X-Hub-Signature-256": meta_signature("not-the-secret", body)}

    response = client.post("/inbound/meta/", body, content_type="application/json", headers=headers)

    assert response.status_code == 403
    assert nothing_stored()


# --- email webhooks: the raw door's 25 MB, encoded ------------------------------------------


def basic() -> dict:
    return {"Authorization": "Basic " + base64.b64encode(BASIC.encode()).decode()}


def mail_with_attachment(size: int) -> bytes:
    """A mail from Ann with a text attachment of `size` bytes (base64 in the MIME)."""
    message = EmailMessage()
    message["From"] = "Ann Lee <ann.lee@example.com>"
    message["To"] = "support@mg.workbench.localhost"
    message["Subject"] = "The full delivery log"
    message["Message-ID"] = "<big-log-1@example.com>"
    message.set_content("The log you asked for is attached.\n")
    line = b"2026-11-23 12:00:00 parcel scanned at depot\n"
    message.add_attachment(
        (line * (size // len(line) + 1))[:size],
        maintype="text",
        subtype="plain",
        filename="delivery-log.txt",
    )
    return message.as_bytes()


def mailgun_form(raw: bytes) -> dict:
    timestamp, token = str(int(time.time())), "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
    signature = hmac.new(
        MAILGUN_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    return {
        "recipient": "support@mg.workbench.localhost",
        "sender": "ann.lee@example.com",
        "body-mime": raw.decode("ascii"),
        "timestamp": timestamp,
        "token": token,
        "signature": signature,
    }


@pytest.fixture
def email_queue(db, agent):
    return make_queue("Email desk", channels=["email"], members=[agent])


def stored_attachment() -> tuple[str, int]:
    entry = Interaction.objects.get(kind="message", channel="email")
    [attachment] = entry.data["attachments"]
    return attachment["name"], attachment["size"]


def test_a_mailgun_mime_post_of_4_mb_is_stored_with_its_attachment(client, email_queue):
    raw = mail_with_attachment(THREE_MB)
    assert len(raw) > django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    response = client.post(
        "/inbound/email/mailgun/inbound_mime/", mailgun_form(raw), headers=basic()
    )

    assert response.status_code == 201, response.content[:300]
    assert stored_attachment() == ("delivery-log.txt", THREE_MB)
    assert Case.objects.get().subject == "The full delivery log"


def test_a_sendgrid_raw_post_of_4_mb_is_stored_with_its_attachment(client, email_queue):
    form = {
        "email": mail_with_attachment(THREE_MB).decode("ascii"),
        "to": "support@parse.workbench.localhost",
        "from": "Ann Lee <ann.lee@example.com>",
        "envelope": json.dumps({"to": ["support@parse.workbench.localhost"],
                                "from": "ann.lee@example.com"}),
        "charsets": json.dumps({"to": "UTF-8", "from": "UTF-8", "subject": "UTF-8"}),
    }  # fmt: skip

    response = client.post("/inbound/email/sendgrid/inbound/", form, headers=basic())

    assert response.status_code == 201, response.content[:300]
    assert stored_attachment() == ("delivery-log.txt", THREE_MB)


def test_a_postmark_json_post_of_4_mb_is_stored_with_its_attachment(client, email_queue):
    payload = json.loads((EMAIL_CORPUS / "postmark_inbound.json").read_text())
    content = b"scan " * (THREE_MB // 5)
    payload["Attachments"] = [
        {
            "Name": "delivery-log.txt",
            "Content": base64.b64encode(content).decode(),
            "ContentType": "text/plain",
            "ContentLength": len(content),
        }
    ]

    response = client.post(
        "/inbound/email/postmark/inbound/",
        json.dumps(payload),
        content_type="application/json",
        headers=basic(),
    )

    assert response.status_code == 201, response.content[:300]
    assert stored_attachment() == ("delivery-log.txt", len(content))


def test_an_email_webhook_of_exactly_the_limit_is_read_not_refused_for_its_size(
    client, email_queue
):
    # Unsigned, so the door answers for the missing signature: it read the whole body.
    body = b'{"event-data": "' + b"x" * (MAX_WEBHOOK_BYTES - 18) + b'"}'
    assert len(body) == MAX_WEBHOOK_BYTES

    response = client.post(
        "/inbound/email/mailgun/tracking/", body, content_type="application/json", headers=basic()
    )

    assert response.status_code == 401
    assert nothing_stored()


def test_an_email_webhook_one_byte_over_the_limit_is_a_413_and_stores_nothing(client, email_queue):
    body = b"x" * (MAX_WEBHOOK_BYTES + 1)

    response = client.post(
        "/inbound/email/postmark/inbound/", body, content_type="application/json", headers=basic()
    )

    assert response.status_code == 413
    assert response.json() == {
        "error": f"The payload is larger than {MAX_WEBHOOK_BYTES:,} bytes (a mail of up to 25 MB,"
        " encoded)."
    }
    assert nothing_stored()
