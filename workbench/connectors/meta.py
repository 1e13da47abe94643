"""The Meta connector: Messenger, Instagram and WhatsApp Cloud API webhooks in, Graph API out.

Inbound payloads, as Meta documents them:

- Messenger / Instagram: {"object": "page" | "instagram", "entry": [{"id", "time",
  "messaging": [event, …]}]} where an event has sender.id, recipient.id, timestamp (ms) and one
  of "message" ({mid, text, attachments, is_echo}), "delivery" ({mids?, watermark}) or "read"
  ({watermark} on Messenger, {mid} on Instagram). An echo is our own outbound message coming
  back: never stored as inbound, it confirms "sent".
- WhatsApp: {"object": "whatsapp_business_account", "entry": [{"id", "changes": [{"field":
  "messages", "value": {"metadata": {"phone_number_id"}, "contacts": [{"profile": {"name"},
  "wa_id"}], "messages": [{"from", "id" (wamid), "timestamp" (s), "type", "text": {"body"}}],
  "statuses": [{"id", "status", "recipient_id", "errors": [{"code", "title", "message",
  "error_data": {"details"}}]}]}}]}]}.

Outbound: POST {META_GRAPH_BASE_URL}/me/messages (Messenger, Instagram; page token) and
POST {META_GRAPH_BASE_URL}/{WHATSAPP_PHONE_NUMBER_ID}/messages (WhatsApp).
"""

from __future__ import annotations

from django.conf import settings

from cases.replies import FAILED, SENT
from customers.models import Channel, Interaction
from workbench.connectors.inbound import InboundMessage
from workbench.connectors.provider_api import DeliveryError, post_json
from workbench.connectors.receipts import DELIVERED, READ
from workbench.connectors.webhooks import Batch, MalformedPayload, Receipt, from_epoch, handle_of

MESSAGING_OBJECTS = {"page": Channel.FACEBOOK, "instagram": Channel.INSTAGRAM}
WHATSAPP_OBJECT = "whatsapp_business_account"
WHATSAPP_STATUSES = {"sent": SENT, "delivered": DELIVERED, "read": READ, "failed": FAILED}
WHATSAPP_MEDIA = ("image", "video", "audio", "document", "sticker")


def parse_webhook(payload: dict) -> Batch:
    """The messages and receipts of one Meta webhook request; MalformedPayload names the field.

    Events we do not act on (postbacks, reactions, referrals, WhatsApp reactions and other
    fields) are counted as ignored, not refused: Meta sends what the app subscribed to.
    """
    kind = payload.get("object")
    entries = payload.get("entry")
    if kind not in MESSAGING_OBJECTS and kind != WHATSAPP_OBJECT:
        raise MalformedPayload(f'"object" is {kind!r}, not page, instagram or {WHATSAPP_OBJECT}')
    if not isinstance(entries, list):
        raise MalformedPayload('"entry" is missing or not a list')
    batch = Batch()
    for i, entry in enumerate(entries):
        where = f"entry[{i}]"
        if not isinstance(entry, dict):
            raise MalformedPayload(f"{where} is not an object")
        if kind == WHATSAPP_OBJECT:
            _parse_whatsapp_entry(entry, where, batch)
        else:
            _parse_messaging_entry(MESSAGING_OBJECTS[kind], entry, where, batch)
    return batch


def _parse_messaging_entry(channel: str, entry: dict, where: str, batch: Batch) -> None:
    events = entry.get("messaging")
    if events is None:
        batch.ignored += 1  # e.g. "changes" (comments, mentions) or "standby": not subscribed here
        return
    if not isinstance(events, list):
        raise MalformedPayload(f"{where}.messaging is not a list")
    for j, event in enumerate(events):
        _parse_messaging_event(channel, event, f"{where}.messaging[{j}]", batch)


