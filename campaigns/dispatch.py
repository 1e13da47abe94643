"""Dispatch: starting due campaigns, sending their touches under the contact policy, releasing
held touches when their reason clears, expiring what a campaign's end leaves waiting.

How a touch is sent, and why it is exactly once and never against an open commitment:
- Beat polls (`start_due_campaigns`); no far-future Celery ETA is ever used (the Redis broker
  redelivers a task whose ETA outlives its visibility timeout, which would send twice). Starting
  a campaign materialises its touches (campaigns.policy, one set-based INSERT … ON CONFLICT DO
  NOTHING) and flips it to "sending" in one transaction, then hands out id ranges of its pending
  touches to `dispatch_chunk` tasks after commit.
- A chunk sends its touches in small groups, each group one short transaction: read the
  campaign's status under FOR KEY SHARE (so a pause or cancel that committed stops it, and one
  in progress waits for it), lock the touches FOR UPDATE and keep only those still pending,
  lock each customer's marketing state (the row lock of cases.holds, which the agent's
  commitment recording takes too), then evaluate the policy (campaigns.policy.evaluate_touches,
  one statement for the group, after the locks) and, in the same transaction, mark the touch
  sent and append the outbound message to the timeline ("queued", external id `touch-<id>`,
  unique per channel). `sent_at` is read from the clock after the locks: a commitment committed
  before it is seen by the check; one recorded after it waits for this commit, so its
  `created_at` is later than every `sent_at` of the group. Lock order is campaign → touches →
  customers (ascending ids), the order cases.holds asks for, so nothing deadlocks with service.
- The queued interactions are handed to delivery (`workbench.deliver_interactions`, by name:
  the connectors live above this app) after the commit. Delivery claims each one queued →
  sending under its row lock, so a redelivered task sends nothing twice.
- A worker killed mid-chunk loses at most the open transaction (rolled back: nothing sent).
  Its task is redelivered by the broker later, and sooner `start_due_campaigns` notices the
  stalled campaign (no heartbeat for `STALLED_AFTER_S`) and hands its pending touches out
  again; queued interactions whose delivery task died are handed to delivery again too.
  Running any of it twice is harmless: a touch is sent only from "pending" under its lock, and
  (campaign, customer) and (channel, external_id) are unique.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import partial

from celery import current_app
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from campaigns import policy as contact_policy
from campaigns.editing import fill_placeholders
from campaigns.lifecycle import end_campaign, enqueue_chunks, finish_campaign, publish_progress
from campaigns.models import (
    HOLD_REASONS,
    Campaign,
    CampaignStatus,
    Reason,
    Touch,
    TouchStatus,
)
from cases.holds import lock_marketing_state
from customers.models import Direction, Identity, Interaction, Kind
from customers.timeline import INTERACTION_EVENT, MAX_BODY_CHARS, MAX_TITLE_CHARS
from workbench import realtime
from workbench.sql import update_rows

# The Celery task that delivers a list of queued outbound interactions (workbench/tasks.py).
DELIVER_BATCH_TASK = "workbench.deliver_interactions"
QUEUED, FAILED = "queued", "failed"
# Touches per send transaction: the customers' locks are held this long, so keep it short.
# 100 holds them for tens of milliseconds (an agent recording a commitment waits that long at
# worst) and sends twice as fast as 25: the per-group statements are shared by more touches.
GROUP_SIZE = 100
# Messages per delivery task (one task per send group). Bounded because a batch must finish
# well inside the sweep's "sending" grace (15 minutes); a provider that is down costs a batch
# one timeout, not one per message (the rest of the batch waits for its retry untried).
DELIVERY_BATCH = 100
# A sending campaign with due pending touches and no chunk progress for this long is handed out
# again (its chunk tasks died with their worker, or were lost).
STALLED_AFTER_S = 60
# Progress is published at most this often per campaign while it sends (the last state always).
PROGRESS_EVERY_S = 1
MAX_DUE_PER_RUN = 50
# Queued messages of a campaign that ended this recently are still re-delivered if stuck.
REDELIVER_WINDOW = timedelta(hours=1)
DELIVERY_HEARTBEAT_KEY = "campaigns:delivery-heartbeat"
# What a send pass may change on a touch.
TOUCH_FIELDS = ["status", "reason", "reason_detail", "not_before", "held_at", "sent_at",
                "interaction_id", "attempts", "error", "updated_at"]  # fmt: skip


@dataclass
class Counts:
    """What one dispatch pass did to the touches it was given."""

    sent: int = 0
    held: int = 0
    suppressed: int = 0
    delayed: int = 0  # quiet hours or local window: still pending, with a not_before
    failed: int = 0
    skipped: int = 0  # no longer pending (sent by another pass, cancelled…) or not due yet

    def add(self, other: Counts) -> None:
        for field, value in asdict(other).items():
            setattr(self, field, getattr(self, field) + value)


# --- starting --------------------------------------------------------------------------------


def start_due_campaigns(*, now: datetime, stalled_after_s: float = STALLED_AFTER_S) -> int:
    """Start every scheduled campaign whose time has come; return how many started.

    Also hands out again the pending touches of sending campaigns that stalled (see the module
    docstring), and delivery of their interactions left queued. Safe to run twice at once: a
    campaign is started under its row lock (SKIP LOCKED), only from "scheduled".
    """
    due = Campaign.objects.filter(status=CampaignStatus.SCHEDULED, scheduled_at__lte=now)
    started = 0
    for campaign_id in due.order_by("scheduled_at", "id").values_list("pk", flat=True)[
        :MAX_DUE_PER_RUN
    ]:
        started += start_campaign(campaign_id=campaign_id, now=now)
    resume_stalled_campaigns(now=now, stalled_after_s=stalled_after_s)
    return started


def start_campaign(*, campaign_id: int, now: datetime) -> bool:
    """Scheduled → sending: materialise the touches, then (after commit) hand out the chunks.

    Materialisation and the status change commit together, so a crash leaves the campaign
    scheduled with no touches, and the next poll starts it again.
    """
    with transaction.atomic():
        campaign = (
            Campaign.objects.select_for_update(skip_locked=True)
            .filter(pk=campaign_id, status=CampaignStatus.SCHEDULED, scheduled_at__lte=now)
            .first()
        )
        if campaign is None:
            return False
        if campaign.materialised_at is None:
            contact_policy.materialise_touches(campaign=campaign, now=now)
            campaign.materialised_at = now
        campaign.status = CampaignStatus.SENDING
        campaign.started_at = now
        campaign.save(update_fields=["status", "materialised_at", "started_at", "updated_at"])
        transaction.on_commit(partial(enqueue_chunks, campaign_id=campaign_id), robust=True)
        publish_progress(campaign_id)
    return True


def resume_stalled_campaigns(*, now: datetime, stalled_after_s: float = STALLED_AFTER_S) -> int:
    """Hand out again the due pending touches of sending campaigns that made no progress for
    `stalled_after_s`; return how many campaigns were kicked.

    Also re-delivers the queued interactions (their delivery task died with its worker) of
    those campaigns and of campaigns that ended within REDELIVER_WINDOW, checking each
    campaign at most once per stall period (the check bumps its heartbeat), and only when no
    delivery batch ran for that long (`note_delivery_progress`).
    """
    quiet_since = now - timedelta(seconds=stalled_after_s)
    due_pending = Touch.objects.filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now), status=TouchStatus.PENDING
    )
    recently_ended = Q(
        status__in=(CampaignStatus.DONE, CampaignStatus.CANCELLED),
        finished_at__gte=now - REDELIVER_WINDOW,
    )
    stalled = Campaign.objects.filter(
        Q(status=CampaignStatus.SENDING) | recently_ended, updated_at__lte=quiet_since
    )
    # While delivery tasks are being worked (a backlog behind a big campaign), queued messages
    # are waiting their turn, not lost: hand them out again only once deliveries went quiet.
    last_delivery = cache.get(DELIVERY_HEARTBEAT_KEY)
    deliveries_idle = last_delivery is None or last_delivery <= quiet_since.timestamp()
    kicked = 0
    for campaign_id, status in stalled.values_list("pk", "status"):
        _heartbeat(campaign_id)
        queued = list(
            Interaction.objects.filter(
                pk__in=Touch.objects.filter(
                    campaign_id=campaign_id, status=TouchStatus.SENT
                ).values("interaction_id"),
                status=QUEUED,
                created_at__lte=quiet_since,
            ).values_list("pk", flat=True)
        )
        if queued and deliveries_idle:
            transaction.on_commit(partial(deliver_later, queued), robust=True)
        if status != CampaignStatus.SENDING:
            continue
        if due_pending.filter(campaign_id=campaign_id).exists():
            transaction.on_commit(partial(enqueue_chunks, campaign_id=campaign_id), robust=True)
            kicked += 1
        elif not Touch.objects.filter(campaign_id=campaign_id, status=TouchStatus.PENDING).exists():
            finish_campaign(campaign=Campaign(pk=campaign_id), now=now)
    return kicked


def _heartbeat(campaign_id: int) -> None:
    """Say the campaign is being worked on (what the stall check reads). A no-key UPDATE: it
    does not wait for the send transactions, which hold FOR KEY SHARE."""
    Campaign.objects.filter(pk=campaign_id).update(updated_at=timezone.now())


# --- sending ---------------------------------------------------------------------------------


def dispatch_chunk(
    *,
    campaign_id: int,
    after_id: int = 0,
    up_to_id: int | None = None,
    now: datetime | None = None,
) -> dict:
    """Send the campaign's due pending touches with ids in (after_id, up_to_id]; return counts.

    Each group of GROUP_SIZE touches is one transaction (see the module docstring); a touch is
    sent, held, suppressed or delayed (quiet hours, outside the customer's local window of a
    local-window campaign) by the policy's verdict at that moment.
    Nothing happens when the campaign is not sending (paused, cancelled, done). `now` is the
    moment the policy is evaluated at (default: the clock after the locks are taken).
    """
    if not Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.SENDING).exists():
        return asdict(Counts())
    pick_at = now or timezone.now()
    touches = Touch.objects.filter(
        Q(not_before__isnull=True) | Q(not_before__lte=pick_at),
        campaign_id=campaign_id,
        status=TouchStatus.PENDING,
        pk__gt=after_id,
    )
    if up_to_id is not None:
        touches = touches.filter(pk__lte=up_to_id)
    ids = list(touches.order_by("pk").values_list("pk", flat=True))
    counts = Counts()
    for start in range(0, len(ids), GROUP_SIZE):
        counts.add(
            send_touches(
                campaign_id=campaign_id,
                touch_ids=ids[start : start + GROUP_SIZE],
                from_status=TouchStatus.PENDING,
                now=now,
            )
        )
    _heartbeat(campaign_id)
    nothing_pending = not Touch.objects.filter(
        campaign_id=campaign_id, status=TouchStatus.PENDING
    ).exists()
    if nothing_pending and not finish_campaign(campaign=Campaign(pk=campaign_id), now=now):
        # The last pending touch went, but held ones wait for their reasons until the end:
        # the bar must show this chunk's final figures now, not at the next throttle window.
        publish_progress(campaign_id)
    elif not nothing_pending:
        _publish_progress_throttled(campaign_id)
    return asdict(counts)


def send_touches(
    *, campaign_id: int, touch_ids: list[int], from_status: str, now: datetime | None = None
) -> Counts:
    """One transaction: re-check the given touches (those still `from_status`) against the
    policy under their customers' locks, and send, hold, suppress or delay each."""
    counts = Counts()
    with transaction.atomic():
        if _campaign_status_shared(campaign_id) != CampaignStatus.SENDING:
            counts.skipped = len(touch_ids)
            return counts
        touches = list(
            Touch.objects.select_for_update(of=("self",))
            .select_related("campaign", "customer")
            .filter(pk__in=touch_ids, campaign_id=campaign_id, status=from_status)
            .order_by("pk")
        )
        counts.skipped = len(touch_ids) - len(touches)
        if not touches:
            return counts
        lock_marketing_states(sorted({touch.customer_id for touch in touches}))
        # Taken after the locks: a commitment committed before this instant is seen below, and
        # one recorded after it waits for this transaction and is created later than `at`.
        at = now or timezone.now()
        due = [t for t in touches if not (t.not_before and t.not_before > at)]
        counts.skipped += len(touches) - len(due)
        campaign = touches[0].campaign
        verdicts = contact_policy.evaluate_touches(touches=due, now=at)
        handles = _handles(campaign.channel, [touch.customer_id for touch in due])
        to_send: list[tuple[Touch, str]] = []
        for touch in due:
            verdict = verdicts[touch.pk]
            handle = handles.get(touch.customer_id)
            if verdict is None and handle is None:
                verdict = (Reason.NO_IDENTITY, f"No {campaign.channel} identity")
            if verdict is not None:
                _hold(touch, verdict, at=at, counts=counts)
            elif touch.customer.merged_into_id is not None or touch.customer.erased_at is not None:
                touch.status = TouchStatus.FAILED
                touch.error = "The customer was merged or erased before the send."
                counts.failed += 1
            else:
                to_send.append((touch, handle))
            touch.updated_at = at
        queued = _append_sent(to_send, campaign=campaign, at=at)
        counts.sent += len(queued)
        _save_touches(touches)
        if queued:
            transaction.on_commit(partial(deliver_later, queued), robust=True)
    return counts


