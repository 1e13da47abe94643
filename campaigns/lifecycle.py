"""A campaign's lifecycle: schedule, pause, resume, cancel, finish, end — the status moves and
what each does to the campaign's touches.

    draft ──schedule──▶ scheduled ──(beat: start)──▶ sending ──finish / end──▶ done
                          │  ▲                         │  ▲
                        pause│resume                 pause│resume
                          ▼  │                         ▼  │
                          paused ◀─────────────────────┘  │
    draft, scheduled, sending, paused ──cancel──▶ cancelled

Rules that keep a marketer from sending to anyone the contact policy holds, by any path:
- Only a draft is edited (campaigns.editing) or scheduled, and only by its owner. A scheduled,
  sending or paused campaign is never edited — not its content, not its segment: a paused one is
  resumed or cancelled, and a change means a new draft. So nothing is re-materialised and no
  held touch can be turned back into a pending one by an edit.
- Scheduling happens once: a campaign never returns to draft, and its touches are unique per
  (campaign, customer), so pausing, resuming or "rescheduling" never sends anyone a second one.
- Every send is re-checked against the policy when it happens (campaigns.dispatch); resuming a
  campaign releases nothing by itself.
- Cancelling expires the campaign's pending and held touches (their reason stays, as history):
  the agent's view of "what marketing has waiting for this customer" empties at once.

Every change locks the campaign row (the dispatcher reads it with FOR KEY SHARE inside each
send transaction, so once a pause or a cancel commits, no further touch of it is sent) and
publishes "campaign.progress" to `campaign.<id>` after commit.
"""

from __future__ import annotations

from datetime import datetime

from celery import current_app
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from campaigns.editing import CAMPAIGN_CHANNELS, unknown_placeholders
from campaigns.models import Campaign, CampaignStatus, ScheduleMode, Touch, TouchStatus
from campaigns.policy import current_policy, preflight, publish_campaign_progress
from workbench import roles

# The Celery task that sends one range of a campaign's pending touches (campaigns.tasks).
DISPATCH_CHUNK_TASK = "campaigns.dispatch_chunk"
# Touches per dispatch task: big enough that the broker is not the bottleneck, small enough that
# a killed worker loses little work and many workers share one campaign.
CHUNK_SIZE = 500
WAITING = (TouchStatus.PENDING, TouchStatus.HELD)


# --- who may ---------------------------------------------------------------------------------


def _refuse_unless_marketer(actor) -> None:
    if actor is None or not roles.can_edit_campaigns(actor):
        raise PermissionDenied("Only marketers schedule, pause, resume or cancel campaigns.")


def _refuse_unless_owner(actor, campaign: Campaign) -> None:
    if campaign.owner_id != actor.pk:
        raise PermissionDenied("Only the campaign's owner schedules or cancels its draft.")


def _locked(campaign: Campaign) -> Campaign:
    return Campaign.objects.select_for_update().get(pk=campaign.pk)


def _refuse_unless_status(campaign: Campaign, *allowed: str, action: str) -> None:
    if campaign.status not in allowed:
        raise ValidationError(
            {"status": f"A {campaign.get_status_display().lower()} campaign cannot be {action}."},
            code="wrong_status",
        )


def publish_progress(campaign_id: int) -> None:
    """Tell the campaign's page (after commit) that its status or counts changed."""
    publish_campaign_progress(campaign_id)


# --- schedule --------------------------------------------------------------------------------


def schedule_errors(campaign: Campaign, *, now: datetime) -> dict[str, list[str]]:
    """What stops a draft from being scheduled at `now`, keyed by field (empty: nothing)."""
    errors: dict[str, list[str]] = {}
    if campaign.channel not in dict(CAMPAIGN_CHANNELS):
        errors["channel"] = ["Choose a channel the campaign can be sent on."]
    if not (campaign.content or "").strip():
        errors["content"] = ["Write the message before scheduling."]
    unknown = unknown_placeholders(campaign.content) | unknown_placeholders(campaign.subject)
    if unknown:
        errors.setdefault("content", []).append(
            "Unknown placeholder: " + ", ".join(sorted(unknown)) + "."
        )
    if campaign.channel == "email" and not (campaign.subject or "").strip():
        errors["subject"] = ["An email needs a subject."]
    if campaign.segment_id is None:
        errors["segment"] = ["Choose a segment."]
    mode = campaign.schedule_mode
    if mode == ScheduleMode.AT:
        if campaign.scheduled_at is None:
            errors["scheduled_at"] = ["Give the date and time to send."]
        elif campaign.scheduled_at <= now:
            errors["scheduled_at"] = ["That time has passed: choose a later one, or send now."]
    elif mode == ScheduleMode.LOCAL_WINDOW:
        start, end = campaign.window_start_hour, campaign.window_end_hour
        if start is None or end is None or not (0 <= start < end <= 24):
            errors["window_start_hour"] = ["Give the hours of the customer's day to send in."]
    elif mode != ScheduleMode.NOW:
        errors["schedule_mode"] = ["Choose when to send."]
    starts_at = campaign.scheduled_at if mode != ScheduleMode.NOW else now
    if campaign.ends_at is not None and campaign.ends_at <= max(starts_at or now, now):
        errors["ends_at"] = ["The campaign must end after it starts."]
    return errors


