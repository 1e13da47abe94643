"""A case's life: opening, status transitions, assignment, reopening and auto-closing.

Every change is one transaction that locks the case row, writes a timeline entry (kind
`case_event`, subject = the case) with the actor, recomputes the SLA clock, and publishes
"case.changed" to the case and "queue.changed" to its queue after commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from cases.access import can_work_case, may_assign_to_others
from cases.holds import lock_marketing_state, marketing_state_changed
from cases.models import PRIORITY_RANK, Case, Priority, Queue, Status
from cases.sla import apply_sla, publish_case_changed
from customers.identity import live_customer
from customers.models import Channel, Customer, Direction, Kind
from customers.timeline import record_interaction
from workbench import roles

# Where a status may go next. The flow is new → open → pending ↔ open → solved → closed; an
# agent may also answer a new case straight into pending or solved, solve a pending case the
# customer confirmed elsewhere, and reopen a solved one (as a customer reply does). Closed is
# final: a customer writing again gets a new case.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.NEW: frozenset({Status.OPEN, Status.PENDING, Status.SOLVED}),
    Status.OPEN: frozenset({Status.PENDING, Status.SOLVED}),
    Status.PENDING: frozenset({Status.OPEN, Status.SOLVED}),
    Status.SOLVED: frozenset({Status.OPEN, Status.CLOSED}),
    Status.CLOSED: frozenset(),
}
CLOSE_BATCH = 200


def may_work_case(user, case: Case) -> bool:
    """The one rule of `cases.access`: service works the cases of its queues and those assigned
    to it (supervisors included: their team is their queues); the CCO works none."""
    return can_work_case(user, case)


def check_may_work_case(actor, case: Case) -> None:
    """PermissionDenied unless `actor` may work the case; None stands for the system itself."""
    if actor is not None and not may_work_case(actor, case):
        raise PermissionDenied("you may not work on this case")


def record_case_event(
    *, case: Case, title: str, actor=None, status: str = "", data: dict | None = None
):
    """Append a case event to the customer's timeline, about this case."""
    interaction, _ = record_interaction(
        customer=live_customer(case.customer),
        channel=Channel.SYSTEM,
        kind=Kind.CASE_EVENT,
        direction=Direction.INTERNAL,
        title=title,
        actor=actor,
        actor_label="" if actor is not None else "Workbench",
        subject=case,
        status=status,
        data={"case_id": case.pk, **(data or {})},
    )
    return interaction


def open_case(
    *,
    customer: Customer,
    queue: Queue,
    subject: str,
    channel: str,
    priority: str = Priority.NORMAL,
    thread_key: str = "",
    topics: Iterable[str] = (),
    actor=None,
    now: datetime | None = None,
) -> Case:
    """Open a new case for the customer in `queue`, with its SLA due times computed.

    `actor` None means the system (routing of an inbound message); a user must be service.
    A merged customer's case is opened on the customer that survives.
    """
    if actor is not None and not roles.can_work_cases(actor):
        raise PermissionDenied("you may not open cases")
    subject = (subject or "").strip()
    errors = {}
    if not subject:
        errors["subject"] = "a case needs a subject"
    if priority not in Priority.values:
        errors["priority"] = f"unknown priority {priority!r}"
    if channel not in Channel.values:
        errors["channel"] = f"unknown channel {channel!r}"
    if errors:
        raise ValidationError(errors)
    now = now or timezone.now()
    with transaction.atomic():
        case = Case(
            customer=live_customer(customer),
            queue=queue,
            subject=subject[:300],
            channel=channel,
            priority=priority,
            priority_rank=PRIORITY_RANK[priority],
            thread_key=thread_key,
            topics=sorted({topic.strip().lower() for topic in topics if topic.strip()}),
        )
        apply_sla(case, now=now)
        # A new case may hold marketing (a complaint, a topic conflict): see cases.holds.
        lock_marketing_state(case.customer_id)
        case.save()
        record_case_event(
            case=case, title=f"Case #{case.pk} opened: {case.subject}", actor=actor, status="new"
        )
        publish_case_changed(case)
        marketing_state_changed(case.customer_id)
    return case


def change_status(*, case: Case, status: str, actor, now: datetime | None = None) -> Case:
    """Move the case to `status` if TRANSITIONS allow it; return the fresh case.

    Refuses a transition not in TRANSITIONS (ValidationError) and an actor who may not work the
    case (PermissionDenied), storing nothing either way. Solving stamps `solved_at` (what
    auto-close counts from); reopening clears it.
    """
    if status not in Status.values:
        raise ValidationError({"status": f"unknown status {status!r}"})
    with transaction.atomic():
        locked = _locked(case)
        check_may_work_case(actor, locked)
        _transition(locked, status, actor=actor, now=now or timezone.now())
    return locked


