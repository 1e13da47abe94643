"""Dispatch: due campaigns start, each touch is re-checked at send time, sent once, delivered to
the outbox, and what waits is released or expired."""

from datetime import UTC, datetime, time, timedelta

import pytest
from celery import current_app
from django.utils import timezone

from campaigns import dispatch
from campaigns.lifecycle import cancel_campaign, pause_campaign, resume_campaign
from campaigns.models import CampaignStatus, ContactPolicy, Reason, Touch, TouchStatus
from campaigns.tasks import (
    dispatch_chunk_task,
    expire_touches_task,
    release_held_touches_task,
    start_due_campaigns_task,
)
from cases.commitments import keep_commitment, record_commitment
from customers.models import Interaction
from tests.campaigns.factories import (
    CampaignFactory,
    ConsentFactory,
    IdentityFactory,
    reachable_customer,
)
from tests.cases.factories import CaseFactory, CustomerFactory, ensure_case_events_render
from workbench.models import OutboxEmail
from workbench.tasks import deliver_interaction_task, deliver_interactions_task

NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def policy_without_quiet_hours() -> ContactPolicy:
    """The current rules, except that no hour is quiet (the tests run at any time of day)."""
    latest = ContactPolicy.objects.order_by("-version").first()
    return ContactPolicy.objects.create(
        version=(latest.version if latest else 0) + 1,
        quiet_hours_start=time(0),
        quiet_hours_end=time(0),
        cool_off_days=latest.cool_off_days,
        frequency_cap_touches=latest.frequency_cap_touches,
        frequency_cap_days=latest.frequency_cap_days,
    )


def start(campaign, *, now=NOON):
    """Make the campaign due and start it the way beat does; return its touches by customer."""
    campaign.status = CampaignStatus.SCHEDULED
    campaign.scheduled_at = now - timedelta(minutes=1)
    campaign.save(update_fields=["status", "scheduled_at"])
    assert dispatch.start_due_campaigns(now=now) == 1
    return {t.customer_id: t for t in Touch.objects.filter(campaign=campaign)}


def deliver_queued() -> None:
    """What the delivery task does after the send transaction commits (called directly)."""
    ids = list(
        Interaction.objects.filter(kind="campaign_touch", status="queued").values_list(
            "pk", flat=True
        )
    )
    if ids:
        deliver_interactions_task(ids)


@pytest.fixture(autouse=True)
def _setup(db, settings, django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"
    ensure_case_events_render()
    # Enqueued tasks and live events are captured, not sent to the broker: these tests call
    # the tasks themselves.
    with django_capture_on_commit_callbacks(execute=False):
        yield


def test_start_due_campaigns_starts_only_campaigns_whose_time_has_come():
    reachable_customer(display_name="Ann Lee")
    due = CampaignFactory(status=CampaignStatus.SCHEDULED, scheduled_at=NOON - timedelta(seconds=1))
    later = CampaignFactory(status=CampaignStatus.SCHEDULED, scheduled_at=NOON + timedelta(hours=1))

    assert dispatch.start_due_campaigns(now=NOON) == 1

    due.refresh_from_db()
    later.refresh_from_db()
    assert (due.status, due.started_at, due.materialised_at) == ("sending", NOON, NOON)
    assert Touch.objects.filter(campaign=due).count() == 1
    assert later.status == "scheduled"
    assert not Touch.objects.filter(campaign=later).exists()
    # A second poll starts nothing more and makes no second touch.
    assert dispatch.start_due_campaigns(now=NOON) == 0
    assert Touch.objects.filter(campaign=due).count() == 1


def test_dispatch_sends_each_eligible_customer_once_personalised_to_the_outbox():
    ann = reachable_customer(display_name="Ann Lee")
    bob = reachable_customer(display_name="Bob Stone")
    no_consent = CustomerFactory(timezone="UTC")
    campaign = CampaignFactory(
        status=CampaignStatus.DRAFT,
        subject="{{ customer.first_name }}, an offer",
        content="Hi {{ customer.first_name }}!",
    )
    touches = start(campaign)
    assert touches[no_consent.pk].status == "suppressed"

    counts = dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NOON)

    assert counts["sent"] == 2
    sent = Touch.objects.filter(campaign=campaign, status="sent")
    assert sorted(sent.values_list("customer_id", flat=True)) == sorted([ann.pk, bob.pk])
    entry = Interaction.objects.get(customer=ann, kind="campaign_touch")
    touch = touches[ann.pk]
    assert entry.direction == "out"
    assert entry.channel == "email"
    assert entry.status == "queued"
    assert entry.external_id == f"touch-{touch.pk}"
    assert entry.body_text == "Hi Ann!"
    assert entry.title == "Ann, an offer"
    assert entry.subject_id == touch.pk
    assert entry.data["campaign_id"] == campaign.pk
    assert entry.data["to"] == ann.identities.get().handle
    touch.refresh_from_db()
    assert (touch.sent_at, touch.interaction_id) == (NOON, entry.pk)

    deliver_queued()

    mail = OutboxEmail.objects.get(to=ann.identities.get().handle)
    assert (mail.subject, mail.body) == ("Ann, an offer", "Hi Ann!")
    assert mail.message_id == entry.data["message_id"]
    assert OutboxEmail.objects.count() == 2
    entry.refresh_from_db()
    assert entry.status == "sent"
    # The campaign finished with its last chunk; running the chunk again sends nothing.
    campaign.refresh_from_db()
    assert campaign.status == "done"
    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NOON)["sent"] == 0
    assert Interaction.objects.filter(kind="campaign_touch").count() == 2


