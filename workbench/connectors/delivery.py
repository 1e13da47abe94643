"""Delivery of outbound interactions: the one path every connector's messages take.

`deliver_interaction` is that path, run by the Celery task `workbench.deliver_interaction`
that cases.replies enqueues by name. It claims a queued interaction under a row lock (queued →
sending), sends it with the channel's sender outside any transaction, and records the outcome:

- sent, with what the provider said (its message id becomes the interaction's external id on
  social channels, so its receipts find the message);
- back to queued, with the error and the attempt count, when the provider is DOWN (unreachable,
  timeout, 5xx, 429, an SMTP server that cannot be reached or says "try later"): the task
  tries again with exponential backoff, and after MAX_ATTEMPTS gives up (failed, "gave up after
  N attempts: …"). The page shows "not delivered yet — retrying" meanwhile: never silently lost;
- failed, with the provider's reason, when the provider REFUSES the message (4xx, SMTP 5xx).

A redelivered task finds the row no longer queued and sends nothing. Each change is published
to the case's page.

`sweep_stuck_deliveries` (beat, every minute) repairs what a lost task or a dead worker leaves
behind: a queued message nobody is working on is handed to delivery again once its retry is due
(or failed when its attempts are spent); a message left "sending" longer than any send can take
is failed as interrupted, never sent again, since the provider may have got it. The times it
ages rows by live in `data` next to the attempt count: `delivery_claimed_at` (queued → sending)
and `delivery_due_at` (when a queued message is next due: its retry, or its re-enqueue).
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from celery import current_app
from django.core.mail import get_connection
from django.db import connection as database
from django.db import models, transaction
from django.db.models import F, Q
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from psycopg.types.json import Jsonb

from campaigns.dispatch import DELIVER_BATCH_TASK
from cases.replies import FAILED, QUEUED, SENDING, SENT
from customers.models import Channel, Direction, Interaction
from workbench.connectors import chat, email, meta, x
from workbench.connectors.provider_api import DeliveryError, RetryableDeliveryError
from workbench.connectors.receipts import publish_delivery_status
from workbench.sql import update_rows

logger = logging.getLogger(__name__)

__all__ = [
    "SENDERS",
    "DeliveryError",
    "RetryableDeliveryError",
    "deliver_interaction",
    "deliver_interactions",
    "sweep_stuck_deliveries",
]

MAX_REASON_CHARS = 500
# A provider that is down gets this many tries in all, the waits doubling from the first.
MAX_ATTEMPTS = 5
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 60 * 60
# The sweep: a queued message still untouched this long after it was due lost its task; one
# "sending" this long lost its worker (far above the slowest send: a batch stops trying at the
# first message that finds its provider down, so it pays one or two timeouts, not one each).
# Each run looks at most SWEEP_LIMIT rows and hands the queued ones to delivery in batches of
# SWEEP_BATCH.
QUEUED_GRACE = timedelta(minutes=2)
SENDING_GRACE = timedelta(minutes=15)
SWEEP_LIMIT = 200
SWEEP_BATCH = 25
INTERRUPTED_REASON = (
    "delivery was interrupted; it may or may not have reached the customer — check before resending"
)

# channel → send(interaction) -> dict of facts to keep in the interaction's data. A sender raises
# DeliveryError (refused: failed) or RetryableDeliveryError (provider down: queued for retry);
# facts["external_id"], when given, becomes the interaction's external id (the provider's id).
SENDERS: dict[str, Callable[[Interaction], dict]] = {
    Channel.EMAIL: email.send_email,
    Channel.CHAT: chat.send_chat,
    Channel.FACEBOOK: meta.send_messenger,
    Channel.INSTAGRAM: meta.send_instagram,
    Channel.WHATSAPP: meta.send_whatsapp,
    Channel.X: x.send_x,
}


def deliver_interaction(*, interaction_id: int, max_attempts: int = MAX_ATTEMPTS) -> str | None:
    """Send one queued outbound interaction; return its status afterwards (None: no such row).

    Returns at once, sending nothing, when the interaction is not queued (already sending, sent
    or failed). QUEUED afterwards means "the provider is down, try again later" (the caller
    schedules the retry with `retry_delay_seconds`); the `max_attempts`-th such failure is final.
    A refusal, or any other error, marks it failed with the reason.

    A timeout or a 5xx may hide a message that did leave; retrying it risks a duplicate, which
    a customer forgives more easily than an answer that silently never arrives.
    """
    interaction = _claim(interaction_id)
    if interaction is None:
        current = Interaction.objects.filter(pk=interaction_id).values_list("status", flat=True)
        return current.first()
    outcome = _send(interaction, max_attempts=max_attempts)
    return _finish(interaction_id, outcome)


def deliver_interactions(
    *, interaction_ids: list[int], max_attempts: int = MAX_ATTEMPTS
) -> dict[int, str]:
    """Send a batch of queued outbound interactions (a campaign's touches); id → status after.

    The same outcomes as `deliver_interaction` for each row, with the per-row overhead gone:
    one statement claims every queued row of the batch (rows another worker holds are skipped,
    not waited for), mail leaves through one open backend connection, and one transaction
    records every outcome. Ids not claimed report their current status (or are absent).
    Once one message finds its channel's provider down, the batch's other messages on that
    channel are queued for the same retry without being tried (no attempt counted).
    """
    claimed = _claim_many(interaction_ids)
    outcomes: dict[int, _Outcome] = {}
    connection = None
    if any(interaction.channel == Channel.EMAIL for interaction in claimed):
        connection = get_connection(fail_silently=False)
        try:
            connection.open()
        except Exception as exc:  # the first message meets the same error; the rest wait
            logger.info("could not open the mail connection for a batch: %s", exc)
    down: dict[str, _Outcome] = {}  # channel → the outcome that found its provider down
    try:
        for interaction in claimed:
            found_down = down.get(interaction.channel)
            if found_down is not None:
                # The rest of the batch would only wait on the same dead provider (a mail
                # server's timeout, each): they wait for their retry untried.
                outcomes[interaction.pk] = _untried(interaction, found_down)
                continue
            outcome = _send(interaction, max_attempts=max_attempts, mail_connection=connection)
            outcomes[interaction.pk] = outcome
            if outcome.down_reason:
                down[interaction.channel] = outcome
    finally:
        if connection is not None:
            try:
                connection.close()
            except Exception as exc:  # closing a broken connection must not lose the outcomes
                logger.info("closing the batch's mail connection failed", exc_info=True)
                if getattr(connection, "stores_on_close", False):
                    _unsend_batch(claimed, outcomes, exc, max_attempts=max_attempts)
        overtaken = _finish_many(claimed, outcomes)
    statuses = {pk: outcome.status for pk, outcome in outcomes.items()}
    statuses.update(overtaken)
    others = set(interaction_ids) - set(statuses)
    if others:
        statuses.update(Interaction.objects.filter(pk__in=others).values_list("pk", "status"))
    return statuses


@dataclass
class SweepResult:
    """What one sweep did: ids handed to delivery again, ids it failed (and why, in their data)."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def sweep_stuck_deliveries(
    *,
    now: datetime,
    queued_grace: timedelta = QUEUED_GRACE,
    sending_grace: timedelta = SENDING_GRACE,
    limit: int = SWEEP_LIMIT,
    max_attempts: int = MAX_ATTEMPTS,
) -> SweepResult:
    """Repair outbound interactions a lost task or a dead worker left stuck; say what it did.

    - queued, due (`delivery_due_at`, else created) more than `queued_grace` ago: its task was
      lost (a live one would have claimed it by now, retries included, since the backoff sets
      the due time). With attempts left it is handed to delivery again after commit and its
      due time moves to `now`, so the next runs leave it to that task for another grace;
      with `max_attempts` spent it is failed, "gave up after N attempts".
    - sending, claimed (`delivery_claimed_at`, else created) more than `sending_grace` ago: its
      worker died between the send and the outcome. Whether the provider took it is unknowable
      and delivery is at-most-once, so it is failed as interrupted, never sent again; the agent
      checks before resending.

    One statement picks at most `limit` rows, oldest first, through the partial index on
    in-flight outbound rows, locking them FOR UPDATE SKIP LOCKED: a row a worker is claiming
    or finishing right now is left to it. Failures are published to the case's page like any
    delivery failure; the caller records them on campaign touches. Running it twice changes
    nothing more.
    """
    due_at = Coalesce(Cast(KT("data__delivery_due_at"), models.DateTimeField()), F("created_at"))
    claimed_at = Coalesce(
        Cast(KT("data__delivery_claimed_at"), models.DateTimeField()), F("created_at")
    )
    result = SweepResult()
    with transaction.atomic(durable=True):
        stuck = list(
            Interaction.objects.select_for_update(of=("self",), skip_locked=True)
            .filter(direction=Direction.OUTBOUND, status__in=(QUEUED, SENDING))
            .alias(due_at=due_at, claimed_at=claimed_at)
            .filter(
                Q(status=QUEUED, due_at__lt=now - queued_grace)
                | Q(status=SENDING, claimed_at__lt=now - sending_grace)
            )
            .order_by("created_at", "pk")
            .only("status", "data")[:limit]  # not the bodies: the sweep never sends
        )
        for interaction in stuck:
            data = dict(interaction.data or {})
            attempts = int(data.get("delivery_attempts") or 0)
            if interaction.status == SENDING:
                interaction.status = FAILED
                data["delivery_error"] = INTERRUPTED_REASON
                data["delivery_interrupted_at"] = now.isoformat()
            elif attempts >= max_attempts:
                interaction.status = FAILED
                last = str(data.get("delivery_error") or "the provider did not take it")
                data["delivery_error"] = _gave_up(attempts, last)
            else:
                data["delivery_due_at"] = now.isoformat()
                result.requeued.append(interaction.pk)
            interaction.data = data
        if stuck:
            Interaction.objects.bulk_update(stuck, ["status", "data"])
        for interaction in stuck:
            if interaction.status == FAILED:
                result.failed.append(interaction.pk)
                logger.warning(
                    "delivery of interaction %s: %s",
                    interaction.pk,
                    interaction.data["delivery_error"],
                )
        publish_delivery_status(*(row for row in stuck if row.status == FAILED))
        for start in range(0, len(result.requeued), SWEEP_BATCH):
            batch = result.requeued[start : start + SWEEP_BATCH]
            transaction.on_commit(partial(_deliver_later, batch), robust=True)
    return result