def _save_touches(touches: list[Touch]) -> None:
    """One UPDATE per touch, pipelined in one round trip (`workbench.sql.update_rows`)."""
    update_rows(touches, TOUCH_FIELDS)


def _campaign_status_shared(campaign_id: int) -> str | None:
    """The campaign's status, read under FOR KEY SHARE: pause/cancel (FOR UPDATE) wait for this
    transaction, and this one waits for theirs and then reads what they committed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status FROM campaigns_campaign WHERE id = %s FOR KEY SHARE", [campaign_id]
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _handles(channel: str, customer_ids: list[int]) -> dict[int, str]:
    """Each customer's first handle on the channel (the oldest identity), in one query."""
    handles: dict[int, str] = {}
    rows = Identity.objects.filter(customer_id__in=customer_ids, channel=channel).order_by(
        "customer_id", "id"
    )
    for customer_id, handle in rows.values_list("customer_id", "handle"):
        handles.setdefault(customer_id, handle)
    return handles


def personalise(campaign: Campaign, customer) -> tuple[str, str]:
    """The (subject, body) this customer receives: the campaign's placeholders filled in one
    pass from a whitelist (campaigns.editing), never through a template engine."""
    subject = fill_placeholders(campaign.subject or campaign.name, customer)
    return subject, fill_placeholders(campaign.content, customer)