def reopen_on_customer_reply(*, case: Case, now: datetime | None = None) -> Case:
    """A customer wrote on a solved or pending case: it is open again. Others are left alone."""
    with transaction.atomic():
        locked = _locked(case)
        if locked.status in (Status.SOLVED, Status.PENDING):
            _transition(locked, Status.OPEN, actor=None, now=now or timezone.now())
    return locked


def assign_case(*, case: Case, assignee, actor) -> Case:
    """Give the case to `assignee` (None: unassign). Return the fresh case.

    A supervisor assigns the cases of their team's queues to any service user; anyone else (an
    agent, or a supervisor outside the case's queue) may only take a case of a queue they
    belong to for themselves, or give back their own. Assigning the current assignee again
    changes and records nothing.
    """
    if not roles.can_work_cases(actor):
        raise PermissionDenied("you may not assign cases")
    if assignee is not None and not roles.can_work_cases(assignee):
        raise ValidationError({"assignee": f"{assignee} does not work cases"})
    with transaction.atomic():
        locked = _locked(case)
        if not may_assign_to_others(actor, locked):
            _check_agent_may_assign(actor, locked, assignee)
        if locked.assignee_id == (assignee.pk if assignee is not None else None):
            return locked
        if locked.status not in (Status.NEW, Status.OPEN, Status.PENDING):
            raise ValidationError({"case": f"a {locked.status} case cannot be assigned"})
        locked.assignee = assignee
        locked.save(update_fields=["assignee", "updated_at"])
        title = (
            f"Case #{locked.pk} assigned to {assignee.get_full_name() or assignee}"
            if assignee is not None
            else f"Case #{locked.pk} unassigned"
        )
        record_case_event(
            case=locked,
            title=title,
            actor=actor,
            status="assigned" if assignee is not None else "unassigned",
            data={"assignee_id": assignee.pk if assignee is not None else None},
        )
        publish_case_changed(locked)
    return locked


def _check_agent_may_assign(agent, case: Case, assignee) -> None:
    is_self_assign = assignee is not None and assignee.pk == agent.pk
    is_giving_back = assignee is None and case.assignee_id == agent.pk
    if is_self_assign and not case.queue.members.filter(pk=agent.pk).exists():
        raise PermissionDenied("you may only take cases of your queues")
    if not (is_self_assign or is_giving_back):
        raise PermissionDenied("only a supervisor assigns cases to others")


def close_solved_cases(*, now: datetime) -> int:
    """Close every case solved longer ago than its queue's `auto_close_days`; return how many.

    Safe to run twice or at once on two workers: rows are locked with SKIP LOCKED and the
    status is checked under the lock.
    """
    closed = 0
    for queue in Queue.objects.only("pk", "auto_close_days"):
        cutoff = now - timedelta(days=queue.auto_close_days)
        while True:
            with transaction.atomic():
                cases = list(
                    Case.objects.filter(queue=queue, status=Status.SOLVED, solved_at__lte=cutoff)
                    .select_related("customer", "queue__calendar")
                    .select_for_update(skip_locked=True, of=("self",))
                    .order_by("id")[:CLOSE_BATCH]
                )
                for case in cases:
                    _transition(case, Status.CLOSED, actor=None, now=now)
            closed += len(cases)
            if len(cases) < CLOSE_BATCH:
                break
    return closed


def _locked(case: Case) -> Case:
    return (
        Case.objects.select_related("customer", "queue__calendar")
        .select_for_update(of=("self",))
        .get(pk=case.pk)
    )


def _transition(case: Case, status: str, *, actor, now: datetime) -> None:
    """Apply one allowed status change to a locked case, inside the caller's transaction."""
    previous = case.status
    if status not in TRANSITIONS[previous]:
        raise ValidationError(
            {"status": f"a {previous} case cannot become {status}"}, code="transition"
        )
    # Solving starts the cool-off, reopening may hold again: marketing must hear (cases.holds).
    lock_marketing_state(case.customer_id)
    case.status = status
    fields = ["status", "updated_at"]
    if status == Status.SOLVED:
        case.solved_at = now
        fields.append("solved_at")
    elif status == Status.CLOSED:
        case.closed_at = now
        fields.append("closed_at")
    elif previous == Status.SOLVED:
        case.solved_at = None
        fields.append("solved_at")
    fields += apply_sla(case, now=now)
    case.save(update_fields=fields)
    who = "" if actor is not None else " (automatically)"
    record_case_event(
        case=case,
        title=f"Case #{case.pk} {previous} → {status}{who}",
        actor=actor,
        status=status,
        data={"from": previous, "to": status},
    )
    publish_case_changed(case)
    marketing_state_changed(case.customer_id)
