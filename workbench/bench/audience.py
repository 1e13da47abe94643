"""`bench audience`: preflight and materialisation of one campaign over 1,000,000 customers, against
a hand-written SQL floor and a per-customer Python loop.

The data is generated set-based (INSERT … SELECT generate_series) in the bench database: every
customer has an email identity and a time zone (London, New York or Tokyo, so some are in their
quiet hours at the bench's noon UTC); 70% have granted marketing-email consent (a third of the
rest granted and then withdrew it); 50,000 have an open case with an open refund commitment;
a slice have open complaint cases or open cases about the campaign's topic; 10% received three
marketing touches in the last seven days (the default cap). Then, at a fixed "now":

- `preflight`: campaigns.policy.preflight (one GROUP BY over the policy statement);
- `materialise`: campaigns.policy.materialise_touches (one INSERT … SELECT … ON CONFLICT);
- the floor: one hand-written INSERT … SELECT of the same rows for a twin campaign, with the
  policy's values inlined and plain LEFT JOINs on per-customer facts; the two campaigns' touches
  are compared row by row (status, reason, not_before) and any difference fails the run;
- the loop: the same rules evaluated customer by customer through the ORM (the obvious Python
  implementation) on a sample, with its touches bulk-inserted, scaled to the whole audience.

`dispatch_per_s` comes from the dispatch benchmark (`bench dispatch`: 10,000 email touches at
full scale, one Celery worker at its default concurrency, on a database of its own), run after
the audience's database is dropped, so the figures of the issue are in one JSON line.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection, transaction

from campaigns.models import Campaign, CampaignStatus, Segment, Touch
from campaigns.policy import current_policy, materialise_touches, preflight
from cases.models import BusinessCalendar, Case, Commitment, Queue
from customers.models import Consent, Customer, Identity
from workbench.bench import dispatch
from workbench.bench.common import (
    bench_database,
    forget_redis_prefix,
    is_isolated,
    load_average,
    run_isolated,
    table,
)

TARGET_VS_FLOOR = 1.5
TARGET_VS_LOOP = 50.0
TARGET_DISPATCH_PER_S = dispatch.TARGET_DISPATCH_PER_S
ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo")
TOPIC = "upgrade"


@dataclass(frozen=True)
class AudienceScale:
    customers: int
    with_commitments: int
    loop_sample: int


SCALES = {
    "small": AudienceScale(customers=20_000, with_commitments=1_000, loop_sample=2_000),
    "full": AudienceScale(customers=1_000_000, with_commitments=50_000, loop_sample=20_000),
}


def run(*, scale: str) -> tuple[dict, str]:
    if is_isolated():
        figures = measure(SCALES[scale], scale)
    else:
        figures = run_isolated("audience", scale)
        if not figures.get("failed"):
            sent, _report = dispatch.run(scale=scale)
            figures["dispatch_per_s"] = sent["dispatch_per_s"]
    return figures, render(figures)


def measure(size: AudienceScale, scale: str) -> dict:
    prefix = settings.REDIS_PREFIX
    figures: dict = {"scale": scale, "customers": size.customers,
                     "load_before": load_average(), "dispatch_per_s": None}  # fmt: skip
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    try:
        started = time.perf_counter()
        with bench_database():
            figures["database_s"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            campaigns = generate(size, now)
            figures["generate_s"] = round(time.perf_counter() - started, 1)
            figures |= measure_policy(campaigns, size, now)
    finally:
        forget_redis_prefix(prefix)
    figures["load_after"] = load_average()
    return figures


# --- the data ------------------------------------------------------------------------------------


def generate(size: AudienceScale, now: datetime) -> dict[str, Campaign]:
    """The customers and their facts; the measured campaign, its floor twin and the loop's."""
    calendar = BusinessCalendar.objects.create(name="Bench", timezone="UTC", working_hours={})
    queue = Queue.objects.create(name="Bench support", calendar=calendar)
    segment = Segment.objects.create(name="Everyone", definition={"match": "all", "conditions": []})
    past = [
        Campaign.objects.create(
            name=f"Past {n}",
            channel="email",
            content="x",
            segment=segment,
            status=CampaignStatus.DONE,
        )
        for n in range(3)
    ]
    campaigns = {
        name: Campaign.objects.create(
            name=f"Bench {name}",
            channel="email",
            content="Hello",
            segment=segment,
            topics=[TOPIC],
            status=CampaignStatus.SENDING,
        )
        for name in ("policy", "floor", "loop")
    }
    params = {"n": size.customers, "commitments": size.with_commitments, "zones": list(ZONES),
              "queue": queue.pk, "now": now, "past": [c.pk for c in past]}  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO customers_customer
                (display_name, attributes, lifecycle_stage, timezone, created_at, updated_at)
            SELECT 'Customer ' || n, jsonb_build_object('plan', (ARRAY['free','pro'])[1 + n %% 2]),
                   'customer', (%(zones)s::text[])[1 + n %% 3], %(now)s, %(now)s
            FROM generate_series(0, %(n)s - 1) AS n
            """,
            params,
        )
        cursor.execute("SELECT min(id), max(id) FROM customers_customer")
        first_id, last_id = cursor.fetchone()
        if last_id - first_id + 1 != size.customers:
            raise CommandError("the generated customers' ids are not one run")
        params["first"] = first_id
        cursor.execute(
            """
            INSERT INTO customers_identity (customer_id, channel, handle, display_name, created_at)
            SELECT id, 'email', 'c' || id || '@example.com', display_name, %(now)s
            FROM customers_customer
            """,
            params,
        )
        # k = id - first: k %% 10 in (0, 1, 2) have no consent; k %% 10 = 0 withdrew it.
        cursor.execute(
            """
            INSERT INTO customers_consent (customer_id, purpose, is_granted, source, note,
                                           recorded_at)
            SELECT id, 'marketing_email', true, 'web', '', %(now)s - interval '90 days'
            FROM customers_customer WHERE (id - %(first)s) %% 10 NOT IN (1, 2)
            UNION ALL
            SELECT id, 'marketing_email', false, 'email', '', %(now)s - interval '10 days'
            FROM customers_customer WHERE (id - %(first)s) %% 10 = 0
            """,
            params,
        )
        # Open cases with an open commitment: every (n / commitments)-th customer, k %% 20 = 5.
        cursor.execute(
            """
            INSERT INTO cases_case (customer_id, subject, status, priority, priority_rank,
                queue_id, channel, thread_key, topics, created_at, updated_at, sla_minutes_used,
                pauses_marketing)
            SELECT id, 'Refund for order ' || id, 'open', 'normal', 2, %(queue)s, 'email', '',
                   ARRAY['billing']::varchar[], %(now)s - interval '2 days', %(now)s, 0, false
            FROM customers_customer
            WHERE (id - %(first)s) %% (%(n)s / %(commitments)s) = 5
            """,
            params,
        )
        cursor.execute(
            """
            INSERT INTO cases_commitment (case_id, customer_id, kind, text, due_at, status,
                topics, created_at)
            SELECT id, customer_id, 'refund', 'Refund to the card', %(now)s + interval '3 days',
                   'open', ARRAY['billing']::varchar[], %(now)s - interval '1 day'
            FROM cases_case
            """,
            params,
        )
        # Complaints (1 in 100), cases about the campaign's topic (1 in 100), solved complaints
        # still cooling off (1 in 200).
        cursor.execute(
            """
            INSERT INTO cases_case (customer_id, subject, status, priority, priority_rank,
                queue_id, channel, thread_key, topics, created_at, updated_at, sla_minutes_used,
                pauses_marketing, solved_at)
            SELECT id, 'Case ' || id,
                   CASE WHEN (id - %(first)s) %% 200 = 17 THEN 'solved' ELSE 'open' END,
                   CASE WHEN (id - %(first)s) %% 100 = 7 THEN 'high' ELSE 'normal' END,
                   CASE WHEN (id - %(first)s) %% 100 = 7 THEN 1 ELSE 2 END,
                   %(queue)s, 'email', '',
                   CASE WHEN (id - %(first)s) %% 100 = 8 THEN ARRAY['upgrade']::varchar[]
                        WHEN (id - %(first)s) %% 200 = 17 THEN ARRAY['complaint']::varchar[]
                        ELSE ARRAY[]::varchar[] END,
                   %(now)s - interval '5 days', %(now)s, 0, false,
                   CASE WHEN (id - %(first)s) %% 200 = 17 THEN %(now)s - interval '2 days' END
            FROM customers_customer
            WHERE (id - %(first)s) %% 100 IN (7, 8) OR (id - %(first)s) %% 200 = 17
            """,
            params,
        )
        # 10%% capped: three marketing touches sent in the last week (k %% 10 = 3).
        cursor.execute(
            """
            INSERT INTO campaigns_touch (campaign_id, customer_id, status, reason, reason_detail,
                created_at, updated_at, sent_at, attempts, error)
            SELECT campaign_id, c.id, 'sent', '', '', %(now)s, %(now)s,
                   %(now)s - make_interval(days => 1 + ordinality::int), 1, ''
            FROM customers_customer c,
                 unnest(%(past)s::bigint[]) WITH ORDINALITY AS p(campaign_id, ordinality)
            WHERE (c.id - %(first)s) %% 10 = 3
            """,
            params,
        )
        cursor.execute("ANALYZE")
    return campaigns


# --- the measurements ----------------------------------------------------------------------------


def measure_policy(campaigns: dict[str, Campaign], size: AudienceScale, now: datetime) -> dict:
    figures: dict = {}
    started = time.perf_counter()
    result = preflight(campaign=campaigns["policy"], now=now)
    figures["preflight_s"] = round(time.perf_counter() - started, 3)
    figures["preflight_counts"] = dict(sorted(result.counts.items()))
    if result.total != size.customers:
        raise CommandError(f"preflight counted {result.total} of {size.customers} customers")

    started = time.perf_counter()
    inserted = materialise_touches(campaign=campaigns["policy"], now=now)
    figures["materialise_s"] = round(time.perf_counter() - started, 3)
    figures["touches"] = inserted
    figures["touches_per_s"] = round(inserted / figures["materialise_s"], 1)

    started = time.perf_counter()
    floor_rows = materialise_floor(campaigns["floor"], now)
    figures["floor_s"] = round(time.perf_counter() - started, 3)
    figures["materialise_vs_floor"] = round(figures["materialise_s"] / figures["floor_s"], 2)
    differences = compare(campaigns["policy"], campaigns["floor"])
    if floor_rows != inserted or differences:
        raise CommandError(
            f"the floor made {floor_rows} touches, materialise {inserted}; {differences} differ"
        )
    figures["floor_differences"] = differences

    sample = min(size.loop_sample, size.customers)
    started = time.perf_counter()
    loop_rows = materialise_by_loop(campaigns["loop"], now, sample)
    loop_s = time.perf_counter() - started
    figures["loop_sample"] = sample
    figures["loop_s"] = round(loop_s, 3)
    figures["loop_s_scaled"] = round(loop_s * size.customers / sample, 1)
    figures["loop_vs_materialise"] = round(figures["loop_s_scaled"] / figures["materialise_s"], 1)
    figures["loop_differences"] = compare(campaigns["policy"], campaigns["loop"])
    if loop_rows != sample or figures["loop_differences"]:
        raise CommandError(f"the loop disagrees with materialise on {figures['loop_differences']}")
    return figures


def materialise_floor(campaign: Campaign, now: datetime) -> int:
    """The same touches by one hand-written statement: per-customer facts LEFT JOINed, the
    policy's values inlined (the bench uses the shipped defaults), first reason by a CASE."""
    policy = current_policy()
    if policy.quiet_hours_start <= policy.quiet_hours_end:
        raise CommandError("the floor is written for quiet hours across midnight (the default)")
    params = {"campaign": campaign.pk, "now": now, "topics": list(campaign.topics),
              "cap": policy.frequency_cap_touches,
              "cap_since": now - timedelta(days=policy.frequency_cap_days),
              "cool_since": now - timedelta(days=policy.cool_off_days),
              "cool": timedelta(days=policy.cool_off_days),
              "cp": list(policy.complaint_priorities), "ct": list(policy.complaint_topics),
              "qs": policy.quiet_hours_start, "qe": policy.quiet_hours_end}  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")  # as materialise_touches runs: the same rules
        cursor.execute(
            """
INSERT INTO campaigns_touch (campaign_id, customer_id, status, reason, reason_detail, not_before,
    created_at, updated_at, held_at, attempts, error)
SELECT %(campaign)s, id,
       CASE WHEN reason IS NULL THEN 'pending'
            WHEN reason IN ('no_identity', 'no_consent', 'topic_conflict') THEN 'suppressed'
            ELSE 'held' END,
       coalesce(reason, ''), '',
       CASE WHEN reason IS NULL AND (lt::time >= %(qs)s OR lt::time < %(qe)s) THEN
            (CASE WHEN lt::time < %(qe)s THEN lt::date + %(qe)s ELSE lt::date + 1 + %(qe)s END)
            AT TIME ZONE tz END,
       %(now)s, %(now)s,
       CASE WHEN reason NOT IN ('no_identity', 'no_consent', 'topic_conflict') THEN %(now)s END,
       0, ''
FROM (
    SELECT c.id, c.timezone AS tz, %(now)s::timestamptz AT TIME ZONE c.timezone AS lt,
           CASE WHEN i.customer_id IS NULL THEN 'no_identity'
                WHEN k.is_granted IS NOT TRUE THEN 'no_consent'
                WHEN oc.topic THEN 'topic_conflict'
                WHEN oc.pause THEN 'agent_pause'
                WHEN m.customer_id IS NOT NULL THEN 'open_commitment'
                WHEN oc.complaint THEN 'open_complaint'
                WHEN sc.customer_id IS NOT NULL OR bc.customer_id IS NOT NULL THEN 'cool_off'
                WHEN t.customer_id IS NOT NULL THEN 'frequency_cap' END AS reason
    FROM customers_customer c
    LEFT JOIN (SELECT DISTINCT customer_id FROM customers_identity WHERE channel = 'email') i
           ON i.customer_id = c.id
    LEFT JOIN (SELECT DISTINCT ON (customer_id) customer_id, is_granted FROM customers_consent
               WHERE purpose = 'marketing_email'
               ORDER BY customer_id, recorded_at DESC, id DESC) k ON k.customer_id = c.id
    LEFT JOIN (SELECT customer_id, bool_or(topics && %(topics)s::varchar[]) AS topic,
                      bool_or(pauses_marketing) AS pause,
                      bool_or(priority = ANY(%(cp)s) OR topics && %(ct)s::varchar[]) AS complaint
               FROM cases_case WHERE status IN ('new', 'open', 'pending')
               GROUP BY customer_id) oc ON oc.customer_id = c.id
    LEFT JOIN (SELECT DISTINCT customer_id FROM cases_commitment WHERE status = 'open') m
           ON m.customer_id = c.id
    LEFT JOIN (SELECT DISTINCT customer_id FROM cases_case
               WHERE status IN ('solved', 'closed') AND solved_at > %(cool_since)s
                 AND (priority = ANY(%(cp)s) OR topics && %(ct)s::varchar[])) sc
           ON sc.customer_id = c.id
    LEFT JOIN (SELECT DISTINCT customer_id FROM cases_commitment
               WHERE status = 'broken' AND resolved_at > %(cool_since)s) bc
           ON bc.customer_id = c.id
    LEFT JOIN (SELECT customer_id FROM campaigns_touch
               WHERE status = 'sent' AND sent_at > %(cap_since)s
               GROUP BY customer_id HAVING count(*) >= %(cap)s) t ON t.customer_id = c.id
    WHERE c.merged_into_id IS NULL AND c.erased_at IS NULL
) AS decided
ON CONFLICT (campaign_id, customer_id) DO NOTHING
""",
            params,
        )
        return cursor.rowcount


