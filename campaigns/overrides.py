"""Overrides: a marketer asks the CCO to send one campaign to customers held for one reason; the
CCO approves or refuses, in writing. Every step is audited; an approval is also written on each
affected customer's timeline, so service sees why marketing reached someone it had held.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from campaigns import policy
from campaigns.models import (
    HOLD_REASONS,
    Campaign,
    CampaignStatus,
    Override,
    OverrideStatus,
    Reason,
    Touch,
    TouchStatus,
)
from customers.models import Channel, Customer, Direction, Kind
from customers.timeline import record_interaction
from workbench import realtime, roles
from workbench.audit import record_audit
from workbench.models import User
from workbench.notifications import notify

# Quiet hours only delay a touch (it is sent in the morning): there is nothing to override.
OVERRIDABLE_REASONS = tuple(reason for reason in HOLD_REASONS if reason != Reason.QUIET_HOURS)
# An override makes sense while the campaign can still send.
OPEN_STATUSES = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING, CampaignStatus.PAUSED)
MAX_TEXT = 2000
PROGRESS_EVENT = "campaign.progress"


def _campaign_url(campaign_id: int) -> str:
    return reverse("campaigns:detail", args=[campaign_id]) + "#overrides"


def request_override(*, campaign: Campaign, reason: str, justification: str, actor) -> Override:
    """Ask the CCO to release `campaign`'s touches held for `reason` (marketers only).

    One open request per campaign and reason (a unique constraint, so two clicks store one);
    a justification is required. The CCOs are notified; the request is audited.
    """
    if not roles.can_edit_campaigns(actor):
        raise PermissionDenied("Only marketers ask for overrides.")
    justification = (justification or "").strip()
    errors = {}
    if reason not in OVERRIDABLE_REASONS:
        errors["reason"] = ["Only a hold (not a suppression or quiet hours) can be overridden."]
    if not justification:
        errors["justification"] = ["Explain to the CCO why these customers should get it."]
    elif len(justification) > MAX_TEXT:
        errors["justification"] = [f"Keep it under {MAX_TEXT} characters."]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if locked.status not in OPEN_STATUSES:
            raise ValidationError(
                f"This campaign is {locked.get_status_display().lower()}: overrides are asked "
                "for scheduled, sending or paused campaigns."
            )
        try:
            with transaction.atomic():
                override = Override.objects.create(
                    campaign=locked, reason=reason, justification=justification, requested_by=actor
                )
        except IntegrityError:
            raise ValidationError(
                {"reason": ["An override for this reason is already waiting or approved."]}
            ) from None
        record_audit(
            actor=actor,
            action="campaign.override_requested",
            target=override,
            details={"campaign_id": locked.pk, "reason": reason},
        )
        label = Reason(reason).label.lower()
        notify(
            recipients=User.objects.filter(groups__name=roles.CCO, is_active=True),
            verb=f"{actor.get_username()} asks for an override on “{locked.name}” ({label})",
            url=_campaign_url(locked.pk),
            key=f"override-requested-{override.pk}",
            actor=actor,
        )
        realtime.publish(
            realtime.group_name("campaign", locked.pk), PROGRESS_EVENT, campaign_id=locked.pk
        )
    return override


def _decide(*, override: Override, actor, note: str, status: str) -> tuple[Override, list[int]]:
    if not roles.is_cco(actor):
        raise PermissionDenied("Only the CCO decides overrides.")
    note = (note or "").strip()
    if not note:
        raise ValidationError({"note": ["Write the reason for your decision."]})
    if len(note) > MAX_TEXT:
        raise ValidationError({"note": [f"Keep it under {MAX_TEXT} characters."]})
    locked = Override.objects.select_for_update().select_related("campaign").get(pk=override.pk)
    if locked.status != OverrideStatus.PENDING:
        raise ValidationError(f"This override was already {locked.get_status_display().lower()}.")
    locked.status = status
    locked.decided_by, locked.decided_at, locked.decision_note = actor, timezone.now(), note
    locked.save(update_fields=["status", "decided_by", "decided_at", "decision_note"])
    affected = list(
        Touch.objects.filter(
            campaign_id=locked.campaign_id, status=TouchStatus.HELD, reason=locked.reason
        ).values_list("customer_id", flat=True)
    )
    return locked, affected


def approve_override(*, override: Override, actor, note: str) -> Override:
    """Approve a waiting override (the CCO only, with a written note).

    Audited with the number of customers it reaches; each customer held for that reason gets a
    timeline entry saying so; the marketer who asked is notified. The campaign's held touches
    are then re-checked (`policy.release_held_touches`): an approved override lifts that reason
    for this campaign, so they become pending unless another reason still holds them.
    """
    with transaction.atomic():
        locked, affected = _decide(
            override=override, actor=actor, note=note, status=OverrideStatus.APPROVED
        )
        campaign = locked.campaign
        label = Reason(locked.reason).label
        record_audit(
            actor=actor,
            action="campaign.override_approved",
            target=locked,
            details={
                "campaign_id": campaign.pk,
                "reason": locked.reason,
                "note": note.strip(),
                "customers": len(affected),
            },
        )
        for customer in Customer.objects.filter(pk__in=affected).order_by("pk"):
            record_interaction(
                customer=customer,
                channel=Channel.SYSTEM,
                kind=Kind.CAMPAIGN_TOUCH,
                direction=Direction.INTERNAL,
                title=f"CCO override: “{campaign.name}” may be sent despite: {label}",
                body_text=locked.decision_note,
                actor=actor,
                external_id=f"override-{locked.pk}-customer-{customer.pk}",
                subject=locked,
            )
        _tell_requester(locked, verb=f"The CCO approved your override on “{campaign.name}”")
        # Re-check the held touches now (the policy skips an approved reason), so they go out
        # with the next dispatch instead of waiting for the beat's sweep.
        policy.release_held_touches(campaign=campaign, now=timezone.now())
        realtime.publish(
            realtime.group_name("campaign", campaign.pk), PROGRESS_EVENT, campaign_id=campaign.pk
        )
    return locked


def refuse_override(*, override: Override, actor, note: str) -> Override:
    """Refuse a waiting override (the CCO only, with a written note); audited, the marketer is
    told. The touches stay held."""
    with transaction.atomic():
        locked, _ = _decide(
            override=override, actor=actor, note=note, status=OverrideStatus.REFUSED
        )
        record_audit(
            actor=actor,
            action="campaign.override_refused",
            target=locked,
            details={
                "campaign_id": locked.campaign_id,
                "reason": locked.reason,
                "note": note.strip(),
            },
        )
        _tell_requester(locked, verb=f"The CCO refused your override on “{locked.campaign.name}”")
        realtime.publish(
            realtime.group_name("campaign", locked.campaign_id),
            PROGRESS_EVENT,
            campaign_id=locked.campaign_id,
        )
    return locked


def _tell_requester(override: Override, *, verb: str) -> None:
    if override.requested_by_id is None:
        return
    notify(
        recipients=User.objects.filter(pk=override.requested_by_id, is_active=True),
        verb=verb,
        url=_campaign_url(override.campaign_id),
        key=f"override-decided-{override.pk}",
        actor=override.decided_by,
    )
