"""Replies on social channels through the providers' HTTP APIs (a local server), and retries."""

import smtplib

import pytest
from anymail.exceptions import AnymailRequestsAPIError
from celery.exceptions import Retry

from cases.fragments import render_reply_delivery
from cases.models import Case
from cases.replies import send_reply
from tests.cases.factories import QueueFactory
from tests.workbench.fake_provider import closed_port, corpus, start_fake_provider
from workbench.connectors import meta, x
from workbench.connectors.delivery import is_provider_down, retry_delay_seconds
from workbench.connectors.webhooks import store_batch
from workbench.tasks import deliver_interaction_task


@pytest.fixture
def provider(settings):
    fake = start_fake_provider()
    settings.META_GRAPH_BASE_URL = f"{fake.url}/v21.0"
    settings.X_API_BASE_URL = fake.url
    settings.META_PAGE_ACCESS_TOKEN = "page-token"
    settings.WHATSAPP_ACCESS_TOKEN = "whatsapp-token"
    settings.WHATSAPP_PHONE_NUMBER_ID = "106540352242922"
    settings.X_BEARER_TOKEN = "x-user-token"
    settings.SOCIAL_HTTP_TIMEOUT_S = 5
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def queue(agent):
    queue = QueueFactory(name="Social")
    queue.members.add(agent)
    return queue


def case_from(connector, name):
    """The case a corpus webhook opens, stored through the connector's parser and pipeline."""
    store_batch(connector.parse_webhook(corpus(name)))
    return Case.objects.get()


def reply(case, agent, channel, body="Sorry about that! A replacement ships today."):
    return send_reply(case=case, author=agent, channel=channel, body=body)


def shown(agent, interaction):
    return render_reply_delivery(
        agent, interaction_id=interaction.pk, case_id=interaction.data["case_id"]
    )


def test_a_messenger_reply_is_posted_to_the_graph_api_and_then_delivered(provider, queue, agent):
    case = case_from(meta, "meta/messenger_text.json")
    provider.answer(
        (200, {"recipient_id": "6423815907712345", "message_id": "m_OUTBOUND_messenger_1"})
    )
    sent = reply(case, agent, "facebook")
    assert deliver_interaction_task(sent.pk) == "sent"
    [request] = provider.requests
    assert request.path == "/v21.0/me/messages"
    assert request.headers["authorization"] == "Bearer page-token"
    assert request.json == {
        "recipient": {"id": "6423815907712345"},
        "messaging_type": "RESPONSE",
        "message": {"text": "Sorry about that! A replacement ships today."},
    }
    sent.refresh_from_db()
    assert (sent.status, sent.external_id) == ("sent", "m_OUTBOUND_messenger_1")
    # Messenger's delivery receipt names that id: the reply is now delivered.
    store_batch(meta.parse_webhook(corpus("meta/messenger_delivery.json")))
    sent.refresh_from_db()
    assert sent.status == "delivered"
    assert ">delivered<" in shown(agent, sent)


def test_an_instagram_reply_goes_to_the_instagram_scoped_id(provider, queue, agent):
    case = case_from(meta, "meta/instagram_text.json")
    provider.answer((200, {"recipient_id": "1234567890123456", "message_id": "aWdfZAG1fOUT"}))
    sent = reply(case, agent, "instagram", body="Yes, back in stock in M and L.")
    assert deliver_interaction_task(sent.pk) == "sent"
    [request] = provider.requests
    assert request.path == "/v21.0/me/messages"
    assert request.json["recipient"] == {"id": "1234567890123456"}
    assert request.json["message"] == {"text": "Yes, back in stock in M and L."}


def test_a_whatsapp_reply_is_posted_from_our_business_number(provider, queue, agent):
    case = case_from(meta, "meta/whatsapp_text.json")
    wamid = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    provider.answer(
        (
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],
                "messages": [{"id": wamid}],
            },
        )
    )
    sent = reply(case, agent, "whatsapp", body="It also comes in green and navy.")
    assert deliver_interaction_task(sent.pk) == "sent"
    [request] = provider.requests
    assert request.path == "/v21.0/106540352242922/messages"
    assert request.headers["authorization"] == "Bearer whatsapp-token"
    assert request.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"preview_url": False, "body": "It also comes in green and navy."},
    }
    sent.refresh_from_db()
    assert sent.external_id == wamid
    store_batch(meta.parse_webhook(_whatsapp_status(wamid, "read")))
    sent.refresh_from_db()
    assert sent.status == "read"


def _whatsapp_status(wamid, status):
    payload = corpus("meta/whatsapp_status_delivered.json")
    payload["entry"][0]["changes"][0]["value"]["statuses"][0].update(id=wamid, status=status)
    return payload


def test_an_x_direct_message_is_answered_by_direct_message(provider, queue, agent):
    case = case_from(x, "x/dm.json")
    provider.answer(
        (
            201,
            {
                "data": {
                    "dm_conversation_id": "3001969357-4337869213",
                    "dm_event_id": "1862299999000000001",
                }
            },
        )
    )
    sent = reply(case, agent, "x", body="We have refunded the second charge.")
    assert deliver_interaction_task(sent.pk) == "sent"
    [request] = provider.requests
    assert request.path == "/2/dm_conversations/with/3001969357/messages"
    assert request.headers["authorization"] == "Bearer x-user-token"
    assert request.json == {"text": "We have refunded the second charge."}
    sent.refresh_from_db()
    assert sent.external_id == "1862299999000000001"


