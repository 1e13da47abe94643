"""Merging cases: two cases of one customer about one matter become one; the other closes.

What the merged case (the source) was about moves to the case that survives (the target): the
timeline entries whose subject is the source case, and its commitments (with them the entries
about those commitments, whose subject is the commitment). The source is closed with
`merged_into` pointing at the target, so its page and the API lead there.

The target keeps its own SLA clock, priority, queue and assignee: it is the case being worked.
Two facts of the source that hold marketing back are carried over, so closing the source never
releases a hold while the matter is still open: its topics (the contact policy's topic
conflict) and an agent's marketing pause.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from cases.holds import lock_marketing_state, marketing_state_changed
from cases.lifecycle import check_may_work_case, record_case_event
from cases.models import Case, Commitment, CommitmentStatus, Status
from cases.sla import apply_sla, publish_case_changed
from customers.models import Interaction
from workbench import roles
from workbench.audit import record_audit

AUDIT_ACTION = "case.merge"


@dataclass(frozen=True)
class CaseMergePreview:
    """What `merge_cases` would move from the source to the target."""

    source: Case
    target: Case
    interactions: int  # timeline entries about the source case itself
    commitments: int  # all of the source's commitments, whatever their status
    open_commitments: int  # of which still open (they hold marketing)

    @property
    def total(self) -> int:
        return self.interactions + self.commitments


def check_can_merge_cases(*, source: Case, target: Case) -> None:
    """ValidationError (keyed by `target` or `source`) unless `source` may merge into `target`.

    Refused: the same case twice, cases of two customers, a case already closed or merged.
    """
    if source.pk == target.pk:
        raise ValidationError(
            {"target": "A case cannot be merged into itself: pick another case."}, code="same"
        )
    if source.customer_id != target.customer_id:
        raise ValidationError(
            {
                "target": f"Case #{target.pk} is for another customer: only cases of the same "
                f"customer can be merged."
            },
            code="other_customer",
        )
    check_case_is_mergeable(case=source, field="source")
    check_case_is_mergeable(case=target, field="target")


def check_case_is_mergeable(*, case: Case, field: str = "source") -> None:
    """ValidationError keyed by `field` when the case was merged already or is closed."""
    if case.merged_into_id is not None:
        raise ValidationError(
            {field: f"Case #{case.pk} was already merged into case #{case.merged_into_id}."},
            code="merged",
        )
    if case.status == Status.CLOSED:
        raise ValidationError({field: f"Case #{case.pk} is closed."}, code="closed")


def _case_subject(case: Case):
    """The source's own timeline entries (subject = this case)."""
    case_type = ContentType.objects.get_for_model(Case)
    return Interaction.objects.filter(subject_type=case_type, subject_id=case.pk)


def preview_case_merge(*, source: Case, target: Case) -> CaseMergePreview:
    """Count what merging `source` into `target` would move, changing nothing.

    Raises ValidationError for a merge `merge_cases` would refuse.
    """
    check_can_merge_cases(source=source, target=target)
    commitments = Commitment.objects.filter(case_id=source.pk)
    return CaseMergePreview(
        source=source,
        target=target,
        interactions=_case_subject(source).count(),
        commitments=commitments.count(),
        open_commitments=commitments.filter(status=CommitmentStatus.OPEN).count(),
    )


def merge_cases(*, source: Case, target: Case, actor, now: datetime | None = None) -> Case:
    """Merge `source` into `target`: move its entries and commitments, close it; return target.

    The actor must be allowed to work both cases (PermissionDenied otherwise): service only,
    agents on cases of their queues or assigned to them. Refuses (ValidationError) the same case,
    cases of two customers, and a closed or merged case — checked again after both rows are
    locked, in primary-key order so two merges of the same pair cannot deadlock. Everything
    happens in one transaction: either all moves or nothing does. Both cases get a timeline
    entry, the audit log an entry, and both cases and their queues hear of it after commit.
    """
    if actor is None or not roles.can_work_cases(actor):
        raise PermissionDenied("Only service agents and supervisors merge cases.")
    check_may_work_case(actor, source)
    check_may_work_case(actor, target)
    check_can_merge_cases(source=source, target=target)
    now = now or timezone.now()
    with transaction.atomic():
        locked = {
            case.pk: case
            for case in Case.objects.select_related("customer", "queue__calendar")
            .select_for_update(of=("self",))
            .filter(pk__in=[source.pk, target.pk])
            .order_by("pk")
        }
        if len(locked) != 2:
            raise ValidationError({"target": "One of the cases no longer exists."})
        source, target = locked[source.pk], locked[target.pk]
        check_may_work_case(actor, source)
        check_may_work_case(actor, target)
        check_can_merge_cases(source=source, target=target)

        moved_interactions = _case_subject(source).update(subject_id=target.pk)
        moved_commitments = Commitment.objects.filter(case_id=source.pk).update(case=target)

        target_fields = []
        topics = sorted(set(target.topics) | set(source.topics))
        if topics != target.topics:
            target.topics = topics
            target_fields.append("topics")
        if source.pauses_marketing and not target.pauses_marketing:
            target.pauses_marketing = True
            target_fields.append("pauses_marketing")
        # Closing the source and widening the target's topics change what holds marketing.
        lock_marketing_state(target.customer_id)
        if target_fields:
            target.save(update_fields=[*target_fields, "updated_at"])

        previous = source.status
        source.status = Status.CLOSED
        source.closed_at = now
        source.merged_into = target
        source.save(
            update_fields=[
                "status",
                "closed_at",
                "merged_into",
                "updated_at",
                *apply_sla(source, now=now),
            ]
        )

        details = {
            "source_id": source.pk,
            "target_id": target.pk,
            "source_status": previous,
            "moved": {"interactions": moved_interactions, "commitments": moved_commitments},
        }
        title = f"Case #{source.pk} merged into #{target.pk}"
        record_case_event(case=source, title=title, actor=actor, status="merged", data=details)
        record_case_event(
            case=target,
            title=f"{title}: {_moved_text(moved_interactions, moved_commitments)} moved here",
            actor=actor,
            status="merged",
            data=details,
        )
        record_audit(actor=actor, action=AUDIT_ACTION, target=target, details=details)
        publish_case_changed(source)
        publish_case_changed(target)
        marketing_state_changed(target.customer_id)
    return target


def _moved_text(interactions: int, commitments: int) -> str:
    return (
        f"{interactions} interaction{'s' if interactions != 1 else ''} and "
        f"{commitments} commitment{'s' if commitments != 1 else ''}"
    )