def _parse_messaging_event(channel: str, event, where: str, batch: Batch) -> None:
    if not isinstance(event, dict):
        raise MalformedPayload(f"{where} is not an object")
    sender = _id_of(event, "sender", where)
    recipient = _id_of(event, "recipient", where)
    message = event.get("message")
    if message is not None:
        if not isinstance(message, dict):
            raise MalformedPayload(f"{where}.message is not an object")
        mid = message.get("mid")
        if not isinstance(mid, str) or not mid.strip():
            raise MalformedPayload(f"{where}.message.mid is missing")
        if message.get("is_echo"):
            # Our own message, sent by the page (the sender is the page): it left.
            batch.receipts.append(Receipt(channel=channel, status=SENT, external_id=mid))
            return
        if message.get("is_deleted"):
            batch.ignored += 1
            return
        handle = handle_of(channel, sender, f"{where}.sender.id")
        occurred_at = from_epoch(event.get("timestamp"), f"{where}.timestamp", millis=True)
        body, attachments = _messaging_body(message, where)
        data = {"from": handle, "page_id": recipient}
        if attachments:
            data["social_attachments"] = attachments
        if isinstance(message.get("reply_to"), dict) and message["reply_to"].get("mid"):
            data["in_reply_to"] = str(message["reply_to"]["mid"])
        batch.messages.append(
            InboundMessage(
                channel=channel,
                handle=handle,
                external_id=mid.strip(),
                body_text=body,
                thread_key=f"{channel}:{recipient}:{sender}",
                occurred_at=occurred_at,
                data=data,
            )
        )
        return
    if isinstance(event.get("delivery"), dict):
        delivery = event["delivery"]
        mids = delivery.get("mids") or []
        if not isinstance(mids, list):
            raise MalformedPayload(f"{where}.delivery.mids is not a list")
        for mid in mids:
            batch.receipts.append(Receipt(channel=channel, status=DELIVERED, external_id=str(mid)))
        if not mids:
            _watermark(channel, sender, delivery, DELIVERED, f"{where}.delivery", batch)
        return
    if isinstance(event.get("read"), dict):
        read = event["read"]
        if read.get("mid"):  # Instagram names the message
            batch.receipts.append(Receipt(channel=channel, status=READ, external_id=read["mid"]))
        else:  # Messenger: everything up to the watermark
            _watermark(channel, sender, read, READ, f"{where}.read", batch)
        return
    batch.ignored += 1


def _watermark(channel: str, sender: str, body: dict, status: str, where: str, batch: Batch):
    up_to = from_epoch(body.get("watermark"), f"{where}.watermark", millis=True)
    recipient = handle_of(channel, sender, f"{where} sender.id")
    batch.receipts.append(Receipt(channel=channel, status=status, recipient=recipient, up_to=up_to))


def _messaging_body(message: dict, where: str) -> tuple[str, list[dict]]:
    text = message.get("text") or ""
    if not isinstance(text, str):
        raise MalformedPayload(f"{where}.message.text is not a string")
    raw = message.get("attachments") or []
    if not isinstance(raw, list):
        raise MalformedPayload(f"{where}.message.attachments is not a list")
    attachments = []
    for item in raw:
        if isinstance(item, dict):
            payload = item.get("payload") if isinstance(item.get("payload"), dict) else {}
            attachments.append({"type": str(item.get("type", "file")), "url": payload.get("url")})
    if not text and not attachments:
        raise MalformedPayload(f"{where}.message has neither text nor attachments")
    described = " ".join(f"[{a['type']}]" for a in attachments)
    return (text or described), attachments


def _id_of(event: dict, key: str, where: str) -> str:
    party = event.get(key)
    value = party.get("id") if isinstance(party, dict) else None
    if value is None or not str(value).strip():
        raise MalformedPayload(f"{where}.{key}.id is missing")
    return str(value).strip()


def _parse_whatsapp_entry(entry: dict, where: str, batch: Batch) -> None:
    changes = entry.get("changes")
    if not isinstance(changes, list):
        raise MalformedPayload(f"{where}.changes is missing or not a list")
    for j, change in enumerate(changes):
        at = f"{where}.changes[{j}]"
        if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
            raise MalformedPayload(f"{at}.value is missing")
        if change.get("field", "messages") != "messages":
            batch.ignored += 1
            continue
        value = change["value"]
        metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
        number_id = str(metadata.get("phone_number_id") or "")
        names = {}
        for contact in value.get("contacts") or []:
            if isinstance(contact, dict):
                profile = contact.get("profile") if isinstance(contact.get("profile"), dict) else {}
                names[str(contact.get("wa_id", ""))] = str(profile.get("name") or "")
        messages = value.get("messages") or []
        statuses = value.get("statuses") or []
        if not isinstance(messages, list) or not isinstance(statuses, list):
            raise MalformedPayload(f"{at}.value.messages or .statuses is not a list")
        for k, message in enumerate(messages):
            _parse_whatsapp_message(message, f"{at}.value.messages[{k}]", number_id, names, batch)
        for k, status in enumerate(statuses):
            _parse_whatsapp_status(status, f"{at}.value.statuses[{k}]", batch)


