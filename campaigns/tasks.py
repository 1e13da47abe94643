"""Celery tasks of campaigns: doors that take ids, call one dispatch service, are safe to run twice.

Beat runs the three sweeps (workbench/settings.py, CELERY_BEAT_SCHEDULE); `dispatch_chunk` is
enqueued by campaigns.lifecycle.enqueue_chunks. Every one re-reads the rows it works on and acts
only from the state it expects (a touch is sent only from pending/held under its lock), so a
redelivered or duplicated task changes nothing more.
"""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from campaigns import dispatch
from campaigns.lifecycle import DISPATCH_CHUNK_TASK

START_DUE_TASK = "campaigns.start_due_campaigns"
RELEASE_HELD_TASK = "campaigns.release_held_touches"
EXPIRE_TASK = "campaigns.expire_touches"


@shared_task(name=START_DUE_TASK, acks_late=True, reject_on_worker_lost=True)
def start_due_campaigns_task(stalled_after_s: float | None = None) -> int:
    """Start scheduled campaigns whose time has come and kick stalled ones; return how many
    started."""
    stalled = dispatch.STALLED_AFTER_S if stalled_after_s is None else float(stalled_after_s)
    return dispatch.start_due_campaigns(now=timezone.now(), stalled_after_s=stalled)


@shared_task(name=DISPATCH_CHUNK_TASK, acks_late=True, reject_on_worker_lost=True)
def dispatch_chunk_task(campaign_id: int, after_id: int = 0, up_to_id: int | None = None) -> dict:
    """Send one range of a campaign's pending touches; return the counts."""
    return dispatch.dispatch_chunk(campaign_id=campaign_id, after_id=after_id, up_to_id=up_to_id)


@shared_task(name=RELEASE_HELD_TASK, acks_late=True, reject_on_worker_lost=True)
def release_held_touches_task() -> int:
    """Re-check held touches of sending campaigns; return how many were sent."""
    return dispatch.release_held_touches(now=timezone.now())


@shared_task(name=EXPIRE_TASK, acks_late=True, reject_on_worker_lost=True)
def expire_touches_task() -> int:
    """End campaigns past their end (their waiting touches expire); return how many ended."""
    return dispatch.expire_touches(now=timezone.now())
