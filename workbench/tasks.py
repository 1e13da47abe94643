"""Celery tasks of the composition root: doors that take ids, re-fetch, are safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from campaigns.dispatch import (
    DELIVER_BATCH_TASK,
    FAILED,
    note_delivery_progress,
    record_delivery_failures,
)
from cases.replies import DELIVER_TASK, QUEUED, SENT
from workbench.connectors.delivery import (
    deliver_interaction,
    deliver_interactions,
    delivery_attempts,
    retry_delay_seconds,
    sweep_stuck_deliveries,
)


# max_retries=None: the attempt count lives on the interaction (delivery.MAX_ATTEMPTS decides),
# so a lost retry message or a manual re-enqueue does not reset it.
@shared_task(
    bind=True, name=DELIVER_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def deliver_interaction_task(self, interaction_id: int) -> str | None:
    """Send a queued outbound interaction (a reply); return its status afterwards.

    Idempotent: only a queued interaction is sent, and it is marked "sending" under a row lock
    first, so a redelivered task sends nothing more. When the provider is down the interaction
    is queued again and the task retries itself with exponential backoff (30 s, 60 s, …).
    A campaign message it gives up on (or that is refused) marks its touch failed, as the
    batch task does; for a reply that finds no touch and changes nothing.
    """
    status = deliver_interaction(interaction_id=interaction_id)
    if status == QUEUED:
        raise self.retry(countdown=retry_delay_seconds(delivery_attempts(interaction_id)))
    if status == FAILED:
        record_delivery_failures(interaction_ids=[interaction_id])
    return status


@shared_task(name=DELIVER_BATCH_TASK, acks_late=True, reject_on_worker_lost=True)
def deliver_interactions_task(interaction_ids: list[int]) -> int:
    """Send a batch of queued outbound interactions (a campaign's touches); return how many left.

    One task per send group instead of one per message keeps the broker out of the way of
    campaign throughput, and `deliver_interactions` claims, sends and records the group at once
    (idempotent per interaction: only queued rows are claimed); one the provider could not take
    for now is handed to the single task, which retries it with backoff; a failed one marks its
    campaign touch failed.
    """
    sent, failed = 0, []
    statuses = deliver_interactions(interaction_ids=interaction_ids)
    for interaction_id, status in statuses.items():
        if status == QUEUED:
            deliver_interaction_task.apply_async(
                args=[interaction_id],
                countdown=retry_delay_seconds(delivery_attempts(interaction_id)),
            )
        elif status == FAILED:
            failed.append(interaction_id)
        elif status == SENT:
            sent += 1
    if failed:
        record_delivery_failures(interaction_ids=failed)
    note_delivery_progress()
    return sent


@shared_task(name="workbench.sweep_stuck_deliveries", acks_late=True, reject_on_worker_lost=True)
def sweep_stuck_deliveries_task() -> dict[str, int]:
    """Beat, every minute: hand stuck queued messages to delivery again, fail interrupted ones.

    Idempotent (delivery.sweep_stuck_deliveries moves each row once per grace period); a failed
    campaign message marks its touch failed, as the delivery tasks do.
    """
    result = sweep_stuck_deliveries(now=timezone.now())
    if result.failed:
        record_delivery_failures(interaction_ids=result.failed)
    return {"requeued": len(result.requeued), "failed": len(result.failed)}
