"""Live fragments of marketing: the campaign page's progress bar and holds, and the
"Marketing for this customer" panel on the case view and the customer page.

The progress fragment is the same pair of partials the campaign page renders, from the same
context function, for the receiving user; a viewer who may not read campaigns gets nothing.
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db.models import Exists, F, OuterRef
from django.template.loader import render_to_string
from django.utils import timezone

from campaigns.models import Campaign, CampaignStatus, Touch, TouchStatus
from campaigns.overrides import PROGRESS_EVENT
from campaigns.policy import forecast_for_customer
from campaigns.views import DETAIL, progress_context
from workbench import realtime, roles

PANEL = "campaigns/_customer_panel.html"
# Touches of these campaigns are still to come (or waiting on a hold).
WAITING_CAMPAIGNS = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING, CampaignStatus.PAUSED)
PANEL_LIMIT = 20
# Scheduled campaigns with no touches yet that the panel checks this customer against: one
# policy statement each, so the next few by start time, never all of them.
SCHEDULED_LIMIT = 20


def render_campaign_progress(viewer, *, campaign_id: int, **_data) -> str:
    if not roles.can_read_campaigns(viewer):
        return ""
    campaign = Campaign.objects.select_related("segment", "owner").filter(pk=campaign_id).first()
    if campaign is None:
        return ""
    context = progress_context(viewer, campaign)
    context["is_live"] = True
    return render_to_string(f"{DETAIL}#campaign-progress", context) + render_to_string(
        f"{DETAIL}#campaign-holds", context
    )


def waiting_touches_for(customer_id: int):
    """A customer's pending and held touches of live campaigns, soonest first."""
    return (
        Touch.objects.filter(
            customer_id=customer_id,
            status__in=(TouchStatus.PENDING, TouchStatus.HELD),
            campaign__status__in=WAITING_CAMPAIGNS,
        )
        .select_related("campaign")
        .order_by("status", "campaign__scheduled_at", "id")
    )


def scheduled_campaigns_for(customer_id: int):
    """The next SCHEDULED_LIMIT scheduled campaigns that have no touch for this customer yet
    (not materialised), soonest first: those the panel forecasts for them."""
    touched = Touch.objects.filter(campaign_id=OuterRef("pk"), customer_id=customer_id)
    return (
        Campaign.objects.filter(status=CampaignStatus.SCHEDULED, materialised_at__isnull=True)
        .exclude(Exists(touched))
        .select_related("segment")
        .order_by(F("scheduled_at").asc(nulls_first=True), "id")[:SCHEDULED_LIMIT]
    )


def _zone(name: str) -> tzinfo:
    """The customer's zone for showing a time; PostgreSQL knows a few names Python does not, and
    the case view must not fail on one (UTC then, as the policy does for unknown names)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def render_customer_panel(viewer, customer_id: int) -> str:
    """What marketing has scheduled or held for this customer, and why (every role reads it;
    the campaign links only for those who may open campaigns).

    Besides the customer's touches, the scheduled campaigns not started yet whose segment
    includes them, with when they would go in the customer's own time and, when the contact
    policy would hold them (an open commitment, a complaint…), the policy's own reason: the
    agent is warned before the touch exists. Suppressed forecasts (no consent, no handle) are
    left out: nothing will be sent. Queries: one for the touches, one for the scheduled
    campaigns and, when there are any, the policy, the overrides and one statement per
    campaign (at most SCHEDULED_LIMIT), in one transaction.
    """
    touches = list(waiting_touches_for(customer_id)[: PANEL_LIMIT + 1])
    scheduled = list(scheduled_campaigns_for(customer_id))
    forecasts = [
        {"forecast": forecast, "zone": _zone(forecast.timezone)}
        for forecast in forecast_for_customer(
            customer_id=customer_id, campaigns=scheduled, now=timezone.now()
        )
        if not forecast.is_suppressed
    ]
    rows = [
        {
            "touch": touch,
            "campaign": touch.campaign,
            "when": touch.held_at
            if touch.status == TouchStatus.HELD
            else touch.not_before or touch.campaign.scheduled_at,
        }
        for touch in touches[:PANEL_LIMIT]
    ]
    context = {
        "rows": rows,
        "forecasts": forecasts,
        "is_cut": len(touches) > PANEL_LIMIT,
        "may_open_campaigns": bool(roles.can_read_campaigns(viewer)),
        "viewer": viewer,
    }
    return render_to_string(PANEL, context)


realtime.register_fragment(PROGRESS_EVENT, render_campaign_progress, per_user=True)
