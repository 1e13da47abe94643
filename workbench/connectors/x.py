"""The X (Twitter) connector: account activity webhooks in, X API v2 out.

Inbound payloads, as the Account Activity API documents them: {"for_user_id": <our account>,
"direct_message_events": [{"type": "message_create", "id", "created_timestamp" (ms),
"message_create": {"sender_id", "target": {"recipient_id"}, "message_data": {"text"}}}],
"users": {<id>: {"screen_name", "name", "followers_count"}}} for direct messages, and
{"for_user_id", "tweet_create_events": [<v1.1 Tweet: id_str, text / extended_tweet.full_text,
user {id_str, screen_name, name, followers_count}, entities.user_mentions,
in_reply_to_status_id_str, in_reply_to_user_id_str>]} for tweets that mention us.

Our own DMs and tweets come back too and are not stored as inbound. A public mention is a
timeline entry (data.public, its url, the author's follower count as reach); whether it opens a
case is cases.routing's rule, not ours.

Outbound: a reply to a DM conversation is a DM (POST /2/dm_conversations/with/{id}/messages);
a reply on a case that came from a public mention is a public reply tweet (POST /2/tweets).
"""

from __future__ import annotations

from django.conf import settings

from cases import routing
from cases.replies import SENT
from customers.models import Channel, Direction, Interaction
from workbench.connectors.inbound import InboundMessage
from workbench.connectors.provider_api import DeliveryError, post_json
from workbench.connectors.webhooks import (
    Batch,
    MalformedPayload,
    Receipt,
    digest,
    from_epoch,
    handle_of,
)

TWEET_MAX_CHARS = 280


def crc_response_token(crc_token: str) -> str:
    """The answer to X's challenge-response check: sha256=base64(HMAC(consumer secret, token))."""
    return "sha256=" + digest(settings.X_CONSUMER_SECRET, crc_token.encode(), "base64")


def parse_webhook(payload: dict) -> Batch:
    """The messages of one account activity request; MalformedPayload names the field.

    Other event kinds (favorites, follows, typing, read marks) are counted as ignored.
    """
    account = payload.get("for_user_id")
    if not isinstance(account, str | int) or not str(account).strip():
        raise MalformedPayload('"for_user_id" is missing')
    account = str(account).strip()
    batch = Batch()
    known = {"for_user_id", "direct_message_events", "tweet_create_events", "users", "apps"}
    batch.ignored += sum(1 for key in payload if key not in known)
    users = payload.get("users") if isinstance(payload.get("users"), dict) else {}
    events = payload.get("direct_message_events", [])
    if not isinstance(events, list):
        raise MalformedPayload('"direct_message_events" is not a list')
    for i, event in enumerate(events):
        _parse_direct_message(event, f"direct_message_events[{i}]", account, users, batch)
    tweets = payload.get("tweet_create_events", [])
    if not isinstance(tweets, list):
        raise MalformedPayload('"tweet_create_events" is not a list')
    for i, tweet in enumerate(tweets):
        _parse_tweet(tweet, f"tweet_create_events[{i}]", account, batch)
    return batch