def schedule_campaign(*, campaign: Campaign, actor, now: datetime | None = None) -> Campaign:
    """Draft → scheduled: the owner commits to sending it. Returns the campaign as stored.

    Refuses anyone but a marketer who owns the campaign (PermissionDenied), and a campaign that
    is not a draft, or whose content, channel, segment or schedule is incomplete
    (ValidationError keyed by field; nothing changes then). "Send now" starts from `now`; "at a
    time" needs a future time; "local window" needs its hours and starts at `scheduled_at` or
    now. The preflight runs here (with the current policy, whose version is stored with it), so
    the figures the marketer saw last are the ones scheduling used. Nothing is sent here: the
    beat task `campaigns.start_due_campaigns` starts it when its time comes.
    """
    now = now or timezone.now()
    _refuse_unless_marketer(actor)
    with transaction.atomic():
        locked = _locked(campaign)
        _refuse_unless_owner(actor, locked)
        _refuse_unless_status(locked, CampaignStatus.DRAFT, action="scheduled again")
        errors = schedule_errors(locked, now=now)
        if errors:
            raise ValidationError(errors)
        if locked.schedule_mode == ScheduleMode.NOW or locked.scheduled_at is None:
            locked.scheduled_at = now
        policy = current_policy()
        preflight(campaign=locked, now=now, policy=policy)
        locked.preflight_policy, locked.preflight_at = policy, now
        locked.status = CampaignStatus.SCHEDULED
        locked.save(
            update_fields=[
                "status",
                "scheduled_at",
                "preflight_policy",
                "preflight_at",
                "updated_at",
            ]
        )
        publish_progress(locked.pk)
    return locked


# --- pause, resume, cancel -------------------------------------------------------------------


def pause_campaign(*, campaign: Campaign, actor) -> Campaign:
    """Scheduled or sending → paused (any marketer: stopping is always allowed to marketing).

    Takes effect at once: the campaign row lock waits for the send transactions in flight, and
    every later one sees "paused" and sends nothing. Touches keep their state.
    """
    _refuse_unless_marketer(actor)
    with transaction.atomic():
        locked = _locked(campaign)
        _refuse_unless_status(
            locked, CampaignStatus.SCHEDULED, CampaignStatus.SENDING, action="paused"
        )
        locked.status = CampaignStatus.PAUSED
        locked.save(update_fields=["status", "updated_at"])
        publish_progress(locked.pk)
    return locked


def resume_campaign(*, campaign: Campaign, actor) -> Campaign:
    """Paused → scheduled (not started yet) or sending (any marketer).

    Resuming changes nothing about who is held: each pending touch is re-checked against the
    policy when it is sent, and the held ones wait for their reason to clear as before.
    """
    _refuse_unless_marketer(actor)
    with transaction.atomic():
        locked = _locked(campaign)
        _refuse_unless_status(locked, CampaignStatus.PAUSED, action="resumed")
        started = locked.started_at is not None
        locked.status = CampaignStatus.SENDING if started else CampaignStatus.SCHEDULED
        locked.save(update_fields=["status", "updated_at"])
        if started:
            transaction.on_commit(lambda: enqueue_chunks(campaign_id=locked.pk), robust=True)
        publish_progress(locked.pk)
    return locked


