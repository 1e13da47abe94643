"""The delivery sweep: outbound messages a lost task or a dead worker left queued or "sending"
are delivered after all, or failed with a reason an agent understands; and the indexes the
sweep and the delivery receipts read through."""

import smtplib
import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest
from celery import current_app
from django.core.mail.backends.base import BaseEmailBackend
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cases.fragments import render_reply_delivery
from cases.lifecycle import open_case
from cases.replies import send_reply
from customers.models import Identity, Interaction
from tests.cases.factories import CalendarFactory, CustomerFactory, QueueFactory, SlaPolicyFactory
from workbench import realtime
from workbench.connectors import delivery
from workbench.connectors.delivery import INTERRUPTED_REASON, sweep_stuck_deliveries
from workbench.connectors.email_inbound import mark_delivery
from workbench.mail import OutboxBackend
from workbench.models import OutboxEmail
from workbench.tasks import deliver_interaction_task, deliver_interactions_task

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _local_outbox(settings):
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"
    settings.DEFAULT_FROM_EMAIL = "Support <support@shop.example>"
    settings.WORKBENCH_MAIL_DOMAIN = "mail.shop.example"


@pytest.fixture
def case(agent):
    queue = QueueFactory(name="Support", calendar=CalendarFactory(working_hours={}))
    queue.members.add(agent)
    SlaPolicyFactory(queue=queue, priority="normal")
    ann = CustomerFactory(display_name="Ann Lee")
    Identity.objects.create(customer=ann, channel="email", handle="ann@example.com")
    return open_case(customer=ann, queue=queue, subject="Refund for order 42", channel="email")


def reply(case, agent, *, status="queued", created_at=NOW - timedelta(hours=1), **data):
    """A reply as the composer queues it, then aged (and moved) as a stuck one would be."""
    interaction = send_reply(case=case, author=agent, channel="email", body="Your refund is sent.")
    Interaction.objects.filter(pk=interaction.pk).update(
        status=status, created_at=created_at, data={**interaction.data, **data}
    )
    interaction.refresh_from_db()
    return interaction


def fresh(interaction):
    interaction.refresh_from_db()
    return interaction


def status_on_page(client, case, interaction) -> str:
    html = client.get(f"/cases/{case.pk}/").text
    return html.split(f'id="delivery-{interaction.pk}"')[1].split("</span>")[0]


def case_seq(case) -> int:
    return realtime.current_seq(realtime.group_name("case", case.pk))


# --- queued: the delivery task was lost ---------------------------------------------------------


def test_a_queued_reply_whose_task_was_lost_is_delivered_by_the_sweep_once(
    agent, case, django_capture_on_commit_callbacks
):
    lost = reply(case, agent, created_at=NOW - timedelta(minutes=3))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = sweep_stuck_deliveries(now=NOW)

    assert (result.requeued, result.failed) == ([lost.pk], [])
    handoffs = [cb for cb in callbacks if getattr(cb, "func", None) == delivery._deliver_later]
    assert [cb.args for cb in handoffs] == [([lost.pk],)]  # one batch, handed out after commit
    assert not OutboxEmail.objects.exists()  # nothing leaves until the worker runs it

    # The worker runs what the sweep handed out.
    assert deliver_interactions_task([lost.pk]) == 1
    [mail] = OutboxEmail.objects.all()
    assert mail.message_id == lost.external_id and mail.to == "ann@example.com"
    assert fresh(lost).status == "sent"

    # Later sweeps find nothing stuck: nothing is handed out or sent again.
    assert sweep_stuck_deliveries(now=NOW + timedelta(hours=1)).requeued == []
    assert OutboxEmail.objects.count() == 1


def test_a_queued_reply_is_handed_out_again_only_once_per_grace_period(agent, case):
    lost = reply(case, agent, created_at=NOW - timedelta(minutes=3))

    assert sweep_stuck_deliveries(now=NOW).requeued == [lost.pk]
    # Its new task may be waiting in a busy broker: the next runs leave it to that task.
    assert sweep_stuck_deliveries(now=NOW + timedelta(minutes=1)).requeued == []
    assert sweep_stuck_deliveries(now=NOW + timedelta(minutes=2, seconds=1)).requeued == [lost.pk]
    assert fresh(lost).status == "queued"