def _parse_direct_message(event, where: str, account: str, users: dict, batch: Batch) -> None:
    if not isinstance(event, dict):
        raise MalformedPayload(f"{where} is not an object")
    if event.get("type") != "message_create":
        batch.ignored += 1
        return
    event_id = str(event.get("id") or "").strip()
    create = event.get("message_create")
    if not event_id or not isinstance(create, dict):
        raise MalformedPayload(f"{where} needs an id and a message_create")
    sender = str(create.get("sender_id") or "").strip()
    target = create.get("target") if isinstance(create.get("target"), dict) else {}
    recipient = str(target.get("recipient_id") or "").strip()
    if not sender or not recipient:
        raise MalformedPayload(f"{where}.message_create needs sender_id and target.recipient_id")
    if sender == account:
        # A DM we sent (from Workbench or elsewhere) coming back: it left.
        batch.receipts.append(Receipt(channel=Channel.X, status=SENT, external_id=event_id))
        return
    message_data = create.get("message_data")
    text = message_data.get("text") if isinstance(message_data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise MalformedPayload(f"{where}.message_create.message_data.text is missing")
    user = users.get(sender)
    if not isinstance(user, dict) or not user.get("screen_name"):
        raise MalformedPayload(f'{where}: the sender {sender} has no entry in "users"')
    handle = handle_of(Channel.X, str(user["screen_name"]), f'users["{sender}"].screen_name')
    batch.messages.append(
        InboundMessage(
            channel=Channel.X,
            handle=handle,
            external_id=event_id,
            body_text=text,
            display_name=str(user.get("name") or ""),
            thread_key="x:dm:" + "-".join(sorted((sender, recipient))),
            occurred_at=from_epoch(
                event.get("created_timestamp"), f"{where}.created_timestamp", millis=True
            ),
            data={"from": handle, "x_user_id": sender, "public": False},
        )
    )


def _parse_tweet(tweet, where: str, account: str, batch: Batch) -> None:
    if not isinstance(tweet, dict):
        raise MalformedPayload(f"{where} is not an object")
    tweet_id = str(tweet.get("id_str") or tweet.get("id") or "").strip()
    user = tweet.get("user")
    if not tweet_id or not isinstance(user, dict):
        raise MalformedPayload(f"{where} needs id_str and user")
    author = str(user.get("id_str") or user.get("id") or "").strip()
    if not author or not user.get("screen_name"):
        raise MalformedPayload(f"{where}.user needs id_str and screen_name")
    if author == account or "retweeted_status" in tweet:
        batch.ignored += 1  # our own tweet, or a retweet: nobody is talking to us
        return
    if not _addresses(tweet, account):
        batch.ignored += 1
        return
    extended = tweet.get("extended_tweet") if isinstance(tweet.get("extended_tweet"), dict) else {}
    text = extended.get("full_text") or tweet.get("full_text") or tweet.get("text")
    if not isinstance(text, str) or not text.strip():
        raise MalformedPayload(f"{where}.text is missing")
    screen_name = str(user["screen_name"])
    handle = handle_of(Channel.X, screen_name, f"{where}.user.screen_name")
    data = {
        "from": handle,
        "x_user_id": author,
        "public": True,
        "screen_name": screen_name,
        "tweet_id": tweet_id,
        "url": f"https://x.com/{screen_name}/status/{tweet_id}",
    }
    if isinstance(user.get("followers_count"), int):
        data["reach"] = user["followers_count"]
    created = tweet.get("timestamp_ms")
    thread = str(tweet.get("in_reply_to_status_id_str") or tweet_id)
    batch.messages.append(
        InboundMessage(
            channel=Channel.X,
            handle=handle,
            external_id=tweet_id,
            body_text=text,
            display_name=str(user.get("name") or ""),
            thread_key=f"x:tweet:{thread}",
            occurred_at=from_epoch(created, f"{where}.timestamp_ms", millis=True)
            if created
            else None,
            opens_case=routing.mention_opens_case(text),
            data=data,
        )
    )


def _addresses(tweet: dict, account: str) -> bool:
    """A mention of our account, or a reply to one of our tweets."""
    if str(tweet.get("in_reply_to_user_id_str") or "") == account:
        return True
    entities = tweet.get("entities") if isinstance(tweet.get("entities"), dict) else {}
    mentions = entities.get("user_mentions")
    if not isinstance(mentions, list):
        return False
    return any(
        isinstance(m, dict) and str(m.get("id_str") or m.get("id")) == account for m in mentions
    )


# --- Outbound ------------------------------------------------------------------------------------


def send_x(interaction: Interaction) -> dict:
    """Answer where the customer wrote: a DM to a DM, a public reply tweet to a public mention.

    The conversation is the newest inbound X message on the same case (else of the customer).
    """
    origin = _conversation(interaction)
    if origin is None:
        raise DeliveryError("no X conversation to answer: the customer has not written to us on X")
    data = origin.data or {}
    base = settings.X_API_BASE_URL.rstrip("/")
    if data.get("public"):
        screen_name = str(data.get("screen_name") or data.get("from") or "").lstrip("@")
        text = interaction.body_text
        if not text.lower().startswith(f"@{screen_name.lower()}"):
            text = f"@{screen_name} {text}"
        if len(text) > TWEET_MAX_CHARS:
            raise DeliveryError(
                f"a public reply on X holds {TWEET_MAX_CHARS} characters; this one has {len(text)}"
            )
        answer = post_json(
            provider="X",
            url=f"{base}/2/tweets",
            token=settings.X_BEARER_TOKEN,
            payload={"text": text, "reply": {"in_reply_to_tweet_id": str(data["tweet_id"])}},
        )
        tweet = answer.get("data") if isinstance(answer.get("data"), dict) else {}
        facts = {"public": True, "in_reply_to_tweet_id": str(data["tweet_id"])}
        return {**facts, "external_id": str(tweet["id"])} if tweet.get("id") else facts
    answer = post_json(
        provider="X",
        url=f"{base}/2/dm_conversations/with/{data['x_user_id']}/messages",
        token=settings.X_BEARER_TOKEN,
        payload={"text": interaction.body_text},
    )
    event = answer.get("data") if isinstance(answer.get("data"), dict) else {}
    return {"external_id": str(event["dm_event_id"])} if event.get("dm_event_id") else {}


def _conversation(interaction: Interaction) -> Interaction | None:
    inbound = Interaction.objects.filter(
        customer_id=interaction.customer_id,
        channel=Channel.X,
        direction=Direction.INBOUND,
        data__has_key="x_user_id",
    ).order_by("-occurred_at", "-id")
    case_id = (interaction.data or {}).get("case_id")
    on_case = inbound.filter(data__case_id=case_id).first() if case_id else None
    return on_case or inbound.first()
