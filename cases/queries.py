"""Queries several places read: open cases and open commitments of customers."""

from __future__ import annotations

from django.db.models import QuerySet

from cases.models import OPEN_STATUSES, Case, Commitment, CommitmentStatus


def open_cases_for(customer_ids) -> QuerySet[Case]:
    """Cases not yet solved (new, open, pending) of the given customers."""
    return Case.objects.filter(customer_id__in=customer_ids, status__in=OPEN_STATUSES)


def open_commitments_for(customer_ids) -> QuerySet[Commitment]:
    """Promises still open for the given customers, soonest due first."""
    return Commitment.objects.filter(
        customer_id__in=customer_ids, status=CommitmentStatus.OPEN
    ).order_by("due_at", "id")
