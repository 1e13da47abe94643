"""The customer's local send window is checked again at send time: a touch of a local-window
campaign that is released (or handed out) while it is night where the customer lives waits,
pending with its reason, for the window to open, is sent by the release sweep then, and still
expires with the campaign."""

from datetime import UTC, datetime, time, timedelta
from functools import partial

import pytest
from django.db import connection
from django.urls import reverse

from campaigns import dispatch
from campaigns.lifecycle import enqueue_chunks
from campaigns.models import CampaignStatus, ContactPolicy, Touch, TouchStatus
from campaigns.policy import current_policy, reevaluate_customer_touches
from customers.models import Interaction
from tests.campaigns.factories import CampaignFactory, TouchFactory, reachable_customer
from tests.cases.factories import CaseFactory, CommitmentFactory, ensure_case_events_render

# 10 June 2026: London is on BST (UTC+1). The campaign's window is 09:00-17:00 local.
NIGHT = datetime(2026, 6, 10, 2, 0, tzinfo=UTC)  # 03:00 in London
OPENS = datetime(2026, 6, 10, 8, 0, tzinfo=UTC)  # 09:00 in London
MORNING = datetime(2026, 6, 10, 9, 30, tzinfo=UTC)  # 10:30 in London
WAITING = "Waiting for the customer's local send window, from 10 Jun 09:00 local time"


@pytest.fixture(autouse=True)
def _setup(db, settings, django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"
    ensure_case_events_render()
    # Enqueued chunks and live events are captured, not sent: the tests run the sweeps.
    with django_capture_on_commit_callbacks(execute=False):
        yield


def windowed_campaign(**fields):
    fields.setdefault("ends_at", OPENS + timedelta(days=7))
    return CampaignFactory(
        schedule_mode="local_window", window_start_hour=9, window_end_hour=17, **fields
    )


def held_touch(campaign, customer, *, reason="open_commitment"):
    """A touch held for a reason that has since cleared (no commitment is open any more)."""
    return TouchFactory(
        campaign=campaign, customer=customer, status=TouchStatus.HELD, reason=reason,
        reason_detail="Refund promised on case #1", held_at=NIGHT - timedelta(days=1),
    )  # fmt: skip


def no_quiet_hours() -> None:
    """A new policy version with no quiet hour (the rest as shipped)."""
    latest = current_policy()
    ContactPolicy.objects.create(
        version=latest.version + 1, quiet_hours_start=time(0), quiet_hours_end=time(0)
    )


def hand_outs(campaign) -> int:
    """How many times the campaign's pending touches were handed to chunk tasks (after commit,
    which the test's transaction never reaches)."""
    return sum(
        1
        for _savepoints, callback, _robust in connection.run_on_commit
        if isinstance(callback, partial)
        and callback.func is enqueue_chunks
        and callback.keywords == {"campaign_id": campaign.pk}
    )


def sent_messages(customer) -> int:
    return Interaction.objects.filter(customer=customer, kind="campaign_touch").count()


def test_a_touch_released_at_night_waits_for_the_window_and_the_sweep_sends_it_then():
    ann = reachable_customer(display_name="Ann Lee", timezone="Europe/London")
    campaign = windowed_campaign()
    touch = held_touch(campaign, ann)

    assert dispatch.release_held_touches(now=NIGHT) == 1
    dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NIGHT)

    touch.refresh_from_db()
    assert (touch.status, touch.reason, touch.sent_at) == ("pending", "", None)
    assert touch.reason_detail == f"{WAITING} (Europe/London)"
    assert touch.not_before == OPENS
    assert sent_messages(ann) == 0

    # An hour before the window nothing is handed out; when it opens, the sweep hands the
    # campaign out and the re-checked touch goes.
    before = hand_outs(campaign)
    dispatch.release_held_touches(now=OPENS - timedelta(hours=1))
    assert hand_outs(campaign) == before
    dispatch.release_held_touches(now=OPENS)
    assert hand_outs(campaign) == before + 1
    counts = dispatch.dispatch_chunk(campaign_id=campaign.pk, now=OPENS)

    assert counts["sent"] == 1
    touch.refresh_from_db()
    assert (touch.status, touch.sent_at, touch.reason_detail) == ("sent", OPENS, "")
    assert sent_messages(ann) == 1


def test_a_pending_touch_handed_out_at_night_is_delayed_not_sent_nor_failed():
    ann = reachable_customer(timezone="Europe/London")
    campaign = windowed_campaign()
    touch = TouchFactory(campaign=campaign, customer=ann)  # pending, no not_before

    counts = dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NIGHT)

    assert (counts["sent"], counts["delayed"], counts["failed"]) == (0, 1, 0)
    touch.refresh_from_db()
    assert (touch.status, touch.not_before, touch.error) == ("pending", OPENS, "")
    assert touch.reason_detail.startswith(WAITING)
    assert sent_messages(ann) == 0
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.SENDING  # it waits, it does not finish


