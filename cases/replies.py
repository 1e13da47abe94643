"""Replies and internal notes: what an agent writes on a case from the composer or the API.

A reply is an outbound message on a channel the customer has a handle on. It is recorded on the
timeline as "queued", with our Message-ID and the threading headers it will carry, and handed to
the delivery task (by name: the connectors live in workbench, above this app) after commit; the
task marks it sent or failed. A note is a private entry about the case. Either may also move the
case's status in the same transaction ("send and set pending"), so nothing is half-done.
"""

from __future__ import annotations

import uuid

from celery import current_app
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from cases.lifecycle import change_status, check_may_work_case
from cases.mentions import notify_mentions
from cases.models import Case, Status
from cases.sla import apply_sla, publish_case_changed
from customers.identity import live_customer
from customers.models import Channel, Customer, Direction, Identity, Interaction, Kind
from customers.timeline import record_interaction

NOTE_MAX_CHARS = 10_000
REPLY_MAX_CHARS = 20_000
# The Celery task that delivers a queued outbound interaction (workbench/tasks.py).
DELIVER_TASK = "workbench.deliver_interaction"
# Channels with a real sender in workbench.connectors; the others refuse a reply, never fake it.
CHANNELS_WITH_SENDER = frozenset(
    {Channel.EMAIL, Channel.CHAT, Channel.WHATSAPP, Channel.FACEBOOK, Channel.INSTAGRAM, Channel.X}
)
# Delivery statuses of an outbound reply, in the order they happen.
QUEUED, SENDING, SENT, FAILED = "queued", "sending", "sent", "failed"
# Published to the case's group when a reply's delivery status changes (cases/fragments.py).
DELIVERY_EVENT = "case.reply_delivery"
# A thread's References header keeps the newest ids only: mail clients need no more to thread.
MAX_REFERENCES = 10
# A collision warning names who wrote among this many newest messages (enough to say who).
MAX_COLLISION_ROWS = 20


class CollisionError(ValidationError):
    """Someone else answered on the case after the author last looked (code "collision").

    `names` says who (agents by name, the customer by theirs), `latest_id` is the newest such
    interaction: the page warns and offers "send anyway" (`confirm_collision=True`).
    """

    def __init__(self, *, names: list[str], latest_id: int):
        self.names = names
        self.latest_id = latest_id
        super().__init__(
            f"{_join(names)} wrote on this case after you opened it. Read the timeline before "
            "sending, or send anyway.",
            code="collision",
        )


def send_reply(
    *,
    case: Case,
    author,
    channel: str,
    body: str,
    set_status: str | None = None,
    seen_interaction_id: int | None = None,
    confirm_collision: bool = False,
) -> Interaction:
    """Reply to the case's customer on `channel`; return the queued outbound interaction.

    Refuses (PermissionDenied) an author who may not work the case; refuses (ValidationError,
    keyed by field) an empty or too long body, a channel the customer has no handle on or that
    has no sender yet, a closed case, and a `set_status` the case may not move to. Raises
    CollisionError when an agent or the customer wrote on the case after interaction
    `seen_interaction_id` (what the author's page showed; None skips the check) unless
    `confirm_collision`. One transaction under the case's row lock: the reply, the first-response
    stamp and any status change are stored together or not at all. Replying to a new case opens
    it. The delivery task is enqueued after commit.
    """
    body = body or ""
    with transaction.atomic():
        locked = _locked(case)
        check_may_work_case(author, locked)
        errors = _body_errors(body, REPLY_MAX_CHARS, "Write the reply before sending.")
        if channel not in Channel.values:
            errors["channel"] = f"Unknown channel {channel!r}."
        if locked.status == Status.CLOSED:
            errors["case"] = "A closed case takes no more replies; a new message opens a new case."
        if set_status is not None and set_status not in Status.values:
            errors["status"] = f"Unknown status {set_status!r}."
        if errors:
            raise ValidationError(errors)
        customer = live_customer(locked.customer)
        identity = _recipient(customer, channel, locked)
        if channel not in CHANNELS_WITH_SENDER:
            message = f"No outbound connector for {Channel(channel).label} yet: reply by email."
            raise ValidationError({"channel": ValidationError(message, code="no_connector")})
        if seen_interaction_id is not None and not confirm_collision:
            _check_collision(locked, author=author, seen_interaction_id=seen_interaction_id)
        now = timezone.now()
        headers = _threading(locked, channel)
        subject = reply_subject(locked)
        message_id = new_message_id(locked)
        interaction, _ = record_interaction(
            customer=customer,
            channel=channel,
            kind=Kind.MESSAGE,
            direction=Direction.OUTBOUND,
            title=subject,
            body_text=body,
            actor=author,
            occurred_at=now,
            external_id=message_id,
            subject=locked,
            status=QUEUED,
            data={
                "case_id": locked.pk,
                "to": identity.handle,
                "subject": subject,
                "message_id": message_id,
                **headers,
            },
        )
        if locked.first_responded_at is None:
            locked.first_responded_at = now
            fields = ["first_responded_at", "updated_at", *apply_sla(locked, now=now)]
            locked.save(update_fields=fields)
            publish_case_changed(locked)
        next_status = set_status or (Status.OPEN if locked.status == Status.NEW else None)
        if next_status is not None and next_status != locked.status:
            change_status(case=locked, status=next_status, actor=author, now=now)
        transaction.on_commit(
            lambda: current_app.send_task(DELIVER_TASK, args=[interaction.pk]), robust=True
        )
    return interaction


