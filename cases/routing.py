"""Routing: which case an inbound message belongs to, or which new case it opens, and where."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from cases import lifecycle
from cases.models import OPEN_STATUSES, Case, Priority, Queue, Status
from cases.sla import publish_case_changed
from customers.models import Customer
from workbench import sql

DEFAULT_JOIN_WINDOW_HOURS = 72

# Simple, readable rules: the first list whose word appears in the subject or body wins.
PRIORITY_WORDS = (
    (Priority.URGENT, ("urgent", "emergency", "outage", "asap")),
    (Priority.HIGH, ("refund", "cancel", "cancellation", "complaint", "chargeback")),
)
# Customers the business marks as important get at least high priority.
VIP_PLANS = ("enterprise", "vip")


# A public mention carrying one of these asks for service (a complaint), not just chatter.
MENTION_NEGATIVE_WORDS = frozenset({
    "angry", "annoyed", "awful", "bad", "broke", "broken", "cancel", "cancelled", "can't",
    "cannot", "charged", "complaint", "damaged", "delayed", "disappointed", "disappointing",
    "doesn't", "don't", "down", "error", "fail", "failed", "failing", "faulty", "frustrated",
    "frustrating", "hate", "horrible", "issue", "lost", "missing", "never", "not", "outage",
    "overcharged", "problem", "refund", "ridiculous", "rude", "scam", "slow", "still", "stuck",
    "terrible", "unacceptable", "useless", "waiting", "won't", "worst", "wrong",
})  # fmt: skip


def mention_opens_case(text: str) -> bool:
    """Whether a public mention of our account opens (or joins) a case.

    The rule: a mention opens a case when it asks something (it contains a question mark) or
    says something is wrong (one of MENTION_NEGATIVE_WORDS: "broken", "refund", "still",
    "never", "worst", …). Praise and chatter ("love the new app!") stay timeline entries only,
    visible on the customer's page without making work for the queue.
    """
    text = (text or "").lower().replace("\u2019", "'")
    if "?" in text:
        return True
    return not MENTION_NEGATIVE_WORDS.isdisjoint(re.findall(r"[a-z']+", text))


def join_window() -> timedelta:
    return timedelta(hours=getattr(settings, "CASE_JOIN_WINDOW_HOURS", DEFAULT_JOIN_WINDOW_HOURS))


def priority_for(*, customer: Customer, subject: str, body_text: str) -> str:
    """The priority of a new case from keywords in the message and the customer's plan."""
    words = set(re.findall(r"[a-z]+", f"{subject} {body_text}".lower()))
    for priority, keywords in PRIORITY_WORDS:
        if words.intersection(keywords):
            return priority
    attributes = customer.attributes if isinstance(customer.attributes, dict) else {}
    if str(attributes.get("plan", "")).lower() in VIP_PLANS or attributes.get("vip") is True:
        return Priority.HIGH
    return Priority.NORMAL


def queue_for_channel(channel: str) -> Queue:
    """The queue whose `default_for_channels` names the channel, else the first queue."""
    queue = Queue.objects.filter(default_for_channels__contains=[channel]).order_by("id").first()
    queue = queue or Queue.objects.order_by("id").first()
    if queue is None:
        raise ValidationError("No queue exists to route the message to; create one first.")
    return queue