def test_inside_the_window_a_released_touch_goes_at_once():
    ann = reachable_customer(timezone="Europe/London")
    campaign = windowed_campaign()
    touch = held_touch(campaign, ann)

    assert dispatch.release_held_touches(now=MORNING) == 1
    touch.refresh_from_db()
    assert (touch.status, touch.not_before, touch.reason_detail) == ("pending", None, "")
    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=MORNING)["sent"] == 1
    assert sent_messages(ann) == 1


def test_the_window_is_the_customers_own_clock():
    # 02:00 UTC is 11:00 in Tokyo: inside the window there, night in London. No quiet hours,
    # so only the window keeps London's touch back.
    no_quiet_hours()
    tokyo = reachable_customer(timezone="Asia/Tokyo")
    london = reachable_customer(timezone="Europe/London")
    campaign = windowed_campaign()
    for customer in (tokyo, london):
        TouchFactory(campaign=campaign, customer=customer)

    counts = dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NIGHT)

    assert (counts["sent"], counts["delayed"]) == (1, 1)
    statuses = dict(Touch.objects.filter(campaign=campaign).values_list("customer_id", "status"))
    assert statuses == {tokyo.pk: "sent", london.pk: "pending"}


@pytest.mark.parametrize("zone", ["", "Not/AZone"])
def test_a_customer_without_a_known_timezone_waits_for_the_window_in_utc(zone):
    customer = reachable_customer(timezone=zone)
    campaign = windowed_campaign()
    touch = held_touch(campaign, customer)

    dispatch.release_held_touches(now=NIGHT)

    touch.refresh_from_db()
    assert touch.status == "pending"
    assert touch.not_before == datetime(2026, 6, 10, 9, 0, tzinfo=UTC)
    assert touch.reason_detail == f"{WAITING} (UTC)"


def test_a_hold_that_still_applies_wins_over_the_window():
    ann = reachable_customer(timezone="Europe/London")
    CommitmentFactory(case=CaseFactory(customer=ann), due_at=NIGHT + timedelta(days=3))
    campaign = windowed_campaign()
    touch = held_touch(campaign, ann)

    assert dispatch.release_held_touches(now=NIGHT) == 0

    touch.refresh_from_db()
    assert (touch.status, touch.reason, touch.not_before) == ("held", "open_commitment", None)
    assert touch.reason_detail.startswith("Refund promised on case #")


def test_a_touch_waiting_for_the_window_expires_with_the_campaign():
    ann = reachable_customer(timezone="Europe/London")
    no_quiet_hours()
    campaign = windowed_campaign(ends_at=NIGHT + timedelta(hours=2))  # before the window opens
    touch = held_touch(campaign, ann)
    dispatch.release_held_touches(now=NIGHT)
    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NIGHT)["sent"] == 0

    assert dispatch.expire_touches(now=NIGHT + timedelta(hours=2)) == 1

    touch.refresh_from_db()
    assert touch.status == TouchStatus.EXPIRED
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.DONE
    # The window opening later sends nothing.
    dispatch.release_held_touches(now=OPENS)
    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=OPENS)["sent"] == 0
    assert sent_messages(ann) == 0


def test_service_clearing_a_hold_at_night_leaves_the_touch_waiting_for_the_window():
    ann = reachable_customer(timezone="Europe/London")
    campaign = windowed_campaign()
    touch = held_touch(campaign, ann)

    assert reevaluate_customer_touches(customer_id=ann.pk, now=NIGHT) == 1

    touch.refresh_from_db()
    assert (touch.status, touch.reason, touch.not_before) == ("pending", "", OPENS)
    assert touch.reason_detail.startswith(WAITING)


def test_a_campaign_without_a_window_still_sends_a_released_touch_at_once():
    # Quiet hours are their own rule: with none configured, only a window could delay it, and
    # hours stored on a campaign scheduled "now" are no window.
    no_quiet_hours()
    ann = reachable_customer(timezone="Europe/London")
    campaign = CampaignFactory(
        ends_at=OPENS + timedelta(days=7), window_start_hour=9, window_end_hour=17
    )
    held_touch(campaign, ann)

    dispatch.release_held_touches(now=NIGHT)

    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NIGHT)["sent"] == 1


def test_the_panel_says_the_touch_waits_for_the_customers_window(agent, client_for):
    ann = reachable_customer(display_name="Ann Lee", timezone="Europe/London")
    case = CaseFactory(customer=ann, assignee=agent)
    case.queue.members.add(agent)
    campaign = windowed_campaign(name="Summer offer")
    held_touch(campaign, ann)
    dispatch.release_held_touches(now=NIGHT)

    text = client_for(agent).get(reverse("cases:detail", args=[case.pk])).content.decode()

    assert "Summer offer" in text
    assert f"Waiting: <span hx-disable>{WAITING} (Europe/London)</span>" in text.replace(
        "&#x27;", "'"
    )