def compare(left: Campaign, right: Campaign) -> int:
    """How many of `right`'s touches differ from `left`'s touch for the same customer (status,
    reason, not_before) or have none. Statistics are refreshed first: a million new touches
    would otherwise make the planner expect one row per campaign and loop over all of them."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE campaigns_touch")
        cursor.execute(
            """
            SELECT count(*) FROM campaigns_touch b
            LEFT JOIN campaigns_touch a ON a.campaign_id = %(l)s AND a.customer_id = b.customer_id
            WHERE b.campaign_id = %(r)s
              AND (a.id IS NULL OR (a.status, a.reason, a.not_before)
                                   IS DISTINCT FROM (b.status, b.reason, b.not_before))
            """,
            {"l": left.pk, "r": right.pk},
        )
        return cursor.fetchone()[0]


def materialise_by_loop(campaign: Campaign, now: datetime, sample: int) -> int:
    """The baseline: the rules one customer at a time through the ORM, then one bulk insert."""
    policy = current_policy()
    topics = set(campaign.topics)
    cap_since = now - timedelta(days=policy.frequency_cap_days)
    cool_since = now - timedelta(days=policy.cool_off_days)
    touches = []
    customers = Customer.objects.filter(merged_into__isnull=True, erased_at__isnull=True)
    for customer in customers.order_by("pk")[:sample]:
        reason = None
        latest = (
            Consent.objects.filter(customer=customer, purpose="marketing_email")
            .order_by("-recorded_at", "-id")
            .first()
        )
        cases = list(Case.objects.filter(customer=customer))
        open_cases = [c for c in cases if c.status in ("new", "open", "pending")]

        def complaint(case) -> bool:
            return case.priority in policy.complaint_priorities or bool(
                set(case.topics) & set(policy.complaint_topics)
            )

        if not Identity.objects.filter(customer=customer, channel="email").exists():
            reason = "no_identity"
        elif latest is None or not latest.is_granted:
            reason = "no_consent"
        elif any(set(c.topics) & topics for c in open_cases):
            reason = "topic_conflict"
        elif any(c.pauses_marketing for c in open_cases):
            reason = "agent_pause"
        elif Commitment.objects.filter(customer=customer, status="open").exists():
            reason = "open_commitment"
        elif any(complaint(c) for c in open_cases):
            reason = "open_complaint"
        elif any(
            c.status in ("solved", "closed") and c.solved_at and c.solved_at > cool_since
            and complaint(c) for c in cases
        ) or Commitment.objects.filter(
            customer=customer, status="broken", resolved_at__gt=cool_since
        ).exists():  # fmt: skip
            reason = "cool_off"
        elif (
            Touch.objects.filter(customer=customer, status="sent", sent_at__gt=cap_since).count()
            >= policy.frequency_cap_touches
        ):
            reason = "frequency_cap"
        not_before = None
        if reason is None:
            not_before = _quiet_release(customer.timezone, now, policy)
        status = (
            "pending" if reason is None
            else "suppressed" if reason in ("no_identity", "no_consent", "topic_conflict")
            else "held"
        )  # fmt: skip
        touches.append(
            Touch(
                campaign=campaign,
                customer=customer,
                status=status,
                reason=reason or "",
                not_before=not_before,
                held_at=now if status == "held" else None,
            )
        )
    Touch.objects.bulk_create(touches, batch_size=2_000)
    return len(touches)


def _quiet_release(zone: str, now: datetime, policy) -> datetime | None:
    tz = ZoneInfo(zone or "UTC")
    local = now.astimezone(tz)
    start, end = policy.quiet_hours_start, policy.quiet_hours_end
    if not (local.time() >= start or local.time() < end):
        return None
    day = local.date() if local.time() < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz)


# --- the report ----------------------------------------------------------------------------------


def render(figures: dict) -> str:
    vs_floor = figures["materialise_vs_floor"]
    vs_loop = figures["loop_vs_materialise"]
    rows = [
        ["preflight", figures["preflight_s"], "", ""],
        ["materialise", figures["materialise_s"], f"{vs_floor:g} x floor",
         f"<= {TARGET_VS_FLOOR:g} x: {_verdict(vs_floor <= TARGET_VS_FLOOR)}"],
        ["floor (hand-written SQL)", figures["floor_s"], "", ""],
        [f"loop ({figures['loop_sample']:,} customers, scaled)", figures["loop_s_scaled"],
         f"{vs_loop:g} x materialise",
         f">= {TARGET_VS_LOOP:g} x: {_verdict(vs_loop >= TARGET_VS_LOOP)}"],
    ]  # fmt: skip
    counts = ", ".join(f"{k} {v:,}" for k, v in figures["preflight_counts"].items())
    dispatch = figures.get("dispatch_per_s")
    return "\n".join([
        f"bench audience ({figures['scale']}): {figures['customers']:,} customers "
        f"(database {figures['database_s']:g}s, data {figures['generate_s']:g}s; load average "
        f"{figures['load_before']:.2f} before, {figures['load_after']:.2f} after, on "
        f"{os.cpu_count()} cores)",
        "",
        table(["step", "seconds", "", "target"], rows),
        "",
        f"touches/s: {figures['touches_per_s']:,.1f} ({figures['touches']:,} touches); "
        f"floor and loop touches identical to materialise's",
        f"preflight: {counts}",
        f"dispatch_per_s: {dispatch if dispatch is not None else 'not measured'}"
        + (f" (bench dispatch; target >= {TARGET_DISPATCH_PER_S:,.0f}/s: "
           f"{_verdict(dispatch >= TARGET_DISPATCH_PER_S)})" if dispatch is not None else ""),
    ])  # fmt: skip


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"