def _deliver_later(interaction_ids: list[int]) -> None:
    """Hand queued interactions to the batch delivery task (by name: tasks.py imports us)."""
    current_app.send_task(DELIVER_BATCH_TASK, args=[interaction_ids])


@dataclass(frozen=True)
class _Outcome:
    status: str
    facts: dict
    attempts: int
    external_id: str = ""
    clear_error: bool = False
    # The provider's own error when it was found down (empty otherwise): the rest of a batch
    # quotes it, not this message's "gave up after N attempts" wording.
    down_reason: str = ""


def _untried(interaction: Interaction, found_down: _Outcome) -> _Outcome:
    """A message of a batch whose provider another message just found down: queued again,
    due with that message's retry, the error said, and no attempt counted (none was made)."""
    attempts = int((interaction.data or {}).get("delivery_attempts") or 0)
    due_at = found_down.facts.get("delivery_due_at") or timezone.now().isoformat()
    reason = f"not tried, the provider was down: {found_down.down_reason}"[:MAX_REASON_CHARS]
    facts = {"delivery_error": reason, "delivery_due_at": due_at}
    return _Outcome(QUEUED, facts, attempts)


def _send(interaction: Interaction, *, max_attempts: int, mail_connection=None) -> _Outcome:
    """Hand one claimed interaction to its channel's sender; say what became of it."""
    attempts = int((interaction.data or {}).get("delivery_attempts") or 0) + 1
    sender = SENDERS.get(interaction.channel)
    try:
        if sender is None:
            raise DeliveryError(f"no outbound connector for {interaction.get_channel_display()}")
        if interaction.customer.erased_at is not None:
            raise DeliveryError("the customer's data was erased before the message left")
        if mail_connection is not None and sender is email.send_email:
            facts = email.send_email(interaction, connection=mail_connection)
        else:
            facts = sender(interaction)
    except Exception as exc:
        reason = (str(exc).strip() or type(exc).__name__)[:MAX_REASON_CHARS]
        if is_provider_down(exc) and attempts < max_attempts:
            logger.info("delivery of %s: attempt %s failed: %s", interaction.pk, attempts, reason)
            due_at = timezone.now() + timedelta(seconds=retry_delay_seconds(attempts))
            facts = {"delivery_error": reason, "delivery_due_at": due_at.isoformat()}
            return _Outcome(QUEUED, facts, attempts, down_reason=reason)
        down_reason = reason if is_provider_down(exc) else ""
        if down_reason:
            reason = _gave_up(attempts, reason)
        logger.warning("delivery of interaction %s failed: %s", interaction.pk, reason)
        return _Outcome(FAILED, {"delivery_error": reason}, attempts, down_reason=down_reason)
    facts = dict(facts or {})
    external_id = str(facts.pop("external_id", "") or "")[:255]
    facts["sent_at"] = timezone.now().isoformat()
    return _Outcome(SENT, facts, attempts, external_id=external_id, clear_error=True)