def add_note(*, case: Case, author, body: str, set_status: str | None = None) -> Interaction:
    """Add an internal note about the case to the customer's timeline; return it.

    Private: service and the CCO read its body, marketing sees only that a note exists. Those
    it @mentions who may read the case are notified in the same transaction (cases.mentions).
    Refuses (PermissionDenied) an author who may not work the case and (ValidationError) an
    empty or too long body or a `set_status` the case may not move to; stores nothing then.
    """
    body = body or ""
    with transaction.atomic():
        locked = _locked(case)
        check_may_work_case(author, locked)
        errors = _body_errors(body, NOTE_MAX_CHARS, "Write the note before adding it.")
        if set_status is not None and set_status not in Status.values:
            errors["status"] = f"Unknown status {set_status!r}."
        if errors:
            raise ValidationError(errors)
        interaction, _ = record_interaction(
            customer=live_customer(locked.customer),
            channel=Channel.SYSTEM,
            kind=Kind.NOTE,
            direction=Direction.INTERNAL,
            body_text=body,
            actor=author,
            subject=locked,
            is_private=True,
        )
        if set_status is not None and set_status != locked.status:
            change_status(case=locked, status=set_status, actor=author)
        # @mentions are told in the note's transaction; their badges update after commit.
        notify_mentions(note_interaction=interaction, author=author)
    return interaction


def reply_channels(customer: Customer, identities: list[Identity] | None = None) -> list[tuple]:
    """The channels the customer has a handle on, email first: [(channel, label, handles)].

    Pass the customer's identities when the caller has them already (no query then).
    """
    if identities is None:
        identities = list(Identity.objects.filter(customer=customer).order_by("channel", "id"))
    handles: dict[str, list[str]] = {}
    for identity in identities:
        handles.setdefault(identity.channel, []).append(identity.handle)
    order = [Channel.EMAIL, *(c for c in Channel.values if c != Channel.EMAIL)]
    return [(c, Channel(c).label, handles[c]) for c in order if c in handles]


def default_reply_channel(case: Case, channels: list[str]) -> str | None:
    """Email when the case came by email (or its channel is not the customer's any more and
    they have an address), else the case's channel of origin, else the first the customer has.

    A customer whose latest message on the case asked to be answered on another channel they
    have a handle on (`data["answer_by"]`: a chat visitor who left their email while nobody was
    online) gets that channel: the chat they left is not where they will read the answer. Once
    they write again without asking, the channel of origin is back.
    """
    if case.channel == Channel.CHAT and len(channels) > 1:
        latest = (
            _about(case)
            .filter(kind=Kind.MESSAGE, direction=Direction.INBOUND)
            .order_by("-id")
            .values_list("data", flat=True)
            .first()
        )
        asked = latest.get("answer_by") if isinstance(latest, dict) else None
        if asked in channels:
            return asked
    if case.channel in channels:
        return case.channel
    if Channel.EMAIL in channels:
        return Channel.EMAIL
    return channels[0] if channels else None