def test_a_just_queued_reply_is_left_to_its_own_task(agent, case):
    queued = reply(case, agent, created_at=NOW - timedelta(seconds=90))

    assert sweep_stuck_deliveries(now=NOW).requeued == []
    assert fresh(queued).status == "queued" and "delivery_due_at" not in fresh(queued).data


def test_a_queued_reply_past_its_attempts_is_failed_with_the_reason_and_not_sent(
    client_for, agent, case, django_capture_on_commit_callbacks
):
    spent = reply(case, agent, delivery_attempts=5, delivery_error="Connection refused",
                  delivery_due_at=(NOW - timedelta(hours=1)).isoformat())  # fmt: skip
    before = case_seq(case)

    with django_capture_on_commit_callbacks(execute=True):
        result = sweep_stuck_deliveries(now=NOW)

    assert (result.requeued, result.failed) == ([], [spent.pk])
    spent = fresh(spent)
    assert spent.status == "failed"
    assert spent.data["delivery_error"] == "gave up after 5 attempts: Connection refused"
    assert case_seq(case) == before + 1  # the case's page heard of it
    assert status_on_page(client_for(agent), case, spent) == (
        ' class="status"><strong>not delivered</strong>: gave up after 5 attempts: '
        "Connection refused"
    )
    assert deliver_interaction_task(spent.pk) == "failed"
    assert not OutboxEmail.objects.exists()


def test_a_queued_reply_waits_out_its_backoff_before_the_sweep_hands_it_out(settings, agent, case):
    # A real failed attempt: the mail server is down, the task would retry in 30 s.
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
    retrying = send_reply(case=case, author=agent, channel="email", body="Hello")
    assert delivery.deliver_interaction(interaction_id=retrying.pk) == "queued"
    retrying = fresh(retrying)
    due_at = datetime.fromisoformat(retrying.data["delivery_due_at"])
    assert retrying.data["delivery_attempts"] == 1
    assert 0 < (due_at - timezone.now()).total_seconds() <= 30

    # Inside its backoff plus the grace its own retry gets: left alone, untouched.
    assert sweep_stuck_deliveries(now=due_at + timedelta(minutes=2)).requeued == []
    assert fresh(retrying).data == retrying.data
    # Once its retry is overdue, its retry task is taken for lost.
    later = due_at + timedelta(minutes=2, seconds=1)
    assert sweep_stuck_deliveries(now=later).requeued == [retrying.pk]
    assert fresh(retrying).data["delivery_attempts"] == 1  # handing out is not an attempt


# --- sending: the worker died between the send and the outcome ----------------------------------


class WorkerKilled(BaseException):
    """What a killed worker looks like from inside: nothing after this line runs."""


class DyingBackend(BaseEmailBackend):
    """A mail backend whose worker is killed mid-send."""

    def send_messages(self, email_messages):
        raise WorkerKilled


def claim_and_die(settings, interaction):
    settings.EMAIL_BACKEND = f"{__name__}.DyingBackend"
    with pytest.raises(WorkerKilled):
        delivery.deliver_interaction(interaction_id=interaction.pk)
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"
    return fresh(interaction)


def test_a_reply_stuck_sending_is_failed_as_interrupted_and_never_sent_again(
    settings, client_for, agent, case, django_capture_on_commit_callbacks
):
    stuck = claim_and_die(settings, reply(case, agent))
    assert stuck.status == "sending"
    claimed_at = datetime.fromisoformat(stuck.data["delivery_claimed_at"])
    before = case_seq(case)

    with django_capture_on_commit_callbacks(execute=True):
        result = sweep_stuck_deliveries(now=claimed_at + timedelta(minutes=15, seconds=1))

    assert (result.requeued, result.failed) == ([], [stuck.pk])
    stuck = fresh(stuck)
    assert stuck.status == "failed" and stuck.data["delivery_error"] == INTERRUPTED_REASON
    assert case_seq(case) == before + 1
    expected = (
        f'<span id="delivery-{stuck.pk}" class="status" hx-swap-oob="true"><strong>not '
        "delivered</strong>: delivery was interrupted; it may or may not have reached the "
        "customer — check before resending</span>"
    )
    assert render_reply_delivery(agent, interaction_id=stuck.pk, case_id=case.pk) == expected
    assert "delivery was interrupted" in status_on_page(client_for(agent), case, stuck)

    # Never sent again: not by a redelivered task, not by a later sweep.
    assert deliver_interaction_task(stuck.pk) == "failed"
    assert deliver_interactions_task([stuck.pk]) == 0
    assert sweep_stuck_deliveries(now=claimed_at + timedelta(days=1)).failed == []
    assert not OutboxEmail.objects.exists()


