"""The one inbound pipeline every connector ends in: identify, append, attach to a case, publish.

Connectors (email, chat, social) verify their provider's signature and parse its format into an
`InboundMessage`; `receive_inbound` does the rest, the same way for every channel:

1. resolve the customer from the sender's handle (customers.identity; hints link identities)
   and lock the customer row in the same read, so two deliveries of one message, or two
   messages of one customer, are decided one after the other,
3. return the stored entry if the provider's message id was seen before (a retried webhook
   stores nothing twice),
4. attach to a case (cases.routing: the open case on the same thread, else a recent one on the
   channel, else a new case in the channel's default queue), unless the message must not open
   one (auto-replies, bounces, mentions the routing rule leaves alone),
5. append the message to the timeline with the case as its subject,
6. publish live updates after commit (record_interaction and the case services do).

No business rule lives in a connector; no provider format lives here. A known sender's message
costs seven statements (the look-up before the transaction, BEGIN, resolve-and-lock, the repeat
check under the lock, the case to join, the insert, the case's activity time) and COMMIT; the
reads on this path are raw SQL, as compiling the ORM's queries cost more CPU than PostgreSQL
spent answering them (`bench ingest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from cases import routing
from cases.models import Case
from customers.identity import resolve_customer
from customers.models import IDENTITY_CHANNELS, Direction, Interaction, Kind
from customers.timeline import MAX_BODY_CHARS, record_interaction
from workbench import sql

MAX_HANDLE_CHARS = 255


@dataclass(frozen=True)
class InboundMessage:
    """One message from outside, in our words, whatever the provider's format was.

    `external_id` is the provider's message id (deduplication key, unique per channel);
    `thread_key` groups a conversation (an email's root Message-ID, a chat visitor's token,
    a social conversation id); `data` keeps channel facts on the interaction (headers,
    attachments, provider ids) and must be JSON-serialisable.
    """

    channel: str
    handle: str
    external_id: str
    body_text: str = ""
    body_html: str = ""
    subject: str = ""
    display_name: str = ""
    email_hint: str = ""
    phone_hint: str = ""
    thread_key: str = ""
    occurred_at: datetime | None = None
    kind: str = Kind.MESSAGE
    opens_case: bool = True
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class InboundResult:
    interaction: Interaction
    created: bool
    case: Case | None


def validate_inbound(message: InboundMessage) -> None:
    """Refuse (ValidationError, keyed by field) a message the pipeline cannot store whole."""
    errors = {}
    if message.channel not in IDENTITY_CHANNELS:
        errors["channel"] = f"{message.channel!r} is not a channel people write in on"
    if not (message.handle or "").strip():
        errors["handle"] = "the sender has no address or handle"
    elif len(message.handle) > MAX_HANDLE_CHARS:
        errors["handle"] = f"the sender's handle is longer than {MAX_HANDLE_CHARS} characters"
    if not (message.external_id or "").strip():
        errors["external_id"] = "the message has no id from its provider"
    elif len(message.external_id) > 255:
        errors["external_id"] = "the provider's message id is longer than 255 characters"
    if not (message.body_text or message.body_html or message.data.get("attachments")):
        errors["body"] = "the message is empty"
    if len(message.body_text) > MAX_BODY_CHARS or len(message.body_html) > MAX_BODY_CHARS:
        errors["body"] = f"the message is longer than {MAX_BODY_CHARS:,} characters"
    if message.kind not in Kind.values:
        errors["kind"] = f"unknown kind {message.kind!r}"
    if errors:
        raise ValidationError(errors)


def receive_inbound(message: InboundMessage) -> InboundResult:
    """Store one inbound message on its customer's timeline and case; safe to call twice.

    Raises ValidationError (nothing stored) for a message `validate_inbound` refuses, or that
    the identity service refuses (a malformed handle). A repeat of a stored (channel,
    external_id) returns the stored entry with `created=False` and changes nothing.
    """
    validate_inbound(message)
    external_id = message.external_id.strip()
    # A provider's retry of a stored message (most repeats) is answered from one indexed read,
    # without resolving or locking anything; a repeat racing its original is caught below.
    seen = _already_stored(message.channel, external_id)
    if seen is not None:
        return seen
    with transaction.atomic(durable=True):
        resolution = resolve_customer(
            channel=message.channel,
            handle=message.handle,
            display_name=message.display_name,
            email=message.email_hint,
            phone=message.phone_hint,
            lock=True,
        )
        customer = resolution.customer
        seen = _already_stored(message.channel, external_id)
        if seen is not None:
            return seen
        case = None
        routed_at = timezone.now()
        if message.opens_case:
            case = routing.route_inbound(
                customer=customer,
                channel=message.channel,
                thread_key=message.thread_key[:255],
                subject=message.subject or _first_line(message.body_text),
                body_text=message.body_text,
                customer_locked=True,
            )
        data = dict(message.data)
        if case is not None:
            data["case_id"] = case.pk
        if message.thread_key:
            data.setdefault("thread_key", message.thread_key[:255])
        interaction, created = record_interaction(
            customer=customer,
            channel=message.channel,
            kind=message.kind,
            direction=Direction.INBOUND,
            title=message.subject,
            body_text=message.body_text,
            body_html=message.body_html,
            actor_label=message.display_name or customer.display_name,
            occurred_at=message.occurred_at or timezone.now(),
            external_id=external_id,
            subject=case,
            data=data,
        )
        # A case routing opened just now is fresh and announced; a joined one is told.
        if case is not None and created and case.created_at < routed_at:
            routing.note_customer_message(case=case)
    return InboundResult(interaction=interaction, created=created, case=case)


def is_stored(channel: str, external_id: str) -> bool:
    """Whether the provider's message (channel, external_id) is on a timeline already."""
    return sql.fetch(Interaction, _BY_EXTERNAL_ID, [channel, external_id]) is not None


def _already_stored(channel: str, external_id: str) -> InboundResult | None:
    """The result of storing a message that is stored already, or None: one read through the
    unique index `interaction_unique_external_id`, as every message asks it."""
    interaction = sql.fetch(Interaction, _BY_EXTERNAL_ID, [channel, external_id])
    if interaction is None:
        return None
    case_id = (interaction.data or {}).get("case_id")
    case = None
    if isinstance(case_id, int) and not isinstance(case_id, bool):
        case = sql.fetch(Case, "id = %s", [case_id])
    return InboundResult(interaction=interaction, created=False, case=case)


_BY_EXTERNAL_ID = "channel = %s AND external_id = %s"


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:120]
    return ""