def message_id_for(touch: Touch) -> str:
    """Our Message-ID for a touch: one per touch, so a re-delivery is recognisably the same."""
    return f"<touch-{touch.pk}@{settings.WORKBENCH_MAIL_DOMAIN}>"


def lock_marketing_states(customer_ids: list[int]) -> None:
    """`cases.holds.lock_marketing_state` for a group of customers in one statement: the same
    row lock (SELECT … FOR UPDATE on each customer), taken in ascending id order so two groups
    never wait on each other in a cycle. One round trip instead of one per customer."""
    if len(customer_ids) == 1:
        lock_marketing_state(customer_ids[0])
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM customers_customer WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            [sorted(customer_ids)],
        )


def _append_sent(to_send: list[tuple[Touch, str]], *, campaign: Campaign, at: datetime) -> list:
    """Mark the touches sent and append their outbound messages ("queued") to the timeline in
    one INSERT; return the new interactions' ids, in the touches' order.

    What `customers.timeline.record_interaction` does for one entry, for a group: the same
    fields and live event; no HTML to sanitise (campaign content is plain text), and no
    duplicate to look for (the touch was pending under its lock, so its `touch-<id>` entry
    cannot exist; the unique (channel, external_id) constraint would refuse it anyway).
    """
    if not to_send:
        return []
    touch_type = ContentType.objects.get_for_model(Touch)
    entries = []
    for touch, handle in to_send:
        subject, body = personalise(campaign, touch.customer)
        entries.append(
            Interaction(
                customer_id=touch.customer_id,
                channel=campaign.channel,
                kind=Kind.CAMPAIGN_TOUCH,
                direction=Direction.OUTBOUND,
                occurred_at=at,
                actor_label=f"Campaign: {campaign.name}"[:200],
                title=subject[:MAX_TITLE_CHARS],
                body_text=body[:MAX_BODY_CHARS],
                external_id=f"touch-{touch.pk}",
                subject_type=touch_type,
                subject_id=touch.pk,
                status=QUEUED,
                data={
                    "to": handle,
                    "subject": subject,
                    "message_id": message_id_for(touch),
                    "campaign_id": campaign.pk,
                    "touch_id": touch.pk,
                },
            )
        )
    Interaction.objects.bulk_create(entries)
    for (touch, _handle), entry in zip(to_send, entries, strict=True):
        touch.status, touch.sent_at, touch.interaction_id = TouchStatus.SENT, at, entry.pk
        touch.reason, touch.reason_detail, touch.not_before = "", "", None
        touch.attempts += 1
    realtime.publish_many(
        [
            (
                realtime.group_name("customer", touch.customer_id),
                INTERACTION_EVENT,
                {"interaction_id": entry.pk},
            )
            for (touch, _handle), entry in zip(to_send, entries, strict=True)
        ]
    )
    return [entry.pk for entry in entries]