def reply_subject(case: Case) -> str:
    """ "Re: <case subject> [#<id>]": the tag lets an answer find its case even without headers."""
    subject = case.subject
    if subject[:3].lower() != "re:":
        subject = f"Re: {subject}"
    return f"{subject} [#{case.pk}]"


def new_message_id(case: Case) -> str:
    """Our Message-ID for a reply on the case, unique and naming it: <case-12.<hex>@domain>."""
    return f"<case-{case.pk}.{uuid.uuid4().hex}@{settings.WORKBENCH_MAIL_DOMAIN}>"


def _locked(case: Case) -> Case:
    return (
        Case.objects.select_related("customer", "queue__calendar")
        .select_for_update(of=("self",))
        .get(pk=case.pk)
    )


def _body_errors(body: str, limit: int, empty_message: str) -> dict[str, str]:
    if not body.strip():
        return {"body": empty_message}
    if len(body) > limit:
        return {"body": f"Keep it under {limit:,} characters (this is {len(body):,})."}
    return {}


def _recipient(customer: Customer, channel: str, case: Case) -> Identity:
    """The handle to reply to: the one the customer last wrote from on this case, if it is
    still theirs, else their oldest handle on the channel."""
    identities = list(
        Identity.objects.filter(customer=customer, channel=channel).order_by("created_at", "id")
    )
    if not identities:
        label = Channel(channel).label if channel in Channel.values else channel
        message = f"{customer} has no {label} handle to reply to."
        raise ValidationError({"channel": ValidationError(message, code="no_identity")})
    last_in = (
        _about(case)
        .filter(channel=channel, direction=Direction.INBOUND, kind=Kind.MESSAGE)
        .order_by("-occurred_at", "-id")
        .only("data")
        .first()
    )
    sender = str((last_in.data or {}).get("from", "")).strip().lower() if last_in else ""
    return next((i for i in identities if i.handle == sender), identities[0])


def _threading(case: Case, channel: str) -> dict[str, str]:
    """In-Reply-To and References for a reply: the case's last message on the channel (the
    customer's or ours) that carries a Message-ID, and the thread it belonged to."""
    if channel != Channel.EMAIL:
        return {}
    parent = (
        _about(case)
        .filter(channel=channel, kind=Kind.MESSAGE)
        .order_by("-occurred_at", "-id")
        .only("data", "external_id")
        .first()
    )
    parent_id = _message_id_of(parent) if parent is not None else ""
    if not parent_id:
        root = case.thread_key if _looks_like_message_id(case.thread_key) else ""
        return {"in_reply_to": root, "references": root} if root else {}
    earlier = str((parent.data or {}).get("references", "")).split()
    if not earlier and _looks_like_message_id(case.thread_key):
        earlier = [case.thread_key]
    chain = [ref for ref in earlier if ref != parent_id] + [parent_id]
    return {"in_reply_to": parent_id, "references": " ".join(chain[-MAX_REFERENCES:])}


def _message_id_of(interaction: Interaction) -> str:
    candidate = str((interaction.data or {}).get("message_id") or interaction.external_id or "")
    return candidate if _looks_like_message_id(candidate) else ""


def _looks_like_message_id(value: str) -> bool:
    return bool(value) and value.startswith("<") and value.endswith(">") and "@" in value


def _about(case: Case):
    return Interaction.objects.filter(
        subject_type=ContentType.objects.get_for_model(Case), subject_id=case.pk
    )


def _check_collision(case: Case, *, author, seen_interaction_id: int) -> None:
    later = _about(case).filter(
        kind=Kind.MESSAGE,
        direction__in=(Direction.INBOUND, Direction.OUTBOUND),
        id__gt=seen_interaction_id,
    )
    if author is not None:
        # exclude() keeps rows with no actor (the customer's messages), as it should.
        later = later.exclude(actor_id=author.pk)
    newest = list(later.select_related("actor").order_by("-id")[:MAX_COLLISION_ROWS])
    if not newest:
        return
    names: list[str] = []
    for interaction in reversed(newest):
        if interaction.direction == Direction.INBOUND:
            name = f"{interaction.actor_label or case.customer} (customer)"
        elif interaction.actor is not None:
            name = interaction.actor.get_full_name() or interaction.actor.get_username()
        else:
            name = interaction.actor_label or "Workbench"
        if name not in names:
            names.append(name)
    raise CollisionError(names=names, latest_id=newest[0].pk)


def _join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"