def is_provider_down(exc: BaseException) -> bool:
    """Whether a sender's exception means "the provider is down, try later" (vs refused).

    Our senders say so (RetryableDeliveryError); Django's SMTP backend raises smtplib's and the
    socket's own errors: no connection, a dropped connection, or a 4xx "try again later" reply;
    anymail's errors carry the provider's HTTP status (5xx, 429) or a connection error.
    """
    if isinstance(exc, RetryableDeliveryError):
        return True
    if isinstance(exc, DeliveryError | smtplib.SMTPRecipientsRefused):
        return False
    if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
        return True
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPException):
        return False
    # An email provider's HTTP API (anymail): its answer's status says which.
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status == 429 or status >= 500
    return isinstance(exc, ConnectionError | TimeoutError | OSError)


def _gave_up(attempts: int, reason: str) -> str:
    return f"gave up after {attempts} attempts: {reason}"[:MAX_REASON_CHARS]


def retry_delay_seconds(attempts: int) -> int:
    """The wait before try number `attempts + 1`: 30 s, 60 s, 120 s, … at most an hour."""
    return min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS)


def delivery_attempts(interaction_id: int) -> int:
    data = Interaction.objects.filter(pk=interaction_id).values_list("data", flat=True).first()
    return int((data or {}).get("delivery_attempts") or 0)