def _hold(touch: Touch, verdict, *, at: datetime, counts: Counts) -> None:
    reason, detail = verdict
    touch.reason, touch.reason_detail = reason, (detail or "")[:300]
    if reason in contact_policy.WAITS:
        # Quiet hours and the customer's local window only delay: the touch stays pending,
        # with the wait's sentence, until the customer's morning or window opens (the policy set
        # `not_before` to it; the release sweep hands it out then, or the campaign's end
        # expires it).
        touch.status, touch.reason = TouchStatus.PENDING, ""
        counts.delayed += 1
    elif reason in HOLD_REASONS:
        if touch.status != TouchStatus.HELD:
            touch.held_at = at
        touch.status = TouchStatus.HELD
        counts.held += 1
    else:
        touch.status = TouchStatus.SUPPRESSED
        counts.suppressed += 1


def note_delivery_progress() -> None:
    """Say a delivery batch just ran (the delivery task calls it): queued messages are moving."""
    cache.set(
        DELIVERY_HEARTBEAT_KEY,
        timezone.now().timestamp(),
        timeout=int(REDELIVER_WINDOW.total_seconds()),
    )


def deliver_later(interaction_ids: list[int]) -> None:
    """Hand queued interactions to the delivery task (by name; it runs in workbench), in tasks
    of at most DELIVERY_BATCH messages."""
    ids = list(interaction_ids)
    for start in range(0, len(ids), DELIVERY_BATCH):
        current_app.send_task(DELIVER_BATCH_TASK, args=[ids[start : start + DELIVERY_BATCH]])


