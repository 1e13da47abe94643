"""The timeline: `record_interaction` (the one way to append) and keyset-paginated reads."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime

import nh3
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from customers.models import Channel, Customer, Direction, Interaction, Kind
from workbench import realtime, sql

# A body larger than this is refused whole, never stored cut in half (1 MB of mail is an
# attachment's job, not the timeline's).
MAX_BODY_CHARS = 200_000
MAX_TITLE_CHARS = 300
PAGE_SIZE = 50
INTERACTION_EVENT = "customer.interaction"
# `interaction_unique_external_id` as an ON CONFLICT target: one entry per provider message id.
ONE_PER_EXTERNAL_ID = "(channel, external_id) WHERE external_id IS NOT NULL"


def sanitise_html(body_html: str) -> str:
    """Keep formatting, drop scripts, handlers and unsafe URLs (nh3's allow-list)."""
    return nh3.clean(body_html, link_rel="noopener noreferrer nofollow")


def html_to_text(body_html: str) -> str:
    """A plain-text copy of an HTML body, for search and for previews."""
    return html.unescape(nh3.clean(body_html, tags=set())).strip()


def record_interaction(
    *,
    customer: Customer,
    channel: str,
    kind: str,
    direction: str,
    body_text: str = "",
    body_html: str = "",
    title: str = "",
    actor=None,
    actor_label: str = "",
    occurred_at: datetime | None = None,
    external_id: str | None = None,
    subject: models.Model | None = None,
    is_private: bool = False,
    status: str = "",
    data: dict | None = None,
) -> tuple[Interaction, bool]:
    """Append one entry to a customer's timeline; return (interaction, created).

    Validates the channel, kind and direction, refuses bodies over MAX_BODY_CHARS, sanitises
    HTML with nh3 and keeps a plain-text copy. A repeated (channel, external_id) stores nothing
    and returns the entry already stored, so a retried webhook is harmless. The customer's
    live group hears of it after commit.
    """
    errors = {}
    if channel not in Channel.values:
        errors["channel"] = f"unknown channel {channel!r}"
    if kind not in Kind.values:
        errors["kind"] = f"unknown kind {kind!r}"
    if direction not in Direction.values:
        errors["direction"] = f"unknown direction {direction!r}"
    if len(body_text) > MAX_BODY_CHARS or len(body_html) > MAX_BODY_CHARS:
        errors["body"] = f"body is longer than {MAX_BODY_CHARS:,} characters"
    if external_id is not None and not (0 < len(external_id) <= 255):
        errors["external_id"] = "external_id must be 1 to 255 characters"
    if customer.merged_into_id is not None:
        errors["customer"] = "customer was merged; record on the surviving customer"
    if errors:
        raise ValidationError(errors)
    clean_html = sanitise_html(body_html) if body_html else ""
    text = body_text or (html_to_text(clean_html) if clean_html else "")
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    interaction = Interaction(
        customer=customer,
        channel=channel,
        kind=kind,
        direction=direction,
        occurred_at=occurred_at or timezone.now(),
        actor=actor if is_user else None,
        actor_label=actor_label or (str(actor) if is_user else ""),
        title=title[:MAX_TITLE_CHARS],
        body_text=text,
        body_html=clean_html,
        is_private=is_private,
        external_id=external_id,
        status=status,
        data=data or {},
    )
    if subject is not None:
        interaction.subject_type = ContentType.objects.get_for_model(subject)
        interaction.subject_id = subject.pk
    if not sql.insert(interaction, on_conflict=ONE_PER_EXTERNAL_ID if external_id else ""):
        # Stored before (a provider's retry), or by a concurrent twin: that row stands.
        return Interaction.objects.get(channel=channel, external_id=external_id), False
    realtime.publish(
        realtime.group_name("customer", customer.pk),
        INTERACTION_EVENT,
        interaction_id=interaction.pk,
    )
    return interaction, True


@dataclass(frozen=True)
class Cursor:
    """A position in a timeline: the (occurred_at, id) of the last entry shown."""

    occurred_at: datetime
    id: int

    def encode(self) -> str:
        micros = int(self.occurred_at.timestamp() * 1_000_000)
        return f"{micros}_{self.id}"

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            micros, pk = value.split("_")
            occurred_at = datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC)
            cursor = cls(occurred_at=occurred_at, id=int(pk))
        except (ValueError, OverflowError, OSError):
            raise ValidationError({"before": "not a timeline position"}) from None
        if cursor.id < 1:
            raise ValidationError({"before": "not a timeline position"})
        return cursor


def timeline_for(
    customer_id: int,
    *,
    channels: list[str] | None = None,
    kinds: list[str] | None = None,
    before: Cursor | None = None,
) -> models.QuerySet[Interaction]:
    """A customer's interactions newest first, optionally filtered, from a keyset position.

    Keyset, not OFFSET: page 1,000 costs what page 1 costs (one index range scan).
    """
    query = Interaction.objects.filter(customer_id=customer_id)
    if channels:
        query = query.filter(channel__in=channels)
    if kinds:
        query = query.filter(kind__in=kinds)
    if before is not None:
        # The plain `<=` bound lets PostgreSQL start the index scan at the cursor; the OR alone
        # is a filter it applies row by row from the newest entry down.
        query = query.filter(occurred_at__lte=before.occurred_at).filter(
            Q(occurred_at__lt=before.occurred_at)
            | Q(occurred_at=before.occurred_at, id__lt=before.id)
        )
    return query.select_related("actor").order_by("-occurred_at", "-id")


@dataclass
class TimelinePage:
    entries: list[Interaction]
    next_cursor: Cursor | None


def timeline_page(
    customer_id: int,
    *,
    channels: list[str] | None = None,
    kinds: list[str] | None = None,
    before: Cursor | None = None,
    size: int = PAGE_SIZE,
) -> TimelinePage:
    """One page of the timeline and the cursor of the next (None on the last page)."""
    rows = list(
        timeline_for(customer_id, channels=channels, kinds=kinds, before=before)[: size + 1]
    )
    has_more = len(rows) > size
    rows = rows[:size]
    last = rows[-1] if rows and has_more else None
    cursor = Cursor(occurred_at=last.occurred_at, id=last.id) if last is not None else None
    return TimelinePage(entries=rows, next_cursor=cursor)