def test_commitment_recorded_after_materialisation_holds_the_touch_at_send_time(agent):
    policy_without_quiet_hours()
    ann = reachable_customer(display_name="Ann Lee")
    bob = reachable_customer(display_name="Bob Stone")
    campaign = CampaignFactory(
        status=CampaignStatus.DRAFT, ends_at=timezone.now() + timedelta(days=7)
    )
    touches = start(campaign, now=timezone.now())
    assert touches[ann.pk].status == "pending"
    case = CaseFactory(customer=ann, assignee=agent)
    record_commitment(
        case=case, kind="refund", text="Refund £20", due_at=timezone.now() + timedelta(days=3),
        actor=agent,
    )  # fmt: skip

    dispatch.dispatch_chunk(campaign_id=campaign.pk)

    held = Touch.objects.get(campaign=campaign, customer=ann)
    assert (held.status, held.reason, held.sent_at) == ("held", Reason.OPEN_COMMITMENT, None)
    assert "Refund" in held.reason_detail
    assert not Interaction.objects.filter(customer=ann, kind="campaign_touch").exists()
    assert Touch.objects.get(campaign=campaign, customer=bob).status == "sent"


def test_held_touch_is_sent_once_its_commitment_is_kept(agent):
    policy_without_quiet_hours()
    ann = reachable_customer(display_name="Ann Lee")
    case = CaseFactory(customer=ann, assignee=agent)
    commitment = record_commitment(
        case=case, kind="callback", text="Call back", due_at=timezone.now() + timedelta(days=1),
        actor=agent,
    )  # fmt: skip
    campaign = CampaignFactory(
        status=CampaignStatus.DRAFT, ends_at=timezone.now() + timedelta(days=7)
    )
    touches = start(campaign, now=timezone.now())
    assert touches[ann.pk].status == "held"
    dispatch.dispatch_chunk(campaign_id=campaign.pk)
    campaign.refresh_from_db()
    assert campaign.status == "sending"  # held touches wait for the reason to clear until the end

    keep_commitment(commitment=commitment, actor=agent)
    dispatch.release_held_touches(now=timezone.now())
    dispatch.dispatch_chunk(campaign_id=campaign.pk)

    touch = Touch.objects.get(pk=touches[ann.pk].pk)
    assert touch.status == "sent"
    assert Interaction.objects.filter(customer=ann, kind="campaign_touch").count() == 1