def record_delivery_failures(*, interaction_ids: list[int]) -> int:
    """Sent touches whose message delivery failed → failed (with the delivery's reason); return
    how many. A failed message did not reach the customer, so it counts for no frequency cap."""
    failed = Interaction.objects.filter(pk__in=interaction_ids, status=FAILED)
    reasons = dict(failed.values_list("pk", "data__delivery_error"))
    changed = 0
    by_campaign: set[int] = set()
    with transaction.atomic():
        touches = Touch.objects.select_for_update().filter(
            interaction_id__in=list(reasons), status=TouchStatus.SENT
        )
        for touch in touches:
            touch.status = TouchStatus.FAILED
            touch.error = str(reasons.get(touch.interaction_id) or "delivery failed")[:500]
            touch.save(update_fields=["status", "error", "updated_at"])
            by_campaign.add(touch.campaign_id)
            changed += 1
        for campaign_id in sorted(by_campaign):
            publish_progress(campaign_id)
    return changed


# --- held touches, and the campaign's end ----------------------------------------------------


def release_held_touches(*, now: datetime) -> int:
    """Release what can go now in every sending campaign; return how many touches were released.

    Held touches whose reason cleared without any event (a cool-off or a frequency window
    ended, an override was approved) go back to pending (campaigns.policy, one statement per
    campaign); touches delayed by quiet hours or by the customer's local window come due (a
    touch released outside its window is pending with the window's opening as `not_before`,
    so this sweep is what sends it then). Either way the campaign's pending touches are handed
    out again, and each is re-checked under its customer's lock before it is sent, so a
    release can never slip past a commitment recorded meanwhile.
    """
    released = 0
    to_hand_out: set[int] = set()
    sending = Campaign.objects.filter(status=CampaignStatus.SENDING)
    with_held = sending.filter(
        Exists(Touch.objects.filter(campaign_id=OuterRef("pk"), status=TouchStatus.HELD))
    )
    for campaign in with_held:
        count = contact_policy.release_held_touches(campaign=campaign, now=now)
        if count:
            released += count
            to_hand_out.add(campaign.pk)
    due = Touch.objects.filter(status=TouchStatus.PENDING, not_before__lte=now)
    to_hand_out |= set(
        sending.filter(Exists(due.filter(campaign_id=OuterRef("pk")))).values_list("pk", flat=True)
    )
    for campaign_id in sorted(to_hand_out):
        _heartbeat(campaign_id)
        transaction.on_commit(partial(enqueue_chunks, campaign_id=campaign_id), robust=True)
    return released


