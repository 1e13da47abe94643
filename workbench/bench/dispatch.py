"""`bench dispatch`: a 10,000-touch email campaign sent by one Celery worker to the local outbox.

The figure is end to end, as a marketer would see it: from the beat poll that starts the campaign
(materialisation included) until every touch is sent, checked against the policy under its
customer's lock, on the timeline and delivered to the outbox. One Celery worker on a broker queue
of its own, on the bench's own database: measured as the worker starts by default (one child
process per core) and held to one process (`-c 1`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import time as clock_time
from datetime import timedelta
from pathlib import Path

from celery import current_app
from django.utils import timezone

from campaigns.audience import validate_definition
from campaigns.models import Campaign, CampaignStatus, ContactPolicy, Segment, Touch
from customers.models import Consent, Customer, Identity, Interaction
from workbench.bench.common import bench_database, bench_prefix, forget_redis_prefix
from workbench.models import OutboxEmail

SIZES = {"small": 1_000, "full": 10_000}
TARGET_DISPATCH_PER_S = 1_000.0
READY_TIMEOUT_S = 60
DONE_TIMEOUT_S = 1800
ROOT = Path(__file__).resolve().parents[2]


def build_audience(count: int) -> dict:
    """`count` new customers with an email address and marketing consent, in UTC, and a policy
    without quiet hours (the bench runs at any hour) or frequency cap; return the definition of
    a segment of exactly them (the database may hold other customers: `bench audience`'s)."""
    cohort = f"dispatch-{time.time_ns()}"
    customers = Customer.objects.bulk_create(
        Customer(display_name=f"Customer {n}", timezone="UTC", attributes={"bench": cohort})
        for n in range(count)
    )
    Identity.objects.bulk_create(
        Identity(customer=c, channel="email", handle=f"c{c.pk}@bench.test") for c in customers
    )
    Consent.objects.bulk_create(
        Consent(customer=c, purpose="marketing_email", is_granted=True, source="web",
                recorded_at=timezone.now() - timedelta(days=1))
        for c in customers
    )  # fmt: skip
    latest = ContactPolicy.objects.order_by("-version").first()
    ContactPolicy.objects.create(
        version=(latest.version if latest else 0) + 1,
        quiet_hours_start=clock_time(0),
        quiet_hours_end=clock_time(0),
        frequency_cap_touches=0,
    )
    return validate_definition(
        {"match": "all",
         "conditions": [{"field": "attribute", "key": "bench", "op": "equals", "value": cohort}]}
    )  # fmt: skip


def dispatch_throughput(*, database_url: str, touches: int, concurrency: int = 1) -> dict:
    """Send a `touches`-customer campaign with one worker on `database_url` (the database this
    process is connected to). Returns {"touches", "sent_s", "sent_per_s", "dispatch_s",
    "dispatch_per_s"}: `sent` when every touch was checked, marked sent and on the timeline (the
    campaign is done), `dispatch` when every message was also delivered to the outbox."""
    definition = build_audience(touches)
    outbox_before = OutboxEmail.objects.filter(to__endswith="@bench.test").count()
    segment = Segment.objects.create(name=f"Bench {time.time_ns()}", definition=definition)
    campaign = Campaign.objects.create(
        name="Bench", channel="email", subject="Hello {{ customer.first_name }}",
        content="Hi {{ customer.first_name }}, our spring offer is here.", segment=segment,
        schedule_mode="now", scheduled_at=timezone.now(), status=CampaignStatus.SCHEDULED,
    )  # fmt: skip
    prefix = bench_prefix("dispatch")
    queue = f"{prefix}-queue"
    env = {**os.environ, "DATABASE_URL": database_url, "WORKBENCH_REDIS_PREFIX": prefix,
           "WORKBENCH_CELERY_QUEUE": queue, "EMAIL_BACKEND": "workbench.mail.OutboxBackend",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    log = Path(tempfile.mkstemp(prefix="bench-dispatch-", suffix=".log")[1])
    command = [sys.executable, "-m", "celery", "-A", "workbench", "worker", "-P", "prefork",
               "-c", str(concurrency), "-Q", queue, "--loglevel", "INFO", "--without-gossip",
               "--without-mingle", "--without-heartbeat", "-n", f"{queue}@bench"]  # fmt: skip
    output = log.open("ab")
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: "ready." in log.read_text(), READY_TIMEOUT_S, worker, log)
        started = time.perf_counter()
        # No stall kicks: other sending campaigns in the database (`bench audience`'s) stay put.
        current_app.send_task(
            "campaigns.start_due_campaigns", kwargs={"stalled_after_s": 10**9}, queue=queue
        )
        queued = Interaction.objects.filter(
            pk__in=Touch.objects.filter(campaign=campaign).values("interaction_id"),
            status__in=["queued", "sending"],
        )
        _wait_for(
            lambda: Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DONE,
            DONE_TIMEOUT_S,
            worker,
            log,
            every_s=0.1,
        )
        all_sent = time.perf_counter() - started
        _wait_for(lambda: not queued.exists(), DONE_TIMEOUT_S, worker, log, every_s=0.1)
        elapsed = time.perf_counter() - started
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
        with current_app.connection_for_write() as conn:
            conn.default_channel.client.delete(queue)
        forget_redis_prefix(prefix)
        log.unlink(missing_ok=True)
    sent = Touch.objects.filter(campaign=campaign, status="sent").count()
    delivered = OutboxEmail.objects.filter(to__endswith="@bench.test").count() - outbox_before
    if sent != touches or delivered != touches:
        raise RuntimeError(f"sent {sent} touches and {delivered} emails of {touches}")
    return {
        "touches": touches,
        "sent_s": round(all_sent, 3),
        "sent_per_s": round(touches / all_sent, 1),
        "dispatch_s": round(elapsed, 3),
        "dispatch_per_s": round(touches / elapsed, 1),
    }


def _wait_for(done, timeout_s, worker, log, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done within {timeout_s}s:\n{log.read_text()[-3000:]}")
        time.sleep(every_s)


def run(*, scale: str) -> tuple[dict, str]:
    """The `bench dispatch` scenario on a database of its own; (figures, report).

    Twice: one worker as `celery worker` starts by default (one child process per core), whose
    figures are the headline keys, and one worker held to a single process (`-c 1`), whose
    figures carry the suffix `_one_process`."""
    count = SIZES[scale]
    cores = os.cpu_count() or 1
    with bench_database() as database_url:
        figures = dispatch_throughput(database_url=database_url, touches=count, concurrency=cores)
        single = dispatch_throughput(database_url=database_url, touches=count, concurrency=1)
    figures["worker_processes"] = cores
    figures |= {f"{key}_one_process": value for key, value in single.items() if key != "touches"}
    lines = [f"dispatch: {count:,} email touches to the outbox, by one Celery worker"]
    for label, suffix, processes in (("default", "", cores), ("-c 1", "_one_process", 1)):
        lines += [
            f"  worker {label} ({processes} process{'es' if processes > 1 else ''}):",
            f"    checked, sent, on the timeline: {figures['sent_s' + suffix]:.2f} s = "
            f"{figures['sent_per_s' + suffix]:,.0f} touches/s",
            f"    delivered to the outbox:        {figures['dispatch_s' + suffix]:.2f} s = "
            f"{figures['dispatch_per_s' + suffix]:,.0f} touches/s "
            f"(target >= {TARGET_DISPATCH_PER_S:,.0f}/s)",
        ]
    return figures, "\n".join(lines) + "\n"