def test_a_public_mention_is_answered_by_a_public_reply(provider, queue, agent):
    case = case_from(x, "x/mention_question.json")
    provider.answer((201, {"data": {"id": "1862213000000000099", "text": "…"}}))
    sent = reply(case, agent, "x", body="It ships to Canada from 1 March!")
    assert deliver_interaction_task(sent.pk) == "sent"
    [request] = provider.requests
    assert request.path == "/2/tweets"
    assert request.json == {
        "text": "@PriyaRamanDev It ships to Canada from 1 March!",
        "reply": {"in_reply_to_tweet_id": "1862213000000000001"},
    }


def test_a_public_reply_longer_than_a_tweet_is_refused_before_sending(provider, queue, agent):
    case = case_from(x, "x/mention_question.json")
    sent = reply(case, agent, "x", body="Thanks for asking. " * 20)
    assert deliver_interaction_task(sent.pk) == "failed"
    sent.refresh_from_db()
    assert sent.data["delivery_error"].startswith("a public reply on X holds 280 characters")
    assert provider.requests == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_provider_that_is_down_is_retried_then_the_reply_is_sent(provider, queue, agent, status):
    case = case_from(meta, "meta/messenger_text.json")
    provider.answer(
        (status, {"error": {"message": "An unexpected error has occurred.", "code": 2}}),
        (200, {"recipient_id": "6423815907712345", "message_id": "m_after_retry"}),
    )
    sent = reply(case, agent, "facebook")
    with pytest.raises(Retry):
        deliver_interaction_task(sent.pk)
    sent.refresh_from_db()
    assert sent.status == "queued"
    assert sent.data["delivery_error"] == (
        f"Messenger answered {status}: An unexpected error has occurred. (code 2)"
    )
    assert sent.data["delivery_attempts"] == 1
    assert "not delivered yet — retrying" in shown(agent, sent)

    assert deliver_interaction_task(sent.pk) == "sent"  # the retry
    sent.refresh_from_db()
    assert (sent.status, sent.external_id) == ("sent", "m_after_retry")
    assert "delivery_error" not in sent.data and sent.data["delivery_attempts"] == 2
    assert len(provider.requests) == 2


def test_a_provider_that_refuses_marks_the_reply_failed_with_its_error(provider, queue, agent):
    case = case_from(meta, "meta/messenger_text.json")
    provider.answer(
        (
            400,
            {
                "error": {
                    "message": "(#10) This message is sent outside of allowed window.",
                    "type": "OAuthException",
                    "code": 10,
                    "error_subcode": 2018278,
                    "fbtrace_id": "AbCdEf",
                }
            },
        )
    )
    sent = reply(case, agent, "facebook")
    assert deliver_interaction_task(sent.pk) == "failed"
    sent.refresh_from_db()
    assert sent.data["delivery_error"] == (
        "Messenger refused the message (400): (#10) This message is sent outside of allowed "
        "window. (code 10)"
    )
    assert "not delivered</strong>: Messenger refused" in shown(agent, sent)
    assert deliver_interaction_task(sent.pk) == "failed"  # a refusal is never retried
    assert len(provider.requests) == 1


def test_an_unreachable_provider_keeps_the_reply_queued_then_gives_up(settings, queue, agent):
    settings.META_GRAPH_BASE_URL = f"http://127.0.0.1:{closed_port()}/v21.0"
    settings.META_PAGE_ACCESS_TOKEN = "page-token"
    store_batch(meta.parse_webhook(corpus("meta/messenger_text.json")))
    sent = reply(Case.objects.get(), agent, "facebook")
    for attempt in range(1, 5):
        with pytest.raises(Retry):
            deliver_interaction_task(sent.pk)
        sent.refresh_from_db()
        assert (sent.status, sent.data["delivery_attempts"]) == ("queued", attempt)
        assert sent.data["delivery_error"].startswith("Messenger is unreachable")
        assert "not delivered yet — retrying" in shown(agent, sent)
    assert deliver_interaction_task(sent.pk) == "failed"
    sent.refresh_from_db()
    assert sent.data["delivery_error"].startswith(
        "gave up after 5 attempts: Messenger is unreachable"
    )


def test_no_access_token_configured_fails_with_a_clear_reason(provider, queue, agent, settings):
    settings.META_PAGE_ACCESS_TOKEN = ""
    case = case_from(meta, "meta/messenger_text.json")
    sent = reply(case, agent, "facebook")
    assert deliver_interaction_task(sent.pk) == "failed"
    sent.refresh_from_db()
    assert (
        sent.data["delivery_error"]
        == "Messenger is not configured: no access token in the settings"
    )
    assert provider.requests == []


def test_retries_wait_twice_as_long_each_time():
    assert [retry_delay_seconds(n) for n in range(1, 6)] == [30, 60, 120, 240, 480]
    assert retry_delay_seconds(20) == 3600


@pytest.mark.parametrize(
    ("error", "down"),
    [
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True),
        (smtplib.SMTPConnectError(421, b"Service not available"), True),
        (smtplib.SMTPDataError(451, b"Try again later"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (smtplib.SMTPDataError(554, b"Message rejected as spam"), False),
        (smtplib.SMTPRecipientsRefused({"x@example.com": (550, b"No such user")}), False),
        (smtplib.SMTPAuthenticationError(535, b"Bad credentials"), False),
        (ValueError("interaction names no recipient"), False),
        (AnymailRequestsAPIError("Postmark API response 503", status_code=503), True),
        (AnymailRequestsAPIError("Postmark API response 422", status_code=422), False),
    ],
)
def test_mail_errors_are_sorted_into_down_and_refused(error, down):
    assert is_provider_down(error) is down