def test_a_reply_sending_for_less_than_the_grace_is_left_alone(settings, agent, case):
    # Queued long ago, claimed just now (a backlog): aged by its claim, not its creation.
    sending = claim_and_die(settings, reply(case, agent, created_at=NOW - timedelta(days=1)))
    claimed_at = datetime.fromisoformat(sending.data["delivery_claimed_at"])

    result = sweep_stuck_deliveries(now=claimed_at + timedelta(minutes=14))

    assert (result.requeued, result.failed) == ([], [])
    assert fresh(sending).status == "sending" and "delivery_error" not in fresh(sending).data


def test_a_batch_claim_stamps_the_claim_time_the_sweep_ages_by(settings, agent, case):
    first, second = reply(case, agent), reply(case, agent)
    settings.EMAIL_BACKEND = f"{__name__}.DyingBackend"
    with pytest.raises(WorkerKilled):
        delivery.deliver_interactions(interaction_ids=[first.pk, second.pk])

    stamps = {fresh(row).data.get("delivery_claimed_at") for row in (first, second)}
    assert {fresh(row).status for row in (first, second)} == {"sending"}
    [stamp] = stamps
    claimed_at = datetime.fromisoformat(stamp)
    assert sweep_stuck_deliveries(now=claimed_at + timedelta(minutes=14)).failed == []
    assert sorted(sweep_stuck_deliveries(now=claimed_at + timedelta(minutes=16)).failed) == sorted(
        [first.pk, second.pk]
    )