def route_inbound(
    *,
    customer: Customer,
    channel: str,
    thread_key: str,
    subject: str,
    body_text: str,
    now: datetime | None = None,
    customer_locked: bool = False,
) -> Case:
    """The case an inbound message belongs to: joined, reopened or newly opened.

    1. A case of this customer on the same thread (`thread_key`, e.g. the mail's root
       Message-ID) that is still open is joined; a solved one is reopened (the customer wrote
       back). A closed case is never reopened: a new case starts.
    2. Else an open case of the customer on the same channel active within
       `settings.CASE_JOIN_WINDOW_HOURS` (72 by default) is joined, so three chat messages in a
       row are one case, not three.
    3. Else a new case opens in the channel's default queue, its priority from the keyword and
       plan rules above.

    The customer row is locked for the decision, so two messages arriving at once for the same
    customer do not open two cases; `customer_locked` says the caller holds that lock already
    (the inbound pipeline takes it when it resolves the sender). The caller records the message
    itself on the timeline.
    """
    now = now or timezone.now()
    if not customer_locked:
        with transaction.atomic():
            Customer.objects.select_for_update().filter(pk=customer.pk).first()
            return route_inbound(customer=customer, channel=channel, thread_key=thread_key,
                                 subject=subject, body_text=body_text, now=now,
                                 customer_locked=True)  # fmt: skip
    found = _case_to_join(customer=customer, channel=channel, thread_key=thread_key, now=now)
    if found is not None:
        case, on_thread = found
        if on_thread and case.status == Status.SOLVED:
            return lifecycle.reopen_on_customer_reply(case=case)
        return case
    return lifecycle.open_case(
        customer=customer,
        queue=queue_for_channel(channel),
        subject=subject.strip()[:300] or "(no subject)",
        channel=channel,
        priority=priority_for(customer=customer, subject=subject, body_text=body_text),
        thread_key=thread_key,
    )


def _case_to_join(
    *, customer: Customer, channel: str, thread_key: str, now: datetime
) -> tuple[Case, bool] | None:
    """Rules 1 and 2 of `route_inbound` in one read: (the case, whether it is on the thread).

    Raw SQL: every inbound message asks this, and compiling the ORM's two queries cost more CPU
    than PostgreSQL spent answering them (`bench ingest`).
    """
    params = {
        "customer": customer.pk,
        "thread": thread_key,
        "thread_statuses": [*OPEN_STATUSES, Status.SOLVED],
        "channel": channel,
        "open": list(OPEN_STATUSES),
        "since": now - join_window(),
    }
    with sql.prepared_cursor() as cursor:
        cursor.execute(_case_to_join_statement(), params)
        row = cursor.fetchone()
    if row is None:
        return None
    return sql.from_row(Case, row[:-1]), row[-1]


# Rule 1's case (newest first) beats rule 2's (most recently active first).
_CASE_TO_JOIN = """
SELECT {columns}, on_thread FROM (
    SELECT c.*, (%(thread)s <> '' AND c.thread_key = %(thread)s
                 AND c.status = ANY(%(thread_statuses)s)) AS on_thread
    FROM {case} c
    WHERE c.customer_id = %(customer)s AND c.merged_into_id IS NULL
) c
WHERE on_thread
   OR (c.channel = %(channel)s AND c.status = ANY(%(open)s) AND c.updated_at >= %(since)s)
ORDER BY on_thread DESC, CASE WHEN on_thread THEN c.id END DESC, c.updated_at DESC, c.id DESC
LIMIT 1
"""


_TOUCH_UNLESS_PENDING = "UPDATE cases_case SET updated_at = %s WHERE id = %s AND status <> %s"


@cache
def _case_to_join_statement() -> str:
    return _CASE_TO_JOIN.format(
        columns=sql.columns(Case, "c"), case=connection.ops.quote_name(Case._meta.db_table)
    )


def note_customer_message(*, case: Case, now: datetime | None = None) -> Case:
    """The customer wrote on `case`: a pending case is open again (the ball is back with us),
    its activity time moves (the join window counts from it), and its page and queue hear of it.
    """
    now = now or timezone.now()
    # One UPDATE in the common case (the case is not pending); raw, as every inbound message
    # that joins a case runs it (`bench ingest`).
    with sql.prepared_cursor() as cursor:
        cursor.execute(_TOUCH_UNLESS_PENDING, [now, case.pk, Status.PENDING])
        touched = cursor.rowcount
    if touched:
        case.updated_at = now
        publish_case_changed(case)
        return case
    return lifecycle.reopen_on_customer_reply(case=case, now=now)
