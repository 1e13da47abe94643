"""Delivery receipts: what a provider reports about our outbound messages after they left.

A provider tells us, by its own message id, that a message was sent, delivered, read or failed
(WhatsApp statuses, Messenger/Instagram delivery and read events and echoes, tracking webhooks).
The status only moves forward (sent → delivered → read): receipts arrive out of order and twice.
A failure report marks a message failed with the provider's reason unless it was already seen
delivered or read (one device failed, another got it).
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from cases.replies import DELIVERY_EVENT, FAILED, QUEUED, SENDING, SENT
from customers.fragments import INTERACTION_STATUS_EVENT
from customers.models import Direction, Identity, Interaction
from workbench import realtime

DELIVERED, READ = "delivered", "read"
# How far along each status is; a receipt never moves a message backwards.
PROGRESS = {QUEUED: 0, SENDING: 1, FAILED: 2, SENT: 2, DELIVERED: 3, READ: 4}
MAX_REASON_CHARS = 500


def record_receipt(
    *, channel: str, external_id: str, status: str, error: str = "", at: datetime | None = None
) -> bool:
    """Apply one receipt to our outbound interaction with that provider id; True if it changed.

    An id we do not know (a message sent from another tool) changes nothing.
    """
    if status not in (SENT, DELIVERED, READ, FAILED) or not external_id:
        return False
    with transaction.atomic():
        interaction = (
            Interaction.objects.select_for_update()
            .filter(channel=channel, external_id=external_id, direction=Direction.OUTBOUND)
            .first()
        )
        if interaction is None:
            return False
        return _apply(interaction, status, error, at or timezone.now())


def record_receipts_up_to(*, channel: str, recipient: str, status: str, up_to: datetime) -> int:
    """Mark our messages to `recipient` on the channel sent up to `up_to` as delivered or read.

    Messenger reports reads (and old clients deliveries) as a watermark, not per message:
    "everything sent before this moment was read". Returns how many changed.
    """
    if status not in (DELIVERED, READ):
        return 0
    # Through the customer: (customer, channel, occurred_at) is indexed, the JSON "to" is not.
    owner = Identity.objects.filter(channel=channel, handle=recipient).values("customer_id")
    changed = 0
    with transaction.atomic():
        candidates = Interaction.objects.select_for_update().filter(
            customer_id__in=owner,
            channel=channel,
            direction=Direction.OUTBOUND,
            status__in=(SENT, DELIVERED),
            data__to=recipient,
            occurred_at__lte=up_to,
        )
        for interaction in candidates.order_by("id"):
            changed += _apply(interaction, status, "", up_to)
    return changed


def publish_delivery_status(*interactions: Interaction) -> None:
    """Tell the pages that show these outbound messages that their delivery status changed.

    After commit; a batch passes all its messages, numbered and sent in one go. The customer's
    group hears every change: the customer page and the case page's timeline swap the same
    `delivery-<pk>` status (so a reply of another case, or one a colleague's page received
    live, is current too). A reply's case group hears it as well, as it always has: the case
    page, which listens to both groups, then swaps the same words twice, a cheap repeat kept
    while the case's own event is what its tests and callers rely on.
    """
    events = []
    for interaction in interactions:
        case_id = (interaction.data or {}).get("case_id")
        if isinstance(case_id, int) and case_id > 0:
            events.append(
                (
                    realtime.group_name("case", case_id),
                    DELIVERY_EVENT,
                    {"interaction_id": interaction.pk, "case_id": case_id},
                )
            )
        events.append(
            (
                realtime.group_name("customer", interaction.customer_id),
                INTERACTION_STATUS_EVENT,
                {"interaction_id": interaction.pk, "customer_id": interaction.customer_id},
            )
        )
    realtime.publish_many(events)


def _apply(interaction: Interaction, status: str, error: str, at: datetime) -> bool:
    current = interaction.status
    if status == FAILED:
        moves = current not in (FAILED, DELIVERED, READ)
    elif current == FAILED:
        moves = status in (DELIVERED, READ)  # another device got it after all
    else:
        moves = PROGRESS[status] > PROGRESS.get(current, 0)
    if not moves:
        return False
    data = dict(interaction.data or {})
    data[f"{status}_at"] = at.isoformat()
    if status == FAILED:
        data["delivery_error"] = (error or "the provider reported the message as failed")[
            :MAX_REASON_CHARS
        ]
    else:
        data.pop("delivery_error", None)
    interaction.status = status
    interaction.data = data
    interaction.save(update_fields=["status", "data"])
    publish_delivery_status(interaction)
    return True
