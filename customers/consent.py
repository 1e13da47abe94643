"""Consent: grant or withdraw a purpose, with its source and time; the latest record wins."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from customers.models import Channel, Consent, ConsentPurpose, Customer, Direction, Kind
from customers.timeline import record_interaction


@transaction.atomic
def record_consent(
    *,
    customer: Customer,
    purpose: str,
    is_granted: bool,
    source: str,
    recorded_by=None,
    note: str = "",
    recorded_at: datetime | None = None,
) -> Consent:
    """Store a grant or withdrawal (evidence, append-only) and put it on the timeline.

    Takes effect at once: every check after this commit reads the latest record.
    """
    errors = {}
    if purpose not in ConsentPurpose.values:
        errors["purpose"] = f"unknown consent purpose {purpose!r}"
    if source not in Channel.values:
        errors["source"] = f"unknown source channel {source!r}"
    if len(note) > 500:
        errors["note"] = "note is longer than 500 characters"
    if errors:
        raise ValidationError(errors)
    is_user = recorded_by is not None and getattr(recorded_by, "is_authenticated", False)
    consent = Consent.objects.create(
        customer=customer,
        purpose=purpose,
        is_granted=is_granted,
        source=source,
        note=note,
        recorded_by=recorded_by if is_user else None,
        recorded_at=recorded_at or timezone.now(),
    )
    label = ConsentPurpose(purpose).label
    record_interaction(
        customer=customer,
        channel=Channel.SYSTEM,
        kind=Kind.CONSENT,
        direction=Direction.INTERNAL,
        title=f"{label}: {'granted' if is_granted else 'withdrawn'}",
        body_text=note,
        actor=recorded_by,
        occurred_at=consent.recorded_at,
        subject=consent,
        data={"purpose": purpose, "is_granted": is_granted, "source": source},
    )
    return consent


def latest_consents(customer_id: int) -> dict[str, Consent]:
    """The current record per purpose (only purposes ever recorded)."""
    rows = (
        Consent.objects.filter(customer_id=customer_id)
        .select_related("recorded_by")
        .order_by("purpose", "-recorded_at", "-id")
    )
    current: dict[str, Consent] = {}
    for row in rows.distinct("purpose"):
        current[row.purpose] = row
    return current


def has_consent(customer_id: int, purpose: str) -> bool:
    """True when the latest record for the purpose is a grant (no record: no consent)."""
    latest = (
        Consent.objects.filter(customer_id=customer_id, purpose=purpose)
        .order_by("-recorded_at", "-id")
        .values_list("is_granted", flat=True)
        .first()
    )
    return bool(latest)


def consenting(customers: QuerySet[Customer], purpose: str) -> QuerySet[Customer]:
    """The customers of a queryset whose latest record for the purpose is a grant (one query)."""
    latest = (
        Consent.objects.filter(customer_id=OuterRef("pk"), purpose=purpose)
        .order_by("-recorded_at", "-id")
        .values("is_granted")[:1]
    )
    return customers.annotate(_consent=Subquery(latest)).filter(_consent=True)