def test_quiet_hours_delay_the_touch_until_the_customers_morning():
    tokyo = reachable_customer(display_name="Kenji Sato", timezone="Asia/Tokyo")  # 21:00 local
    campaign = CampaignFactory(status=CampaignStatus.DRAFT)
    touches = start(campaign)
    assert touches[tokyo.pk].status == "pending"
    assert touches[tokyo.pk].not_before == datetime(2026, 6, 10, 23, 0, tzinfo=UTC)  # 08:00 JST

    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NOON)["sent"] == 0
    campaign.refresh_from_db()
    assert campaign.status == "sending"

    morning = datetime(2026, 6, 10, 23, 5, tzinfo=UTC)
    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=morning)["sent"] == 1
    assert Touch.objects.get(pk=touches[tokyo.pk].pk).sent_at == morning


def test_a_paused_campaign_sends_nothing_until_resumed(marketer):
    ann = reachable_customer(display_name="Ann Lee")
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, owner=marketer)
    start(campaign)
    pause_campaign(campaign=campaign, actor=marketer)

    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NOON)["sent"] == 0
    assert Touch.objects.get(campaign=campaign, customer=ann).status == "pending"

    resume_campaign(campaign=campaign, actor=marketer)
    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NOON)["sent"] == 1


def test_a_cancelled_campaign_sends_nothing_and_its_waiting_touches_expire(marketer):
    ann = reachable_customer(display_name="Ann Lee")
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, owner=marketer)
    start(campaign)
    cancel_campaign(campaign=campaign, actor=marketer, now=NOON)

    assert (
        dispatch.send_touches(
            campaign_id=campaign.pk,
            touch_ids=list(Touch.objects.filter(campaign=campaign).values_list("pk", flat=True)),
            from_status=TouchStatus.PENDING,
            now=NOON,
        ).sent
        == 0
    )
    touch = Touch.objects.get(campaign=campaign, customer=ann)
    assert touch.status == "expired"
    assert not Interaction.objects.filter(kind="campaign_touch").exists()


def test_expire_touches_ends_campaigns_past_their_end():
    ann = reachable_customer(display_name="Ann Lee")
    reachable_customer(display_name="Bob Stone")
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, ends_at=NOON + timedelta(days=1))
    start(campaign)
    Touch.objects.filter(campaign=campaign, customer=ann).update(
        status="held", reason=Reason.AGENT_PAUSE
    )

    assert dispatch.expire_touches(now=NOON + timedelta(hours=1)) == 0
    assert dispatch.expire_touches(now=NOON + timedelta(days=1)) == 1

    campaign.refresh_from_db()
    assert campaign.status == "done"
    assert set(Touch.objects.filter(campaign=campaign).values_list("status", flat=True)) == {
        "expired"
    }


def test_progress_counts_touches_by_outcome_in_one_query(django_assert_num_queries):
    reachable_customer(display_name="Ann Lee")
    reachable_customer(display_name="Bob Stone")
    CustomerFactory(timezone="UTC")  # no identity: suppressed
    campaign = CampaignFactory(status=CampaignStatus.DRAFT)
    start(campaign)
    dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NOON)

    with django_assert_num_queries(1):
        progress = dispatch.progress_for(campaign)

    assert progress == {"sent": 2, "held": 0, "suppressed": 1, "failed": 0, "expired": 0,
                        "remaining": 0, "total": 3}  # fmt: skip


def test_a_stalled_campaign_is_handed_out_again():
    reachable_customer(display_name="Ann Lee")
    campaign = CampaignFactory(status=CampaignStatus.DRAFT)
    start(campaign)  # its chunk tasks are never run: as if their worker died

    assert dispatch.resume_stalled_campaigns(now=timezone.now() + timedelta(minutes=5)) == 1
    assert dispatch.resume_stalled_campaigns(now=timezone.now() - timedelta(minutes=5)) == 0