def _claim(interaction_id: int) -> Interaction | None:
    """Queued → sending under the row lock; None when there is nothing (left) to send."""
    with transaction.atomic():
        interaction = (
            Interaction.objects.select_for_update(of=("self",))
            .select_related("customer")
            .filter(pk=interaction_id, direction=Direction.OUTBOUND)
            .first()
        )
        if interaction is None or interaction.status != QUEUED:
            return None
        interaction.status = SENDING
        interaction.data = {**(interaction.data or {}), **_claimed_now()}
        interaction.save(update_fields=["status", "data"])
        publish_delivery_status(interaction)
    return interaction


def _unsend_batch(
    claimed: list[Interaction], outcomes: dict[int, _Outcome], exc: Exception, *, max_attempts: int
) -> None:
    """A backend that stores a batch when it closes (the local outbox) could not: none of the
    batch's mail left, so each email "sent" becomes a retry (or a failure past its attempts)."""
    reason = (f"the mail could not be stored: {exc}".strip())[:MAX_REASON_CHARS]
    due_at = timezone.now()
    for interaction in claimed:
        outcome = outcomes.get(interaction.pk)
        if interaction.channel != Channel.EMAIL or outcome is None or outcome.status != SENT:
            continue
        if outcome.attempts < max_attempts:
            delay = timedelta(seconds=retry_delay_seconds(outcome.attempts))
            facts = {"delivery_error": reason, "delivery_due_at": (due_at + delay).isoformat()}
            outcomes[interaction.pk] = _Outcome(QUEUED, facts, outcome.attempts)
        else:
            facts = {"delivery_error": _gave_up(outcome.attempts, reason)}
            outcomes[interaction.pk] = _Outcome(FAILED, facts, outcome.attempts)


