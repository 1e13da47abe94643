"""The dashboard's rollups: pre-counted quarter hours of each chart's numbers, refreshed by
Celery, so a page view reads a few thousand small rows instead of scanning the raw tables.

Each metric is one set-based statement (INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE)
over its raw table, rewriting every bucket from `since` on, in its own transaction under an
advisory lock (two refreshes of one metric queue up instead of interleaving):

- `inbound`: inbound messages per channel, by when they occurred. The timeline is append-only,
  so the refresh also records the highest interaction id it counted and readers add the rows
  above it: the chart is exact up to the last message, whatever the refresh's age.
- `sla`: per queue, cases by when they were opened, with the first-response and resolution
  targets met / settled (`detail` says which). A case's state changes after it was opened, so
  the frequent refresh recomputes the whole window of this metric.
- `commitments_resolved`: commitments kept or broken per queue (`detail` = status), by when.
- `touches`: campaign touches per campaign, by when they were made (`detail` = status/reason);
  state changes (held → sent), so recomputed over the whole window like `sla`.

Buckets are quarter hours in UTC (every time zone's offset is a whole number of them, so a
viewer's local day or hour is a whole number of buckets), and the same counts by the hour
(`<metric>:hour`) for viewers whose days start on a whole UTC hour: most, read 4x fewer rows.
Readers (`workbench.console.dashboard`) use the rollups for the closed buckets before the
viewer's midnight and the raw tables from there on, so "today" stays live; without a refresh
covering the period they read raw tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock

from celery import shared_task
from django.db import connection, transaction
from django.db.models import BigIntegerField, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from workbench.models import Rollup, RollupCoverage

INBOUND = "inbound"
SLA = "sla"
COMMITMENTS_RESOLVED = "commitments_resolved"
TOUCHES = "touches"
METRICS = (INBOUND, SLA, COMMITMENTS_RESOLVED, TOUCHES)
# Metrics counted by a time that never changes once the row exists: the frequent refresh only
# needs the last day. The others count a row's current state under its creation time.
RECENT_METRICS = (INBOUND, COMMITMENTS_RESOLVED)
WINDOW_METRICS = (SLA, TOUCHES)
FIRST_RESPONSE, RESOLUTION = "first_response", "resolution"
# 90 days plus the widest time-zone offsets either side, so every 90-day period is covered.
WINDOW_DAYS = 92
REFRESH_TASK = "workbench.refresh_rollups"
RECOMPUTE_TASK = "workbench.recompute_rollups"

_UPSERT = """
ON CONFLICT (metric, bucket_at, dimension, detail) DO UPDATE SET
    value = EXCLUDED.value, numerator = EXCLUDED.numerator, denominator = EXCLUDED.denominator