def test_a_batch_the_outbox_could_not_store_is_retried_not_recorded_sent(agent, case, monkeypatch):
    first, second = reply(case, agent), reply(case, agent)

    def broken(*args, **kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(OutboxEmail.objects, "bulk_create", broken)
    statuses = delivery.deliver_interactions(interaction_ids=[first.pk, second.pk])

    assert statuses == {first.pk: "queued", second.pk: "queued"}
    assert not OutboxEmail.objects.exists()
    for row in (first, second):
        assert fresh(row).data["delivery_error"] == "the mail could not be stored: disk full"
        assert fresh(row).data["delivery_attempts"] == 1


class TimingOutBackend(BaseEmailBackend):
    """A mail server that cannot be reached: each message costs a connection timeout."""

    tries = 0

    def send_messages(self, email_messages):
        type(self).tries += 1
        raise TimeoutError("timed out")


def test_a_batch_stops_trying_a_provider_that_is_down_and_queues_the_rest(
    settings, monkeypatch, agent, case
):
    # 25 messages at a 30 s timeout each would hold the batch for minutes: once one message
    # finds the provider down, the rest wait for their retry without another timeout.
    settings.EMAIL_BACKEND = f"{__name__}.TimingOutBackend"
    monkeypatch.setattr(TimingOutBackend, "tries", 0)
    first, second, third = (reply(case, agent) for _ in range(3))

    statuses = delivery.deliver_interactions(interaction_ids=[first.pk, second.pk, third.pk])

    assert statuses == {first.pk: "queued", second.pk: "queued", third.pk: "queued"}
    assert TimingOutBackend.tries == 1
    tried = fresh(first).data
    assert (tried["delivery_attempts"], tried["delivery_error"]) == (1, "timed out")
    for row in (second, third):
        data = fresh(row).data
        assert data["delivery_attempts"] == 0  # none was made: their attempts stay whole
        assert data["delivery_error"] == "not tried, the provider was down: timed out"
        assert data["delivery_due_at"] == tried["delivery_due_at"]
    assert not OutboxEmail.objects.exists()

    # Once the provider is back, each is sent once.
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"
    for row in (second, third):
        assert deliver_interaction_task(row.pk) == "sent"
        assert "delivery_error" not in fresh(row).data
    assert OutboxEmail.objects.count() == 2


def test_the_rest_of_a_batch_quotes_the_providers_error_not_anothers_give_up(
    settings, monkeypatch, agent, case
):
    settings.EMAIL_BACKEND = f"{__name__}.TimingOutBackend"
    monkeypatch.setattr(TimingOutBackend, "tries", 0)
    spent, fresh_one = reply(case, agent, delivery_attempts=4), reply(case, agent)

    statuses = delivery.deliver_interactions(interaction_ids=[spent.pk, fresh_one.pk])

    assert statuses == {spent.pk: "failed", fresh_one.pk: "queued"}
    assert fresh(spent).data["delivery_error"] == "gave up after 5 attempts: timed out"
    data = fresh(fresh_one).data
    assert data["delivery_error"] == "not tried, the provider was down: timed out"
    assert data["delivery_attempts"] == 0
    assert TimingOutBackend.tries == 1


def test_a_refused_message_does_not_stop_the_rest_of_its_batch(settings, agent, case):
    refused, fine = reply(case, agent), reply(case, agent)
    Interaction.objects.filter(pk=refused.pk).update(data={**refused.data, "to": ""})

    statuses = delivery.deliver_interactions(interaction_ids=[refused.pk, fine.pk])

    assert statuses == {refused.pk: "failed", fine.pk: "sent"}
    assert OutboxEmail.objects.get().to == "ann@example.com"


class SweptMidSendBackend(OutboxBackend):
    """A send so slow that the sweep gives up on it before the provider answers."""

    outcome: type[BaseException] | None = None

    def send_messages(self, email_messages):
        sweep_stuck_deliveries(now=timezone.now() + timedelta(hours=1))
        if self.outcome is not None:
            raise self.outcome(421, b"try again later")
        return super().send_messages(email_messages)


def test_a_slow_send_the_sweep_gave_up_on_still_records_that_it_was_sent(settings, agent, case):
    settings.EMAIL_BACKEND = f"{__name__}.SweptMidSendBackend"
    slow = reply(case, agent)

    assert delivery.deliver_interaction(interaction_id=slow.pk) == "sent"

    slow = fresh(slow)
    assert slow.status == "sent" and "delivery_error" not in slow.data
    assert OutboxEmail.objects.count() == 1


def test_a_slow_send_the_sweep_gave_up_on_is_not_retried_when_the_provider_was_down(
    settings, monkeypatch, agent, case
):
    settings.EMAIL_BACKEND = f"{__name__}.SweptMidSendBackend"
    monkeypatch.setattr(SweptMidSendBackend, "outcome", smtplib.SMTPResponseException)
    slow = reply(case, agent)

    assert delivery.deliver_interaction(interaction_id=slow.pk) == "failed"
    assert deliver_interaction_task(slow.pk) == "failed"  # no retry is scheduled

    slow = fresh(slow)
    assert slow.status == "failed" and slow.data["delivery_error"] == INTERRUPTED_REASON
    assert not OutboxEmail.objects.exists()


# --- the sweep never fights a live worker, and stays bounded -----------------------------------


def test_a_row_another_transaction_holds_is_skipped_not_waited_for(agent, case):
    ours = reply(case, agent, status="sending", created_at=NOW - timedelta(hours=1))
    locked, release, done = threading.Event(), threading.Event(), threading.Event()
    held: dict[str, int] = {}

    def worker_holding_a_row():
        # Another connection (a worker finishing its send) commits a stuck row, then locks it.
        try:
            customer = CustomerFactory(display_name="Bo Berg")
            row = Interaction.objects.create(
                customer=customer, channel="email", kind="message", direction="out",
                occurred_at=NOW, status="sending", data={},
            )  # fmt: skip
            Interaction.objects.filter(pk=row.pk).update(created_at=NOW - timedelta(hours=2))
            held["pk"] = row.pk
            with transaction.atomic():
                Interaction.objects.select_for_update().get(pk=row.pk)
                locked.set()
                release.wait(timeout=30)
                # Leave nothing behind for other tests: the worker's row goes with its lock.
                Interaction.objects.filter(pk=row.pk).delete()
                customer.delete()
        finally:
            locked.set()
            connection.close()  # this thread's own connection
            done.set()

    thread = threading.Thread(target=worker_holding_a_row)
    thread.start()
    try:
        assert locked.wait(timeout=30) and "pk" in held
        assert Interaction.objects.get(pk=held["pk"]).status == "sending"  # visible to us
        with connection.cursor() as cursor:  # waiting for the lock would fail, not hang
            cursor.execute("SET LOCAL lock_timeout = '2s'")
        result = sweep_stuck_deliveries(now=NOW)
    finally:
        release.set()
        thread.join(timeout=30)

    assert result.failed == [ours.pk]  # same age and status, only not locked
    assert fresh(ours).status == "failed"
    assert done.is_set() and not Interaction.objects.filter(pk=held["pk"]).exists()


def test_one_run_takes_at_most_its_limit_oldest_first(agent, case):
    oldest, middle, newest = (
        reply(case, agent, created_at=NOW - timedelta(minutes=minutes)) for minutes in (30, 20, 10)
    )

    assert sweep_stuck_deliveries(now=NOW, limit=2).requeued == [oldest.pk, middle.pk]
    assert sweep_stuck_deliveries(now=NOW, limit=2).requeued == [newest.pk]


def test_inbound_and_sent_messages_are_never_swept(agent, case):
    sent = reply(case, agent, status="sent")
    inbound = Interaction.objects.create(
        customer=case.customer, channel="email", kind="message", direction="in",
        occurred_at=NOW, status="queued",
    )  # fmt: skip

    result = sweep_stuck_deliveries(now=NOW + timedelta(days=1))

    assert (result.requeued, result.failed) == ([], [])
    assert (fresh(sent).status, fresh(inbound).status) == ("sent", "queued")


BUSY_ROWS = 20_000


@pytest.fixture
def busy_timeline(case):
    """A timeline the planner takes seriously: many delivered emails (each with the provider's
    id) around the test's own rows, and fresh statistics, so EXPLAIN shows the real plan."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO customers_interaction
                (customer_id, channel, kind, direction, occurred_at, created_at, actor_label,
                 title, body_text, body_html, is_private, external_id, status, data)
            SELECT %s, 'email', 'message', 'out', now(), now() - n * interval '1 minute', '',
                   '', '', '', false, '<busy-' || n || '@x>', 'delivered',
                   jsonb_build_object('provider_message_id', 'busy-' || n)
            FROM generate_series(1, %s) AS n
            """,
            [case.customer_id, BUSY_ROWS],
        )
        cursor.execute("ANALYZE customers_interaction")