class DownMailBackend:
    """A mail provider that cannot be reached (the single delivery task's retries meet it)."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionError("Connection refused")


def test_a_touch_whose_retried_message_is_finally_given_up_is_failed(settings):
    # A batch hands a message the provider could not take to the single task, which retries
    # it; when that task gives up, the touch must say so, not stay "sent".
    customer = reachable_customer(display_name="Ann Lee")
    campaign = CampaignFactory(status=CampaignStatus.DRAFT)
    start(campaign)
    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NOON)["sent"] == 1
    touch = Touch.objects.get(campaign=campaign, customer=customer)
    message = Interaction.objects.get(pk=touch.interaction_id)
    Interaction.objects.filter(pk=message.pk).update(
        data={**message.data, "delivery_attempts": 4, "delivery_error": "Connection refused"}
    )
    settings.EMAIL_BACKEND = f"{__name__}.DownMailBackend"

    assert deliver_interaction_task(message.pk) == "failed"

    touch.refresh_from_db()
    assert touch.status == "failed"
    assert touch.error == "gave up after 5 attempts: Connection refused"
    assert dispatch.progress_for(campaign)["failed"] == 1
    assert not OutboxEmail.objects.exists()


def test_a_message_that_cannot_be_delivered_marks_its_touch_failed():
    # SMS has no outbound connector: delivery refuses the message, and the touch says so.
    customer = CustomerFactory(display_name="Sam Reed", timezone="UTC")
    IdentityFactory(customer=customer, channel="sms", handle="+447700900123")
    ConsentFactory(customer=customer, purpose="marketing_sms")
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, channel="sms")
    start(campaign)
    assert dispatch.dispatch_chunk(campaign_id=campaign.pk, now=NOON)["sent"] == 1

    deliver_queued()

    touch = Touch.objects.get(campaign=campaign, customer=customer)
    assert touch.status == "failed"
    assert "no outbound connector" in touch.error
    assert dispatch.progress_for(campaign)["failed"] == 1
    assert not OutboxEmail.objects.exists()


def test_beat_polls_the_campaign_sweeps_and_the_tasks_are_registered(settings):
    names = {"campaigns.start_due_campaigns", "campaigns.release_held_touches",
             "campaigns.expire_touches"}  # fmt: skip
    beat = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert names <= set(beat)
    assert all(15 <= beat[name]["schedule"] <= 60 and beat[name]["options"]["expires"]
               for name in names)  # fmt: skip
    current_app.loader.import_default_modules()
    assert names | {"campaigns.dispatch_chunk", "workbench.deliver_interactions"} <= set(
        current_app.tasks
    )


def test_the_tasks_are_doors_that_are_safe_to_run_twice():
    policy_without_quiet_hours()
    ann = reachable_customer(display_name="Ann Lee")
    campaign = CampaignFactory(
        status=CampaignStatus.SCHEDULED, scheduled_at=timezone.now() - timedelta(seconds=1)
    )

    assert start_due_campaigns_task() == 1
    assert start_due_campaigns_task() == 0
    assert dispatch_chunk_task(campaign.pk, 0, None)["sent"] == 1
    assert dispatch_chunk_task(campaign.pk, 0, None)["sent"] == 0
    assert release_held_touches_task() == 0
    assert expire_touches_task() == 0

    touch = Touch.objects.get(campaign=campaign, customer=ann)
    assert touch.status == "sent"
    assert Interaction.objects.filter(external_id=f"touch-{touch.pk}").count() == 1
    campaign.refresh_from_db()
    assert campaign.status == "done"


def test_delivery_is_handed_out_in_bounded_batches(monkeypatch):
    # Re-delivering a stalled campaign can hand out thousands of queued messages at once; each
    # delivery task must stay bounded (the sweep's "sending" grace), none lost or repeated.
    handed: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(dispatch, "DELIVERY_BATCH", 25)
    monkeypatch.setattr(current_app, "send_task", lambda name, args: handed.append((name, args[0])))
    dispatch.deliver_later(list(range(1, 61)))
    assert [name for name, _ in handed] == [dispatch.DELIVER_BATCH_TASK] * 3
    assert [len(ids) for _, ids in handed] == [25, 25, 10]
    assert [i for _, ids in handed for i in ids] == list(range(1, 61))