"""
_INSERT = """
INSERT INTO workbench_rollup (metric, bucket_at, dimension, detail, value, numerator, denominator)
"""
# One INSERT … SELECT per metric; parameters: metric, since, last_id. date_bin: quarter hours.
_SELECTS = {
    INBOUND: """
        SELECT %(metric)s, date_bin('15 minutes', occurred_at, TIMESTAMPTZ '2000-01-01Z'),
               channel, '', count(*), 0, 0
        FROM customers_interaction
        WHERE kind = 'message' AND direction = 'in' AND occurred_at >= %(since)s
          AND id <= %(last_id)s
        GROUP BY 2, 3
    """,
    # One row per (bucket, queue) and target: cases opened, met, settled (met or breached).
    SLA: """
        SELECT %(metric)s, bucket, queue_id::text, target.detail, cases, target.met,
               target.settled
        FROM (
            SELECT date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01Z') AS bucket,
                queue_id, count(*) AS cases,
                count(*) FILTER (WHERE first_responded_at IS NOT NULL
                                   AND first_response_breached_at IS NULL) AS fr_met,
                count(*) FILTER (WHERE first_responded_at IS NOT NULL
                                    OR first_response_breached_at IS NOT NULL) AS fr_total,
                count(*) FILTER (WHERE solved_at IS NOT NULL
                                   AND resolution_breached_at IS NULL) AS res_met,
                count(*) FILTER (WHERE solved_at IS NOT NULL
                                    OR resolution_breached_at IS NOT NULL) AS res_total
            FROM cases_case
            WHERE merged_into_id IS NULL AND created_at >= %(since)s
            GROUP BY 1, 2
        ) AS counted
        CROSS JOIN LATERAL (VALUES ('first_response', fr_met, fr_total),
                                   ('resolution', res_met, res_total))
            AS target(detail, met, settled)
    """,
    COMMITMENTS_RESOLVED: """
        SELECT %(metric)s, date_bin('15 minutes', m.resolved_at, TIMESTAMPTZ '2000-01-01Z'),
               k.queue_id::text, m.status, count(*), 0, 0
        FROM cases_commitment m
        JOIN cases_case k ON k.id = m.case_id
        WHERE m.status IN ('kept', 'broken') AND m.resolved_at >= %(since)s
        GROUP BY 2, 3, 4
    """,
    TOUCHES: """
        SELECT %(metric)s, date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01Z'),
               campaign_id::text, status || '/' || reason, count(*), 0, 0
        FROM campaigns_touch
        WHERE created_at >= %(since)s
        GROUP BY 2, 3, 4
    """,
}


# Where the rows made in the last RECENT_DAYS start (tables whose rows get their created_at
# when inserted, so ids grow with it): readers scan that id range for "today", not the table.
RECENT_DAYS = 3
_RECENT_IDS = {
    SLA: "SELECT coalesce(min(id) FILTER (WHERE created_at >= %s), max(id) + 1, 0) FROM cases_case",
    TOUCHES: """SELECT coalesce(min(id) FILTER (WHERE created_at >= %s), max(id) + 1, 0)
                FROM campaigns_touch""",
}

_HOURLY = """
INSERT INTO workbench_rollup (metric, bucket_at, dimension, detail, value, numerator, denominator)
SELECT %(hourly)s, date_bin('1 hour', bucket_at, TIMESTAMPTZ '2000-01-01Z'), dimension, detail,
       sum(value), sum(numerator), sum(denominator)
FROM workbench_rollup
WHERE metric = %(metric)s AND bucket_at >= %(since)s
GROUP BY 2, 3, 4
"""


def hourly(metric: str) -> str:
    """The name under which a metric's hourly rows are kept."""
    return f"{metric}:hour"


@dataclass(frozen=True)
class RefreshRun:
    rows: dict[str, int]  # rollup rows written per metric
    seconds: float


def start_of(day: date) -> datetime:
    return datetime.combine(day, clock(), UTC)


def floor_bucket(moment: datetime) -> datetime:
    """The start of the quarter hour (UTC) `moment` falls in."""
    moment = moment.astimezone(UTC)
    return moment.replace(minute=moment.minute // 15 * 15, second=0, microsecond=0)


def refresh_rollups(*, since: date, metrics: tuple[str, ...] = METRICS) -> RefreshRun:
    """Recount every bucket from `since` (00:00 UTC) on for each metric: one counting statement
    (and its hourly sum) in one transaction per metric; older buckets are kept as they are.
    Safe to run twice or at once (an advisory lock per metric serialises them; the upsert makes
    a repeat write the same).

    There is no upper bound: rows dated after the refresh are counted too, so the coverage
    reaches "now" (readers take the rows that arrived after it from the raw tables).
    """
    started = time.perf_counter()
    rows: dict[str, int] = {}
    for metric in metrics:
        rows[metric] = _refresh_metric(metric, since=start_of(since))
    return RefreshRun(rows=rows, seconds=round(time.perf_counter() - started, 3))


def _refresh_metric(metric: str, *, since: datetime) -> int:
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"workbench.rollup.{metric}"])
        refreshed_at = timezone.now()
        last_id = recent_first_id = 0
        if metric == INBOUND:
            cursor.execute("SELECT coalesce(max(id), 0) FROM customers_interaction")
            last_id = cursor.fetchone()[0]
        if metric in _RECENT_IDS:
            cursor.execute(_RECENT_IDS[metric], [refreshed_at - timedelta(days=RECENT_DAYS)])
            recent_first_id = cursor.fetchone()[0]
        cursor.execute(
            "DELETE FROM workbench_rollup WHERE metric = %s AND bucket_at >= %s", [metric, since]
        )
        cursor.execute(
            _INSERT + _SELECTS[metric] + _UPSERT,
            {"metric": metric, "since": since, "last_id": last_id},
        )
        written = cursor.rowcount
        # The same counts by the hour: a viewer whose days start on a whole UTC hour (most time
        # zones) reads a quarter of the rows.
        cursor.execute(
            "DELETE FROM workbench_rollup WHERE metric = %s AND bucket_at >= %s",
            [hourly(metric), since],
        )
        cursor.execute(_HOURLY, {"metric": metric, "hourly": hourly(metric), "since": since})
        coverage = RollupCoverage.objects.select_for_update().filter(metric=metric).first()
        if coverage is None:
            RollupCoverage.objects.create(
                metric=metric, covered_since=since, covered_until=refreshed_at, last_id=last_id,
                recent_first_id=recent_first_id, refreshed_at=refreshed_at,
            )  # fmt: skip
        else:
            coverage.covered_since = min(coverage.covered_since, since)
            coverage.covered_until = refreshed_at
            coverage.last_id = last_id
            coverage.recent_first_id = recent_first_id
            coverage.refreshed_at = refreshed_at
            coverage.save(
                update_fields=[
                    "covered_since", "covered_until", "last_id", "recent_first_id", "refreshed_at"
                ]
            )  # fmt: skip
    return written


