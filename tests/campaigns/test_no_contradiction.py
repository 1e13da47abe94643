"""No contradiction under concurrency: while a campaign's dispatch runs in one thread, agents in
other threads record commitments for customers of its audience. Afterwards no customer has a
touch sent after a commitment that holds them was created: the send-time check and the
commitment take the same lock on the customer's marketing state (cases.holds)."""

import random
import threading
from datetime import time, timedelta

import pytest
from celery import current_app
from django.db import connection
from django.utils import timezone

from campaigns import dispatch
from campaigns.models import CampaignStatus, ContactPolicy, Touch
from cases.commitments import record_commitment
from cases.models import Commitment
from tests.campaigns.factories import CampaignFactory, reachable_customer
from tests.cases.factories import CaseFactory, ensure_case_events_render

ROUNDS = 4
CUSTOMERS = 80
AGENT_THREADS = 2

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _isolated(settings):
    """No quiet hours or frequency cap (the rounds send all day, several times to the same
    people); tasks the threads enqueue go to a queue of their own, dropped afterwards."""
    ensure_case_events_render()
    latest = ContactPolicy.objects.order_by("-version").first()
    ContactPolicy.objects.create(
        version=(latest.version if latest else 0) + 1,  # a flush may have removed version 1
        quiet_hours_start=time(0),
        quiet_hours_end=time(0),
        frequency_cap_touches=0,
    )
    queue = f"{settings.REDIS_PREFIX}-no-contradiction"
    previous = current_app.conf.task_default_queue
    current_app.conf.task_default_queue = queue
    yield
    current_app.conf.task_default_queue = previous
    with current_app.connection_for_write() as conn:
        conn.default_channel.client.delete(queue)


def _in_thread(work, barrier: threading.Barrier, errors: list) -> threading.Thread:
    def run():
        try:
            barrier.wait()
            work()
        except Exception as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    return threading.Thread(target=run)


def test_no_touch_is_sent_after_a_commitment_that_holds_its_customer(agent):
    rng = random.Random(6)
    customers = [reachable_customer(display_name=f"Customer {n}") for n in range(CUSTOMERS)]
    cases = {customer.pk: CaseFactory(customer=customer, assignee=agent) for customer in customers}
    for round_number in range(ROUNDS):
        campaign = CampaignFactory(
            status=CampaignStatus.SCHEDULED,
            scheduled_at=timezone.now() - timedelta(seconds=1),
            ends_at=timezone.now() + timedelta(days=1),
        )
        assert dispatch.start_due_campaigns(now=timezone.now()) == 1
        promised = rng.sample(customers, CUSTOMERS // 2)
        shares = [promised[n::AGENT_THREADS] for n in range(AGENT_THREADS)]

        def promise(share, round_number=round_number):
            for customer in share:
                record_commitment(
                    case=cases[customer.pk], kind="callback", text=f"Call back ({round_number})",
                    due_at=timezone.now() + timedelta(days=2), actor=agent,
                )  # fmt: skip

        errors: list = []
        barrier = threading.Barrier(1 + AGENT_THREADS)
        send = _in_thread(
            lambda c=campaign: dispatch.dispatch_chunk(campaign_id=c.pk), barrier, errors
        )
        threads = [send, *(_in_thread(lambda s=sh: promise(s), barrier, errors) for sh in shares)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)

        # Every touch of the campaign was decided (sent or held), none is left in between.
        touches = {t.customer_id: t for t in Touch.objects.filter(campaign=campaign)}
        assert len(touches) == CUSTOMERS
        assert {t.status for t in touches.values()} <= {"sent", "held"}
        # The guarantee: a sent touch went out before every open commitment of its customer.
        for commitment in Commitment.objects.filter(status="open"):
            touch = touches[commitment.customer_id]
            if touch.status == "sent":
                assert touch.sent_at < commitment.created_at, (round_number, commitment.pk)
        # And nobody whose commitment was already there when the round began was sent to.
        if round_number:
            for customer_id, touch in touches.items():
                earlier = Commitment.objects.filter(
                    customer_id=customer_id, created_at__lt=campaign.created_at
                )
                if earlier.exists():
                    assert touch.status != "sent", (round_number, customer_id)
