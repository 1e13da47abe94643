"""Exactly once: a real Celery worker sends a campaign (10,000 touches with
WORKBENCH_EXACTLY_ONCE_TOUCHES=10000, 1,000 by default) and is killed (SIGKILL) in
the middle; another worker is started and finishes it. Every eligible customer then has exactly
one sent touch and one outbound message on the timeline, nobody has two, and no address is in
the outbox twice.

The workers run with the project's settings on this test's database (committed data:
transactional), with a broker queue of this run alone (WORKBENCH_CELERY_QUEUE), and
are driven the way beat drives them: `campaigns.start_due_campaigns` every few seconds.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import time as clock_time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from celery import current_app
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from campaigns.models import ContactPolicy, Touch
from customers.models import Consent, Customer, Identity, Interaction
from tests.campaigns.factories import CampaignFactory
from tests.cases.factories import CaseFactory, CommitmentFactory
from workbench.models import OutboxEmail

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
# 1,000 by default, to keep the test near a minute: delivery costs three commits a message, and
# a busy two-core machine delivers a few dozen a second. WORKBENCH_EXACTLY_ONCE_TOUCHES=10000
# runs the size (about ten minutes there).
ELIGIBLE = int(os.environ.get("WORKBENCH_EXACTLY_ONCE_TOUCHES", "1000"))
HELD = 50  # open commitments
NO_CONSENT = 50
KILL_AFTER_SENT = ELIGIBLE // 5
KICK_EVERY_S = 3.0  # how often the test plays beat
STALLED_AFTER_S = 3
TIMEOUT_S = 600


def worker_env(queue: str) -> dict[str, str]:
    """The worker's environment: this test's database, Redis prefix and queue."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    database = urlunsplit(parts._replace(path=f"/{connection.settings_dict['NAME']}"))
    return {
        **os.environ,
        "DATABASE_URL": database,
        "WORKBENCH_CELERY_QUEUE": queue,
        "PYTHONUNBUFFERED": "1",
    }


def start_worker(queue: str, log: Path) -> subprocess.Popen:
    name = f"{queue}-{time.time_ns()}@test"
    command = [sys.executable, "-m", "celery", "-A", "workbench", "worker", "-P", "prefork",
               "-c", "2", "-Q", queue, "--loglevel", "WARNING", "--without-gossip",
               "--without-mingle", "--without-heartbeat", "-n", name]  # fmt: skip
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=worker_env(queue),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: SIGKILL reaches the pool too
    )


def kill(worker: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)


def kick(queue: str) -> None:
    """What beat sends every 15 s (with a shorter stall threshold, to keep the test short)."""
    current_app.send_task(
        "campaigns.start_due_campaigns",
        kwargs={"stalled_after_s": STALLED_AFTER_S},
        queue=queue,
    )


def audience() -> set[int]:
    """ELIGIBLE reachable customers, plus some held by a commitment and some without consent;
    returns the eligible ids."""
    customers = Customer.objects.bulk_create(
        Customer(display_name=f"Customer {n}", timezone="UTC")
        for n in range(ELIGIBLE + HELD + NO_CONSENT)
    )
    Identity.objects.bulk_create(
        Identity(customer=c, channel="email", handle=f"c{c.pk}@example.test") for c in customers
    )
    with_consent = customers[: ELIGIBLE + HELD]
    Consent.objects.bulk_create(
        Consent(customer=c, purpose="marketing_email", is_granted=True, source="web",
                recorded_at=timezone.now() - timedelta(days=1))
        for c in with_consent
    )  # fmt: skip
    for customer in customers[ELIGIBLE : ELIGIBLE + HELD]:
        CommitmentFactory(case=CaseFactory(customer=customer))
    return {c.pk for c in customers[:ELIGIBLE]}


def progress(campaign) -> dict:
    campaign.refresh_from_db()
    touches = dict(
        Touch.objects.filter(campaign=campaign).values_list("status").annotate(Count("id"))
    )
    messages = Interaction.objects.filter(kind="campaign_touch").values_list("status")
    return {"campaign": campaign.status, "touches": touches,
            "messages": dict(messages.annotate(Count("id")))}  # fmt: skip


def sent_count(campaign) -> int:
    return Touch.objects.filter(campaign=campaign, status="sent").count()


def test_killed_worker_mid_campaign_sends_nobody_twice(tmp_path, settings):
    latest = ContactPolicy.objects.order_by("-version").first()
    # (A transactional test before this one may have flushed the migration's version 1.)
    ContactPolicy.objects.create(
        version=(latest.version if latest else 0) + 1,
        quiet_hours_start=clock_time(0),
        quiet_hours_end=clock_time(0),
    )
    eligible = audience()
    campaign = CampaignFactory(
        status="scheduled",
        scheduled_at=timezone.now() - timedelta(seconds=1),
        content="Hello {{ customer.first_name }}",
    )
    queue = f"{settings.REDIS_PREFIX}-exactly-once-{os.getpid()}"
    log = tmp_path / "workers.log"
    workers = [start_worker(queue, log)]
    try:
        kick(queue)
        deadline = time.monotonic() + TIMEOUT_S
        while sent_count(campaign) < KILL_AFTER_SENT:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert workers[0].poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        kill(workers[0])
        sent_when_killed = sent_count(campaign)
        assert sent_when_killed < ELIGIBLE  # it died in the middle

        workers.append(start_worker(queue, log))
        while True:
            kick(queue)
            campaign.refresh_from_db()
            queued = Interaction.objects.filter(
                kind="campaign_touch", data__campaign_id=campaign.pk, status="queued"
            )
            if campaign.status == "done" and not queued.exists():
                break
            assert time.monotonic() < deadline, (progress(campaign), log.read_text()[-3000:])
            time.sleep(KICK_EVERY_S)
    finally:
        for worker in workers:
            kill(worker)
        with current_app.connection_for_write() as conn:
            conn.default_channel.client.delete(queue)

    sent = Touch.objects.filter(campaign=campaign, status="sent")
    assert set(sent.values_list("customer_id", flat=True)) == eligible
    assert sent.count() == ELIGIBLE
    held = Touch.objects.filter(campaign=campaign).exclude(customer_id__in=eligible)
    assert set(held.values_list("status", flat=True)) == {"expired", "suppressed"}
    messages = Interaction.objects.filter(kind="campaign_touch", direction="out")
    per_customer = messages.values("customer_id").annotate(n=Count("id"))
    assert {row["customer_id"] for row in per_customer} == eligible
    assert max(row["n"] for row in per_customer) == 1
    assert messages.count() == ELIGIBLE
    assert not messages.filter(status="queued").exists()
    # Delivery is at most once: a message whose worker died while it was being handed to the
    # backend stays "sending" and is never sent again. Nobody got two; all the others got one.
    mail_per_address = OutboxEmail.objects.values("to").annotate(n=Count("id"))
    assert all(row["n"] == 1 for row in mail_per_address)
    delivered = messages.filter(status="sent").count()
    assert delivered + messages.filter(status="sending").count() == ELIGIBLE
    assert delivered <= OutboxEmail.objects.count() <= ELIGIBLE
