"""X account activity webhooks: CRC, signatures, direct messages and mentions → timeline."""

import base64
import hashlib
import hmac

import pytest
from django.test import Client

from cases.models import Case
from cases.routing import mention_opens_case
from customers.models import Customer, Identity, Interaction
from tests.cases.factories import QueueFactory
from tests.concurrency import at_once
from tests.workbench.fake_provider import body_of, corpus, x_signature

SECRET = "x-consumer-secret-for-tests"
URL = "/inbound/x/"


@pytest.fixture(autouse=True)
def _x_settings(settings):
    settings.X_CONSUMER_SECRET = SECRET


@pytest.fixture
def queue(db):
    return QueueFactory(name="Social")


def post(client, payload, signature="good"):
    body = body_of(payload)
    headers = {}
    if signature == "good":
        headers["x-twitter-webhooks-signature"] = x_signature(SECRET, body)
    elif signature:
        headers["x-twitter-webhooks-signature"] = signature
    return client.post(URL, body, content_type="application/json", headers=headers)


def counts():
    return Interaction.objects.count(), Customer.objects.count(), Case.objects.count()


def inbound():
    return Interaction.objects.filter(channel="x", direction="in")


def test_crc_challenge_is_answered_with_the_hmac_of_the_token(client):
    response = client.get(URL, {"crc_token": "NjM0NjQ2MDk4OTg2"})
    assert response.status_code == 200
    expected = hmac.new(SECRET.encode(), b"NjM0NjQ2MDk4OTg2", hashlib.sha256).digest()
    assert response.json() == {"response_token": "sha256=" + base64.b64encode(expected).decode()}


def test_crc_without_a_token_is_a_400(client):
    assert client.get(URL).status_code == 400


def test_an_unsigned_post_is_401_and_stores_nothing(client, queue):
    assert post(client, corpus("x/dm.json"), signature=None).status_code == 401
    assert counts() == (0, 0, 0)


def test_a_badly_signed_post_is_403_and_stores_nothing(client, queue):
    wrong = x_signature("not-our-secret", body_of(corpus("x/dm.json")))
    assert post(client, corpus("x/dm.json"), signature=wrong).status_code == 403
    # Meta's hex spelling of the right HMAC is still the wrong header for X.
    hex_digest = (
        "sha256="
        + hmac.new(SECRET.encode(), body_of(corpus("x/dm.json")), hashlib.sha256).hexdigest()
    )
    assert post(client, corpus("x/dm.json"), signature=hex_digest).status_code == 403
    assert counts() == (0, 0, 0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00\xff", "the body is not JSON"),
        ({"direct_message_events": []}, '"for_user_id" is missing'),
        (corpus("x/dm_unknown_sender.json"), 'has no entry in "users"'),
        ({"for_user_id": "4337869213", "tweet_create_events": {}}, "is not a list"),
    ],
)
def test_a_malformed_payload_is_a_400_with_the_reason_and_stores_nothing(
    client, queue, payload, reason
):
    response = post(client, payload)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert counts() == (0, 0, 0)


def test_a_direct_message_lands_on_the_timeline_and_opens_a_case(client, queue):
    response = post(client, corpus("x/dm.json"))
    assert response.status_code == 200 and response.json()["stored"] == 1
    entry = inbound().get()
    assert entry.external_id == "1862211834512345678"
    assert entry.body_text == "Hi! I was charged twice for order 8812, can you help?"
    assert entry.data["x_user_id"] == "3001969357" and entry.data["public"] is False
    identity = Identity.objects.get(channel="x")
    assert identity.handle == "@furiouscamper"
    assert identity.customer.display_name == "Jordan Brinks"
    case = Case.objects.get()
    assert case.channel == "x" and case.thread_key == "x:dm:3001969357-4337869213"
    assert entry.subject == case


def test_our_own_direct_message_coming_back_is_not_stored(client, queue):
    response = post(client, corpus("x/dm_from_us.json"))
    assert response.status_code == 200 and response.json()["stored"] == 0
    assert counts() == (0, 0, 0)


def test_a_mention_asking_a_question_is_public_and_opens_a_case(client, queue):
    assert post(client, corpus("x/mention_question.json")).json()["stored"] == 1
    entry = inbound().get()
    assert entry.data["public"] is True
    assert entry.data["url"] == "https://x.com/PriyaRamanDev/status/1862213000000000001"
    assert entry.data["reach"] == 15230
    assert entry.body_text == "@acmesupport when will the spring catalogue ship to Canada?"
    assert Identity.objects.get(channel="x").handle == "@priyaramandev"
    case = Case.objects.get()
    assert case.channel == "x" and entry.subject == case


def test_a_mention_that_praises_us_is_a_timeline_entry_without_a_case(client, queue):
    assert post(client, corpus("x/mention_praise.json")).json()["stored"] == 1
    entry = inbound().get()
    assert entry.data["public"] is True and entry.data["reach"] == 310
    assert entry.subject is None
    assert Case.objects.count() == 0


def test_our_own_tweet_is_ignored(client, queue):
    response = post(client, corpus("x/own_tweet.json"))
    assert response.status_code == 200 and response.json()["ignored"] == 1
    assert counts() == (0, 0, 0)


@pytest.mark.parametrize(
    ("text", "opens"),
    [
        ("@acmesupport where is my parcel?", True),
        ("@acmesupport my parcel never arrived", True),
        ("@acmesupport worst delivery experience ever", True),
        ("@acmesupport the app still won\u2019t load", True),
        ("@acmesupport love the new kettle, great service!", False),
        ("Thanks @acmesupport, all sorted", False),
    ],
)
def test_the_mention_rule(text, opens):
    assert mention_opens_case(text) is opens


@pytest.mark.django_db(transaction=True)
def test_a_direct_message_delivered_twice_at_once_stores_one_interaction():
    QueueFactory(name="Social")
    body = body_of(corpus("x/dm.json"))
    headers = {"x-twitter-webhooks-signature": x_signature(SECRET, body)}

    def deliver() -> int:
        return (
            Client().post(URL, body, content_type="application/json", headers=headers).status_code
        )

    assert at_once(deliver, times=3) == [200, 200, 200]
    assert inbound().count() == 1
    assert Customer.objects.count() == 1 and Case.objects.count() == 1