def cancel_campaign(*, campaign: Campaign, actor, now: datetime | None = None) -> Campaign:
    """Draft, scheduled, sending or paused → cancelled; its pending and held touches expire.

    A draft is cancelled by its owner only; a live campaign by any marketer. Sent touches stay
    sent. Returns the campaign as stored.
    """
    now = now or timezone.now()
    _refuse_unless_marketer(actor)
    with transaction.atomic():
        locked = _locked(campaign)
        _refuse_unless_status(
            locked,
            CampaignStatus.DRAFT,
            CampaignStatus.SCHEDULED,
            CampaignStatus.SENDING,
            CampaignStatus.PAUSED,
            action="cancelled",
        )
        if locked.status == CampaignStatus.DRAFT:
            _refuse_unless_owner(actor, locked)
        _expire_waiting(locked, now=now)
        locked.status = CampaignStatus.CANCELLED
        locked.finished_at = now
        locked.save(update_fields=["status", "finished_at", "updated_at"])
        publish_progress(locked.pk)
    return locked


# --- finish and end (the system's moves) -----------------------------------------------------


def finish_campaign(*, campaign: Campaign, now: datetime | None = None) -> bool:
    """Sending → done once nothing is left to send; return whether it finished now.

    Not finished while a touch is pending (even one waiting for the customer's morning), nor,
    when the campaign has an `ends_at` still ahead, while touches are held: they wait for their
    reason to clear until then. Without an end, "the campaign's end" is this moment, and the
    held touches expire. Past `ends_at`, `end_campaign` is what applies.
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked = Campaign.objects.select_for_update(skip_locked=True).filter(pk=campaign.pk)
        locked = locked.first()
        if locked is None or locked.status != CampaignStatus.SENDING:
            return False
        if locked.ends_at is not None and locked.ends_at <= now:
            return _end(locked, now=now)
        touches = Touch.objects.filter(campaign_id=locked.pk)
        if touches.filter(status=TouchStatus.PENDING).exists():
            return False
        if locked.ends_at is not None and touches.filter(status=TouchStatus.HELD).exists():
            return False
        return _end(locked, now=now)


def end_campaign(*, campaign: Campaign, now: datetime | None = None) -> bool:
    """A scheduled, sending or paused campaign past its `ends_at` → done; everything still
    pending or held expires. Return whether it ended now (False: not past its end, or not live).
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked = Campaign.objects.select_for_update(skip_locked=True).filter(pk=campaign.pk)
        locked = locked.first()
        live = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING, CampaignStatus.PAUSED)
        if locked is None or locked.status not in live:
            return False
        if locked.ends_at is None or locked.ends_at > now:
            return False
        return _end(locked, now=now)


def _end(locked: Campaign, *, now: datetime) -> bool:
    _expire_waiting(locked, now=now)
    locked.status = CampaignStatus.DONE
    locked.finished_at = now
    locked.save(update_fields=["status", "finished_at", "updated_at"])
    publish_progress(locked.pk)
    return True


def _expire_waiting(campaign: Campaign, *, now: datetime) -> int:
    """Pending and held touches → expired (the reason they waited for stays on the row)."""
    return Touch.objects.filter(campaign_id=campaign.pk, status__in=WAITING).update(
        status=TouchStatus.EXPIRED, updated_at=now
    )


# --- handing work to the dispatcher ----------------------------------------------------------


def chunk_bounds(*, campaign_id: int, size: int = CHUNK_SIZE) -> list[tuple[int, int | None]]:
    """The campaign's pending touches as id ranges (after_id, up_to_id] of about `size` each.

    One query: every size-th pending id is a boundary; the last range is open (None).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT id FROM (
                SELECT id, row_number() OVER (ORDER BY id) AS n
                FROM campaigns_touch WHERE campaign_id = %s AND status = 'pending'
            ) AS numbered
            WHERE n %% %s = 0 ORDER BY id
            """,
            [campaign_id, size],
        )
        bounds = [row[0] for row in cursor.fetchall()]
    starts = [0, *bounds]
    return [(after, up_to) for after, up_to in zip(starts, [*bounds, None], strict=True)]


def enqueue_chunks(*, campaign_id: int, size: int = CHUNK_SIZE) -> int:
    """Send one dispatch task per range of pending touches; return how many were sent.

    Called after the commit that made the campaign "sending". Sending the same ranges twice is
    harmless (each touch is re-read under its lock and skipped unless still pending).
    """
    ranges = chunk_bounds(campaign_id=campaign_id, size=size)
    for after_id, up_to_id in ranges:
        current_app.send_task(
            DISPATCH_CHUNK_TASK,
            kwargs={"campaign_id": campaign_id, "after_id": after_id, "up_to_id": up_to_id},
        )
    return len(ranges)