def explain(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_sweep_reads_the_in_flight_partial_index(agent, case, busy_timeline):
    lost = reply(case, agent, created_at=NOW - timedelta(minutes=3))
    with CaptureQueriesContext(connection) as queries:
        assert sweep_stuck_deliveries(now=NOW).requeued == [lost.pk]
    [select] = [q["sql"] for q in queries if "SKIP LOCKED" in q["sql"]]

    assert "Index Scan using outbound_in_flight" in explain(select)


# --- the beat task --------------------------------------------------------------------------------


def test_beat_runs_the_sweep_every_minute_and_the_task_is_registered(settings):
    [entry] = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "workbench.sweep_stuck_deliveries"
    ]
    assert entry["schedule"] == 60.0 and 0 < entry["options"]["expires"] <= 60
    current_app.loader.import_default_modules()
    assert "workbench.sweep_stuck_deliveries" in current_app.tasks


def test_the_beat_task_fails_interrupted_messages_and_is_safe_to_run_twice(
    agent, case, django_capture_on_commit_callbacks
):
    from workbench.tasks import sweep_stuck_deliveries_task

    stuck = reply(case, agent, status="sending", created_at=timezone.now() - timedelta(hours=1))

    with django_capture_on_commit_callbacks(execute=False):
        assert sweep_stuck_deliveries_task() == {"requeued": 0, "failed": 1}
        assert sweep_stuck_deliveries_task() == {"requeued": 0, "failed": 0}
    assert fresh(stuck).data["delivery_error"] == INTERRUPTED_REASON


# --- delivery receipts find our message through the provider-id index ---------------------------


def test_a_receipt_by_provider_id_finds_the_reply_through_its_index(agent, case, busy_timeline):
    sent = reply(case, agent, status="sent", provider_message_id="pm-883953f4")
    reply(case, agent, status="sent", provider_message_id="pm-other")

    with CaptureQueriesContext(connection) as queries:
        found = mark_delivery(status="delivered", provider_message_id="pm-883953f4")

    assert found.pk == sent.pk and fresh(sent).status == "delivered"
    [lookup] = [q["sql"] for q in queries if "FOR UPDATE" in q["sql"]]
    assert "provider_message_id" in lookup
    assert "Bitmap Index Scan on outbound_by_provider_id" in explain(lookup)


def test_a_receipt_for_an_unknown_provider_id_changes_nothing(agent, case):
    sent = reply(case, agent, status="sent", provider_message_id="pm-883953f4")

    assert mark_delivery(status="failed", provider_message_id="pm-unknown") is None
    assert fresh(sent).status == "sent"
