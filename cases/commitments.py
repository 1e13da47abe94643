"""Commitments: promises made to a customer on a case — recorded, kept, broken, withdrawn, flagged.

Each change is one transaction that writes a timeline entry (kind `commitment_event`, subject =
the commitment) and publishes "case.changed" after commit. An open commitment is what holds
marketing back (campaigns reads `cases.queries.open_commitments_for`), so its status is only
ever changed under a row lock and from "open".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from cases.holds import lock_marketing_state, marketing_state_changed
from cases.lifecycle import check_may_work_case, record_case_event
from cases.models import (
    OPEN_STATUSES,
    Case,
    Commitment,
    CommitmentKind,
    CommitmentStatus,
    SlaPolicy,
    Status,
)
from cases.sla import publish_case_changed
from customers.identity import live_customer
from customers.models import Channel, Direction, Kind
from customers.timeline import record_interaction

DEFAULT_GRACE_HOURS = 24
FLAG_BATCH = 200


def record_commitment(
    *,
    case: Case,
    kind: str,
    text: str,
    due_at: datetime,
    topics: Iterable[str] = (),
    actor,
) -> Commitment:
    """Record a promise on the case; from now on it holds marketing for this customer.

    Refuses an actor who may not work the case (PermissionDenied) and a closed or merged case,
    an unknown kind, an empty or over-long text or a naive due time (ValidationError).
    """
    if actor is None:
        raise PermissionDenied("a commitment is made by a person")
    check_may_work_case(actor, case)
    text = (text or "").strip()
    errors = {}
    if kind not in CommitmentKind.values:
        errors["kind"] = f"unknown kind {kind!r}"
    if not text:
        errors["text"] = "say what was promised"
    elif len(text) > 1000:
        errors["text"] = "at most 1,000 characters"
    if due_at is None or timezone.is_naive(due_at):
        errors["due_at"] = "a due date and time is required"
    if case.status == Status.CLOSED or case.merged_into_id is not None:
        errors["case"] = "this case is closed"
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        customer = live_customer(case.customer)
        # From here to commit, no touch to this customer can be marked sent (cases.holds).
        lock_marketing_state(customer.pk)
        commitment = Commitment.objects.create(
            case=case,
            customer=customer,
            kind=kind,
            text=text,
            due_at=due_at,
            topics=sorted({topic.strip().lower() for topic in topics if topic.strip()}),
            created_by=actor,
        )
        _record_event(commitment, verb="recorded", actor=actor)
        marketing_state_changed(customer.pk)
    return commitment


def keep_commitment(*, commitment: Commitment, actor, now: datetime | None = None) -> Commitment:
    """The promise was kept."""
    return _resolve(commitment, CommitmentStatus.KEPT, verb="kept", actor=actor, now=now)


def break_commitment(*, commitment: Commitment, actor, now: datetime | None = None) -> Commitment:
    """The promise was not kept (the contact policy's cool-off counts from here)."""
    return _resolve(commitment, CommitmentStatus.BROKEN, verb="broken", actor=actor, now=now)


def withdraw_commitment(
    *, commitment: Commitment, actor, now: datetime | None = None
) -> Commitment:
    """The promise was recorded in error or replaced: it no longer holds anything."""
    return _resolve(commitment, CommitmentStatus.WITHDRAWN, verb="withdrawn", actor=actor, now=now)


def _resolve(commitment: Commitment, status: str, *, verb: str, actor, now) -> Commitment:
    if actor is None:
        raise PermissionDenied("a commitment is resolved by a person")
    with transaction.atomic():
        locked = (
            Commitment.objects.select_related("case__queue", "customer")
            .select_for_update(of=("self",))
            .get(pk=commitment.pk)
        )
        check_may_work_case(actor, locked.case)
        if locked.status != CommitmentStatus.OPEN:
            raise ValidationError(
                {"status": f"this commitment is already {locked.status}"}, code="not_open"
            )
        lock_marketing_state(locked.customer_id)
        locked.status = status
        locked.resolved_at = now or timezone.now()
        locked.save(update_fields=["status", "resolved_at"])
        _record_event(locked, verb=verb, actor=actor)
        marketing_state_changed(locked.customer_id)
    return locked


def flag_overdue_commitments(*, now: datetime) -> int:
    """Flag open commitments past due; count those past the grace as broken. Return how many.

    A commitment is flagged once (`overdue_flagged_at`): a timeline entry and a "case.changed"
    event tell the assignee and the supervisors watching the case. Once it is past due by more
    than the policy's `commitment_grace_hours` (24 without a policy) it is broken by the system.
    Rows are locked with SKIP LOCKED and their status is checked under the lock, so two beat
    runs at once flag nothing twice.
    """
    grace_by_queue_priority = {
        (policy.queue_id, policy.priority): timedelta(hours=policy.commitment_grace_hours)
        for policy in SlaPolicy.objects.all()
    }
    default_grace = timedelta(hours=DEFAULT_GRACE_HOURS)
    changed = 0
    seen: set[int] = set()
    while True:
        with transaction.atomic():
            due = list(
                Commitment.objects.filter(status=CommitmentStatus.OPEN, due_at__lte=now)
                .exclude(pk__in=seen)
                .select_related("case__customer", "customer")
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("due_at", "id")[:FLAG_BATCH]
            )
            for commitment in due:
                seen.add(commitment.pk)
                case = commitment.case
                grace = grace_by_queue_priority.get((case.queue_id, case.priority), default_grace)
                if commitment.due_at + grace <= now:
                    _break_after_grace(commitment, now=now)
                    changed += 1
                elif commitment.overdue_flagged_at is None:
                    commitment.overdue_flagged_at = now
                    commitment.save(update_fields=["overdue_flagged_at"])
                    _record_event(commitment, verb="overdue", actor=None)
                    changed += 1
        if len(due) < FLAG_BATCH:
            return changed


def _break_after_grace(commitment: Commitment, *, now: datetime) -> None:
    lock_marketing_state(commitment.customer_id)
    commitment.status = CommitmentStatus.BROKEN
    commitment.resolved_at = now
    fields = ["status", "resolved_at"]
    if commitment.overdue_flagged_at is None:
        commitment.overdue_flagged_at = now
        fields.append("overdue_flagged_at")
    commitment.save(update_fields=fields)
    _record_event(commitment, verb="broken (not kept within the grace period)", actor=None)
    marketing_state_changed(commitment.customer_id)


def pause_marketing(*, case: Case, actor) -> Case:
    """Hold marketing for the case's customer until the case is solved. Return the fresh case.

    Pausing an already paused case changes and records nothing.
    """
    if actor is None:
        raise PermissionDenied("marketing is paused by a person")
    with transaction.atomic():
        locked = (
            Case.objects.select_related("customer", "queue")
            .select_for_update(of=("self",))
            .get(pk=case.pk)
        )
        check_may_work_case(actor, locked)
        if locked.status not in OPEN_STATUSES:
            raise ValidationError({"case": f"a {locked.status} case cannot pause marketing"})
        if locked.pauses_marketing:
            return locked
        lock_marketing_state(locked.customer_id)
        locked.pauses_marketing = True
        locked.save(update_fields=["pauses_marketing", "updated_at"])
        record_case_event(
            case=locked,
            title=f"Marketing paused until case #{locked.pk} is solved",
            actor=actor,
            status="marketing_paused",
        )
        publish_case_changed(locked)
        marketing_state_changed(locked.customer_id)
    return locked


def _record_event(commitment: Commitment, *, verb: str, actor) -> None:
    due = timezone.localtime(commitment.due_at).strftime("%d %b %Y %H:%M")
    record_interaction(
        customer=live_customer(commitment.customer),
        channel=Channel.SYSTEM,
        kind=Kind.COMMITMENT_EVENT,
        direction=Direction.INTERNAL,
        title=f"Commitment {verb}: {commitment.get_kind_display()}, due {due}",
        body_text=commitment.text,
        actor=actor,
        actor_label="" if actor is not None else "Workbench",
        subject=commitment,
        status=commitment.status if verb != "overdue" else "overdue",
        data={"case_id": commitment.case_id, "commitment_id": commitment.pk},
    )
    publish_case_changed(commitment.case)