def expire_touches(*, now: datetime) -> int:
    """End every scheduled, sending or paused campaign past its `ends_at` (pending and held
    touches expire), and finish sending campaigns with nothing left pending; return how many
    campaigns ended."""
    ended = 0
    live = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING, CampaignStatus.PAUSED)
    past_end = Campaign.objects.filter(status__in=live, ends_at__lte=now)
    for campaign in past_end.only("pk"):
        ended += end_campaign(campaign=campaign, now=now)
    pending = Touch.objects.filter(campaign_id=OuterRef("pk"), status=TouchStatus.PENDING)
    idle = Campaign.objects.filter(~Exists(pending), status=CampaignStatus.SENDING)
    for campaign in idle.only("pk"):
        ended += finish_campaign(campaign=campaign, now=now)
    return ended


# --- progress --------------------------------------------------------------------------------


def progress_for(campaign: Campaign | int) -> dict[str, int]:
    """The campaign's touches by outcome, in one GROUP BY: sent, held, suppressed, failed,
    expired, remaining (pending), total."""
    campaign_id = campaign if isinstance(campaign, int) else campaign.pk
    by_status = dict(
        Touch.objects.filter(campaign_id=campaign_id)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = {
        "sent": by_status.get(TouchStatus.SENT, 0),
        "held": by_status.get(TouchStatus.HELD, 0),
        "suppressed": by_status.get(TouchStatus.SUPPRESSED, 0),
        "failed": by_status.get(TouchStatus.FAILED, 0),
        "expired": by_status.get(TouchStatus.EXPIRED, 0),
        "remaining": by_status.get(TouchStatus.PENDING, 0),
    }
    counts["total"] = sum(counts.values())
    return counts


def _publish_progress_throttled(campaign_id: int) -> None:
    # cache.add is SET NX: among all workers, one publish per campaign per PROGRESS_EVERY_S.
    if cache.add(f"campaign-progress-{campaign_id}", 1, timeout=PROGRESS_EVERY_S):
        publish_progress(campaign_id)