def _claim_many(interaction_ids: list[int]) -> list[Interaction]:
    """Queued → sending for every row of the batch no other worker holds, in one transaction."""
    with transaction.atomic():
        interactions = list(
            Interaction.objects.select_for_update(of=("self",), skip_locked=True)
            .select_related("customer")
            .filter(pk__in=interaction_ids, direction=Direction.OUTBOUND, status=QUEUED)
            .order_by("pk")
        )
        stamp = _claimed_now()
        if interactions:
            # The stamp is merged into the stored data in the UPDATE itself (`||`), one statement.
            with database.cursor() as cursor:
                cursor.execute(
                    "UPDATE customers_interaction SET status = %s, data = data || %s"
                    " WHERE id = ANY(%s)",
                    [SENDING, Jsonb(stamp), [row.pk for row in interactions]],
                )
        for interaction in interactions:
            interaction.status = SENDING
            interaction.data = {**(interaction.data or {}), **stamp}
        publish_delivery_status(*interactions)
    return interactions


def _claimed_now() -> dict:
    """What a claim stamps on the row: when it started "sending" (the sweep ages it by this)."""
    return {"delivery_claimed_at": timezone.now().isoformat()}


def _apply_outcome(interaction: Interaction, outcome: _Outcome) -> list[str]:
    data = {**(interaction.data or {}), **outcome.facts, "delivery_attempts": outcome.attempts}
    if outcome.clear_error:
        data.pop("delivery_error", None)
    interaction.status = outcome.status
    interaction.data = data
    fields = ["status", "data"]
    if outcome.external_id and interaction.channel != Channel.EMAIL:
        interaction.external_id = outcome.external_id
        fields.append("external_id")
    return fields


def _still_ours(status: str, outcome: _Outcome) -> bool:
    """Whether an outcome may be recorded over the row's current status. The sweep fails a row
    that stayed "sending" too long as interrupted; a send that was merely slow then only
    records "sent" (the truth, better than "may or may not have arrived"), never a retry."""
    return status == SENDING or outcome.status == SENT


def _finish(interaction_id: int, outcome: _Outcome) -> str:
    """Record the outcome (unless the sweep overtook it); return the row's status after."""
    with transaction.atomic():
        interaction = Interaction.objects.select_for_update().get(pk=interaction_id)
        if not _still_ours(interaction.status, outcome):
            return interaction.status
        interaction.save(update_fields=_apply_outcome(interaction, outcome))
        publish_delivery_status(interaction)
    return interaction.status


def _finish_many(claimed: list[Interaction], outcomes: dict[int, _Outcome]) -> dict[int, str]:
    """Record every outcome of a batch at once; a row left without one (the process is dying)
    stays "sending", never sent twice (the sweep fails it as interrupted later). The rows are
    ours since the claim: only the sweep moves a "sending" row, and only long after, so the
    data read at the claim is still theirs to merge into once the statuses are checked.
    Returns the status of each row whose outcome the sweep overtook (left as the sweep set it).
    """
    done = [row for row in claimed if row.pk in outcomes]
    if not done:
        return {}
    fields = {"status", "data"}
    with transaction.atomic():
        current = dict(
            Interaction.objects.select_for_update()
            .filter(pk__in=[row.pk for row in done])
            .order_by("pk")
            .values_list("pk", "status")
        )
        overtaken = {
            row.pk: current.get(row.pk, "")
            for row in done
            if not _still_ours(current.get(row.pk, ""), outcomes[row.pk])
        }
        done = [row for row in done if row.pk not in overtaken]
        for interaction in done:
            fields.update(_apply_outcome(interaction, outcomes[interaction.pk]))
        update_rows(done, sorted(fields))
        publish_delivery_status(*done)
    return overtaken