def _parse_whatsapp_message(message, where: str, number_id: str, names: dict, batch: Batch):
    if not isinstance(message, dict):
        raise MalformedPayload(f"{where} is not an object")
    wamid, sender = message.get("id"), message.get("from")
    if not isinstance(wamid, str) or not wamid.strip():
        raise MalformedPayload(f"{where}.id is missing")
    if not isinstance(sender, str) or not sender.strip():
        raise MalformedPayload(f"{where}.from is missing")
    kind = str(message.get("type") or "")
    if kind == "reaction":
        batch.ignored += 1  # an emoji on a message is not something to answer
        return
    body = _whatsapp_body(message, kind, where)
    handle = handle_of(Channel.WHATSAPP, "+" + sender.lstrip("+"), f"{where}.from")
    data = {"from": handle, "phone_number_id": number_id, "whatsapp_type": kind}
    context = message.get("context")
    if isinstance(context, dict) and context.get("id"):
        data["in_reply_to"] = str(context["id"])
    batch.messages.append(
        InboundMessage(
            channel=Channel.WHATSAPP,
            handle=handle,
            external_id=wamid.strip(),
            body_text=body,
            display_name=names.get(sender, ""),
            thread_key=f"whatsapp:{number_id}:{sender}",
            occurred_at=from_epoch(message.get("timestamp"), f"{where}.timestamp", millis=False),
            data=data,
        )
    )


def _whatsapp_body(message: dict, kind: str, where: str) -> str:
    part = message.get(kind) if isinstance(message.get(kind), dict) else {}
    if kind == "text":
        body = part.get("body")
        if not isinstance(body, str) or not body.strip():
            raise MalformedPayload(f"{where}.text.body is missing")
        return body
    if kind in WHATSAPP_MEDIA:
        return str(part.get("caption") or f"[{kind}]")
    if kind == "location":
        place = " ".join(str(part.get(k) or "") for k in ("name", "address")).strip()
        return f"[location] {place} ({part.get('latitude')}, {part.get('longitude')})".strip()
    if kind == "button":
        return str(part.get("text") or "[button]")
    if kind == "interactive":
        choice = part.get("button_reply") or part.get("list_reply") or {}
        return str(choice.get("title") or "[interactive reply]")
    return f"[{kind or 'unsupported'} message]"


def _parse_whatsapp_status(status, where: str, batch: Batch) -> None:
    if not isinstance(status, dict) or not status.get("id") or not status.get("status"):
        raise MalformedPayload(f"{where} needs an id and a status")
    ours = WHATSAPP_STATUSES.get(str(status["status"]))
    if ours is None:
        batch.ignored += 1  # "deleted", "warning", …
        return
    error = ""
    errors = status.get("errors")
    if ours == FAILED and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        error_data = first.get("error_data") if isinstance(first.get("error_data"), dict) else {}
        details = error_data.get("details") or ""
        title = first.get("message") or first.get("title") or "failed"
        error = f"{title} (code {first.get('code')})" + (f": {details}" if details else "")
    at = from_epoch(status.get("timestamp"), f"{where}.timestamp", millis=False)
    batch.receipts.append(
        Receipt(channel=Channel.WHATSAPP, status=ours, external_id=status["id"], error=error, at=at)
    )


# --- Outbound ------------------------------------------------------------------------------------


def send_messenger(interaction: Interaction) -> dict:
    """A reply in the Messenger conversation (messaging_type RESPONSE: within 24 h of theirs)."""
    return _send_page_message("Messenger", _recipient(interaction), interaction.body_text)


def send_instagram(interaction: Interaction) -> dict:
    """A reply in the Instagram conversation; the handle is '@<instagram-scoped id>'."""
    return _send_page_message(
        "Instagram", _recipient(interaction).lstrip("@"), interaction.body_text
    )


def send_whatsapp(interaction: Interaction) -> dict:
    """A text message to the customer's WhatsApp number from our business number."""
    if not settings.WHATSAPP_PHONE_NUMBER_ID:
        raise DeliveryError("WhatsApp is not configured: no WHATSAPP_PHONE_NUMBER_ID")
    answer = post_json(
        provider="WhatsApp",
        url=f"{_base()}/{settings.WHATSAPP_PHONE_NUMBER_ID}/messages",
        token=settings.WHATSAPP_ACCESS_TOKEN,
        payload={
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": _recipient(interaction).lstrip("+"),
            "type": "text",
            "text": {"preview_url": False, "body": interaction.body_text},
        },
    )
    messages = answer.get("messages") if isinstance(answer.get("messages"), list) else []
    wamid = messages[0].get("id") if messages and isinstance(messages[0], dict) else None
    return {"external_id": str(wamid)} if wamid else {}


def _send_page_message(provider: str, recipient: str, text: str) -> dict:
    answer = post_json(
        provider=provider,
        url=f"{_base()}/me/messages",
        token=settings.META_PAGE_ACCESS_TOKEN,
        payload={
            "recipient": {"id": recipient},
            "messaging_type": "RESPONSE",
            "message": {"text": text},
        },
    )
    mid = answer.get("message_id")
    return {"external_id": str(mid)} if mid else {}


def _recipient(interaction: Interaction) -> str:
    to = str((interaction.data or {}).get("to", "")).strip()
    if not to:
        raise DeliveryError(f"interaction {interaction.pk} names no recipient")
    return to


def _base() -> str:
    return settings.META_GRAPH_BASE_URL.rstrip("/")