# --- what readers ask ------------------------------------------------------------------------


def coverages() -> dict[str, RollupCoverage]:
    """What the rollups of every metric cover (one query: a page reads it once)."""
    return {coverage.metric: coverage for coverage in RollupCoverage.objects.all()}


def closed_until(
    coverage: RollupCoverage | None, *, since: datetime, midnight: datetime
) -> datetime | None:
    """Where a reader switches from a metric's rollups to raw rows, for a period starting at
    `since` whose viewer's day started at `midnight`: that midnight, or the last refresh if it
    is older. None when the rollups do not cover the period (read it all raw)."""
    if coverage is None or coverage.covered_since > since:
        return None
    boundary = min(midnight, floor_bucket(coverage.covered_until))
    return boundary if boundary > since else None


def recent_first_id(coverage: RollupCoverage | None, *, boundary: datetime) -> int | None:
    """The id from which a reader finds every row made since `boundary` (None: scan by date).
    Valid while the boundary is within RECENT_DAYS of the refresh that recorded it."""
    if coverage is None or not coverage.recent_first_id:
        return None
    if boundary < coverage.refreshed_at - timedelta(days=RECENT_DAYS):
        return None
    return coverage.recent_first_id


def total(column: str) -> Cast:
    """The sum of a rollup column as an int (PostgreSQL sums bigints as numeric)."""
    return Cast(Sum(column), BigIntegerField())


def rollup_rows(
    metric: str, *, since: datetime, until: datetime | None = None, by_hour: bool = False
):
    """A metric's rows in [since, until): hourly ones when the reader's buckets all start on
    a whole UTC hour (`by_hour`) and so do the ends, quarter hours otherwise."""
    if by_hour and all(end is None or end.astimezone(UTC).minute == 0 for end in (since, until)):
        metric = hourly(metric)
    rows = Rollup.objects.filter(metric=metric, bucket_at__gte=since)
    return rows if until is None else rows.filter(bucket_at__lt=until)


# --- the Celery doors ------------------------------------------------------------------------


@shared_task(name=REFRESH_TASK, acks_late=True, reject_on_worker_lost=True)
def refresh_recent_rollups() -> dict[str, int]:
    """Every few minutes (beat): yesterday and today of the time-stamped metrics, and the whole
    window of those that count a row's current state (cases, touches: small tables)."""
    today = timezone.now().astimezone(UTC).date()
    window_start = today - timedelta(days=WINDOW_DAYS)
    known = coverages()
    # Before the first nightly run (a new install), the first refresh fills the whole window.
    is_filled = all(
        metric in known and known[metric].covered_since <= start_of(window_start)
        for metric in RECENT_METRICS
    )
    since = today - timedelta(days=1) if is_filled else window_start
    recent = refresh_rollups(since=since, metrics=RECENT_METRICS)
    window = refresh_rollups(since=window_start, metrics=WINDOW_METRICS)
    return {**recent.rows, **window.rows}


@shared_task(name=RECOMPUTE_TASK, acks_late=True, reject_on_worker_lost=True)
def recompute_rollups() -> dict[str, int]:
    """Nightly (beat): every metric over the last 92 days, which also counts late arrivals
    (a message dated days back, a row committed after the refresh that passed its id)."""
    today = timezone.now().astimezone(UTC).date()
    rows = refresh_rollups(since=today - timedelta(days=WINDOW_DAYS)).rows
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE workbench_rollup")  # fresh statistics for the readers' plans
    return rows
