"""A campaign's lifecycle: who may schedule, pause, resume, cancel; what each does; and that no
path a marketer has turns a held customer into a sent one."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from campaigns import dispatch
from campaigns.editing import update_campaign
from campaigns.lifecycle import (
    cancel_campaign,
    finish_campaign,
    pause_campaign,
    resume_campaign,
    schedule_campaign,
)
from campaigns.models import CampaignStatus, ContactPolicy, Touch
from customers.models import Interaction
from tests.campaigns.factories import CampaignFactory, reachable_customer
from tests.cases.factories import CaseFactory, CommitmentFactory, ensure_case_events_render

NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _setup(db, django_capture_on_commit_callbacks):
    ensure_case_events_render()
    with django_capture_on_commit_callbacks(execute=False):
        yield


@pytest.fixture
def draft(marketer):
    return CampaignFactory(
        status=CampaignStatus.DRAFT, owner=marketer, schedule_mode="at",
        scheduled_at=NOON + timedelta(hours=2),
    )  # fmt: skip


def test_owner_schedules_a_draft_with_the_preflight_of_the_current_policy(marketer, draft):
    reachable_customer(display_name="Ann Lee")

    campaign = schedule_campaign(campaign=draft, actor=marketer, now=NOON)

    draft.refresh_from_db()
    assert draft.status == "scheduled"
    assert draft.scheduled_at == NOON + timedelta(hours=2)
    assert draft.preflight_policy == ContactPolicy.objects.order_by("-version").first()
    assert draft.preflight_at == NOON
    assert campaign.status == "scheduled"
    assert not Touch.objects.exists()  # nothing is materialised before its time


def test_send_now_starts_from_the_moment_it_is_scheduled(marketer):
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, owner=marketer, schedule_mode="now")

    schedule_campaign(campaign=campaign, actor=marketer, now=NOON)

    campaign.refresh_from_db()
    assert (campaign.status, campaign.scheduled_at) == ("scheduled", NOON)


@pytest.mark.parametrize("role", ["agent", "supervisor", "cco"])
def test_only_marketers_schedule(make_user, draft, role):
    with pytest.raises(PermissionDenied):
        schedule_campaign(campaign=draft, actor=make_user(role), now=NOON)
    draft.refresh_from_db()
    assert draft.status == "draft"
    assert draft.preflight_at is None


def test_another_marketer_cannot_schedule_the_owners_draft(make_user, draft):
    with pytest.raises(PermissionDenied):
        schedule_campaign(campaign=draft, actor=make_user("marketer"), now=NOON)
    draft.refresh_from_db()
    assert draft.status == "draft"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"scheduled_at": NOON - timedelta(minutes=1)}, "scheduled_at"),
        ({"scheduled_at": None}, "scheduled_at"),
        ({"schedule_mode": "local_window", "window_start_hour": None}, "window_start_hour"),
        ({"subject": ""}, "subject"),
        ({"content": "  "}, "content"),
        ({"content": "Hi {{ settings.SECRET_KEY }}"}, "content"),
        ({"channel": "pigeon"}, "channel"),
        ({"ends_at": NOON + timedelta(hours=1)}, "ends_at"),
    ],
)
def test_an_incomplete_draft_is_not_scheduled(marketer, draft, changes, field):
    for name, value in changes.items():
        setattr(draft, name, value)
    draft.save()

    with pytest.raises(ValidationError) as refused:
        schedule_campaign(campaign=draft, actor=marketer, now=NOON)

    assert field in refused.value.message_dict
    draft.refresh_from_db()
    assert (draft.status, draft.preflight_at) == ("draft", None)


def test_agents_cannot_pause_resume_or_cancel(make_user, marketer, draft):
    schedule_campaign(campaign=draft, actor=marketer, now=NOON)
    agent = make_user("agent")
    for action in (pause_campaign, resume_campaign, cancel_campaign):
        with pytest.raises(PermissionDenied):
            action(campaign=draft, actor=agent)
    draft.refresh_from_db()
    assert draft.status == "scheduled"


def test_pause_and_resume_before_the_start_returns_to_scheduled(make_user, marketer, draft):
    schedule_campaign(campaign=draft, actor=marketer, now=NOON)
    colleague = make_user("marketer")

    assert pause_campaign(campaign=draft, actor=colleague).status == "paused"
    with pytest.raises(ValidationError):
        pause_campaign(campaign=draft, actor=colleague)
    assert resume_campaign(campaign=draft, actor=colleague).status == "scheduled"
    with pytest.raises(ValidationError):
        resume_campaign(campaign=draft, actor=colleague)


def test_a_draft_is_neither_paused_nor_cancelled_by_another_marketer(make_user, draft):
    colleague = make_user("marketer")
    with pytest.raises(ValidationError):
        pause_campaign(campaign=draft, actor=colleague)
    with pytest.raises(PermissionDenied):
        cancel_campaign(campaign=draft, actor=colleague)
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_cancelling_a_sending_campaign_expires_what_waits_and_keeps_what_was_sent(marketer):
    ann = reachable_customer(display_name="Ann Lee")
    bob = reachable_customer(display_name="Bob Stone")
    cara = reachable_customer(display_name="Cara Diaz")
    campaign = CampaignFactory(status=CampaignStatus.SENDING, owner=marketer, started_at=NOON)
    Touch.objects.create(campaign=campaign, customer=ann, status="sent", sent_at=NOON)
    Touch.objects.create(campaign=campaign, customer=bob, status="pending")
    Touch.objects.create(campaign=campaign, customer=cara, status="held", reason="agent_pause")

    cancel_campaign(campaign=campaign, actor=marketer, now=NOON)

    campaign.refresh_from_db()
    assert (campaign.status, campaign.finished_at) == ("cancelled", NOON)
    statuses = dict(Touch.objects.values_list("customer_id", "status"))
    assert statuses == {ann.pk: "sent", bob.pk: "expired", cara.pk: "expired"}
    with pytest.raises(ValidationError):
        resume_campaign(campaign=campaign, actor=marketer)


def test_finish_waits_for_pending_touches_then_expires_the_held(marketer):
    ann = reachable_customer(display_name="Ann Lee")
    bob = reachable_customer(display_name="Bob Stone")
    campaign = CampaignFactory(status=CampaignStatus.SENDING, owner=marketer, started_at=NOON)
    pending = Touch.objects.create(campaign=campaign, customer=ann, status="pending")
    held = Touch.objects.create(campaign=campaign, customer=bob, status="held", reason="cool_off")

    assert finish_campaign(campaign=campaign, now=NOON) is False
    Touch.objects.filter(pk=pending.pk).update(status="sent", sent_at=NOON)
    assert finish_campaign(campaign=campaign, now=NOON) is True

    campaign.refresh_from_db()
    held.refresh_from_db()
    assert campaign.status == "done"
    assert (held.status, held.reason) == ("expired", "cool_off")


def test_held_touches_wait_until_the_campaigns_end(marketer):
    bob = reachable_customer(display_name="Bob Stone")
    campaign = CampaignFactory(
        status=CampaignStatus.SENDING, owner=marketer, started_at=NOON,
        ends_at=NOON + timedelta(days=2),
    )  # fmt: skip
    held = Touch.objects.create(campaign=campaign, customer=bob, status="held", reason="cool_off")

    assert finish_campaign(campaign=campaign, now=NOON) is False
    assert finish_campaign(campaign=campaign, now=NOON + timedelta(days=2)) is True
    held.refresh_from_db()
    assert held.status == "expired"


# --- a marketer cannot send to a held customer by any path of the lifecycle -------------------


@pytest.fixture
def held_customer_campaign(marketer):
    """A sending campaign (ending in a week) whose one customer is held by an open commitment."""
    ann = reachable_customer(display_name="Ann Lee")
    CommitmentFactory(case=CaseFactory(customer=ann))
    campaign = CampaignFactory(
        status=CampaignStatus.DRAFT, owner=marketer, schedule_mode="now",
        ends_at=timezone.now() + timedelta(days=7),
    )  # fmt: skip
    schedule_campaign(campaign=campaign, actor=marketer)
    dispatch.start_due_campaigns(now=timezone.now())
    assert Touch.objects.get(campaign=campaign, customer=ann).status == "held"
    return campaign, ann


def _was_sent_to(customer) -> bool:
    return (
        Touch.objects.filter(customer=customer, status="sent").exists()
        or Interaction.objects.filter(customer=customer, kind="campaign_touch").exists()
    )


def test_rescheduling_a_running_campaign_is_refused(marketer, held_customer_campaign):
    campaign, ann = held_customer_campaign

    with pytest.raises(ValidationError):
        schedule_campaign(campaign=campaign, actor=marketer)

    campaign.refresh_from_db()
    assert campaign.status == "sending"
    assert Touch.objects.filter(campaign=campaign).count() == 1
    assert not _was_sent_to(ann)


def test_editing_a_running_campaign_is_refused(marketer, held_customer_campaign):
    campaign, ann = held_customer_campaign

    with pytest.raises(ValidationError):
        update_campaign(
            campaign=campaign, actor=marketer, name="Retry", channel="email", subject="Hi",
            content="Hello", segment=campaign.segment, topics=[], schedule_mode="now",
        )  # fmt: skip

    campaign.refresh_from_db()
    assert campaign.name != "Retry"
    assert not _was_sent_to(ann)


def test_pausing_and_resuming_releases_nobody(marketer, held_customer_campaign):
    campaign, ann = held_customer_campaign

    pause_campaign(campaign=campaign, actor=marketer)
    resume_campaign(campaign=campaign, actor=marketer)
    dispatch.dispatch_chunk(campaign_id=campaign.pk)
    dispatch.release_held_touches(now=timezone.now())
    dispatch.dispatch_chunk(campaign_id=campaign.pk)

    assert Touch.objects.get(campaign=campaign, customer=ann).status == "held"
    assert not _was_sent_to(ann)


def test_cancelling_and_copying_the_campaign_still_holds_the_customer(
    marketer, held_customer_campaign
):
    campaign, ann = held_customer_campaign
    cancel_campaign(campaign=campaign, actor=marketer)
    copy = CampaignFactory(
        status=CampaignStatus.DRAFT, owner=marketer, schedule_mode="now", segment=campaign.segment
    )

    schedule_campaign(campaign=copy, actor=marketer)
    dispatch.start_due_campaigns(now=timezone.now())
    dispatch.dispatch_chunk(campaign_id=copy.pk)

    # Held, and (the copy has no end: it ended with its last send) expired with its reason.
    touch = Touch.objects.get(campaign=copy, customer=ann)
    assert (touch.status, touch.reason) == ("expired", "open_commitment")
    assert not _was_sent_to(ann)
