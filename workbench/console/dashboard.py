"""The dashboard's numbers: per chart, set-based GROUP BY queries over the rollups (closed days) and
the raw tables (today), as ChartData.

Every function takes the period (and, for a supervisor's reports, the queues to count) and
returns what `workbench.charts` draws; the page, its tables and the CSV downloads read the same
functions, so they cannot disagree. Buckets are the viewer's local hours (today) or days.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

import redis
from django.conf import settings
from django.db.models import Case as When_
from django.db.models import CharField, Count, F, Q, Value, When
from django.db.models.functions import Trunc
from django.utils import timezone

from campaigns.models import Campaign, Reason, Touch, TouchStatus
from cases.models import OPEN_STATUSES, Case, Commitment, CommitmentKind, CommitmentStatus, Queue
from customers.models import Channel, Direction, Interaction, Kind
from workbench import presence, roles
from workbench.charts import BAR, LINE, STACKED, ChartData, Series
from workbench.console import rollups
from workbench.models import User

PERIODS = {"today": "Today", "7": "7 days", "30": "30 days", "90": "90 days"}
DEFAULT_PERIOD = "7"
# Holds that exist because service promised something: marketing kept quiet instead of
# contradicting it. These are the "contradictions prevented".
SERVICE_REASONS = (
    Reason.OPEN_COMMITMENT,
    Reason.OPEN_COMPLAINT,
    Reason.COOL_OFF,
    Reason.AGENT_PAUSE,
)
AGE_BUCKETS = ("under 1 day", "1-3 days", "3-7 days", "over 7 days")
MAX_CAMPAIGNS = 12


@dataclass(frozen=True)
class Period:
    key: str
    label: str
    since: datetime
    now: datetime
    unit: str  # "hour" or "day"
    tz: zoneinfo.ZoneInfo
    # The rollups' coverage, read once per page on first use (see `closed_until`).
    _coverages: dict = field(default_factory=dict, compare=False, repr=False)

    def buckets(self) -> list[datetime]:
        """Every bucket of the period, oldest first, so quiet hours and days show as zero."""
        if self.unit == "hour":
            out, at = [], self.since
            while at <= self.now:
                out.append(at)
                at += timedelta(hours=1)
            return out
        day, last = self.since.astimezone(self.tz).date(), self.now.astimezone(self.tz).date()
        out = []
        while day <= last:
            out.append(datetime.combine(day, time(), self.tz))
            day += timedelta(days=1)
        return out

    @property
    def midnight(self) -> datetime:
        """The start of the viewer's today: rollups count the days before it."""
        return _start_of_day(self.now, self.tz)

    @property
    def is_whole_hours(self) -> bool:
        """True when every bucket starts on a whole UTC hour (hourly rollups then sum exactly)."""
        return all(bucket.astimezone(UTC).minute == 0 for bucket in self.buckets())

    def rollup_rows(self, metric: str, *, until: datetime | None = None):
        return rollups.rollup_rows(
            metric, since=self.since, until=until, by_hour=self.is_whole_hours
        )

    def coverage(self, metric: str):
        if not self._coverages:
            self._coverages.update(rollups.coverages() or {"": None})
        return self._coverages.get(metric)

    def closed_until(self, metric: str) -> datetime | None:
        """Rollups before this moment, raw rows from it (None: raw rows only)."""
        return rollups.closed_until(self.coverage(metric), since=self.since, midnight=self.midnight)

    def recent_rows(self, rows, metric: str, *, boundary: datetime):
        """Rows made since `boundary`, found by an id range when the last refresh knows one."""
        rows = rows.filter(created_at__gte=boundary)
        first_id = rollups.recent_first_id(self.coverage(metric), boundary=boundary)
        return rows if first_id is None else rows.filter(id__gte=first_id)

    def label_of(self, bucket: datetime) -> str:
        local = bucket.astimezone(self.tz)
        return f"{local:%H}:00" if self.unit == "hour" else f"{local:%d %b}"


def _start_of_day(moment: datetime, tz) -> datetime:
    return datetime.combine(moment.astimezone(tz).date(), time(), tz)


def period_for(key: str | None, *, tz_name: str = "UTC", now: datetime | None = None) -> Period:
    """The period a `?period=` asks for (unknown values fall back to 7 days)."""
    key = key if key in PERIODS else DEFAULT_PERIOD
    tz = zoneinfo.ZoneInfo(tz_name or "UTC")
    now = now or timezone.now()
    start_of_today = _start_of_day(now, tz)
    if key == "today":
        return Period(key, PERIODS[key], start_of_today, now, "hour", tz)
    days = int(key)
    since = datetime.combine(start_of_today.date() - timedelta(days=days - 1), time(), tz)
    return Period(key, PERIODS[key], since, now, "day", tz)


def _series_over_time(period: Period, rows, *, key: str, names: dict[str, str]) -> tuple:
    """Pivot (bucket, key, n) rows into one series per key over every bucket of the period."""
    buckets = period.buckets()
    index = {period.label_of(b): i for i, b in enumerate(buckets)}
    values: dict[str, list[float]] = {}
    for row in rows:
        label = period.label_of(row["bucket"])
        if label not in index:
            continue
        values.setdefault(row[key], [0] * len(buckets))[index[label]] += row["n"]
    order = {k: i for i, k in enumerate(names)}  # the choices' own order (email first…)
    keys = sorted(values, key=lambda k: (order.get(k, len(order)), k))
    series = [Series(names.get(k, k), values[k]) for k in keys]
    return [period.label_of(b) for b in buckets], series


def inbound_volume(period: Period, *, queue_ids: list[int] | None = None) -> ChartData:
    """Inbound messages per channel per hour/day (one GROUP BY date_trunc, channel)."""
    entries = Interaction.objects.filter(
        kind=Kind.MESSAGE, direction=Direction.INBOUND, occurred_at__gte=period.since
    )
    coverage = period.coverage(rollups.INBOUND)
    counted: list = []
    if coverage is not None and coverage.covered_since <= period.since:
        # The rollups count every entry up to the refresh's last id; the rest are the newest.
        entries = entries.filter(id__gt=coverage.last_id)
        counted = list(
            period.rollup_rows(rollups.INBOUND)
            .annotate(bucket=Trunc("bucket_at", period.unit, tzinfo=period.tz))
            .values("bucket", channel=F("dimension"))
            .annotate(n=rollups.total("value"))
            .order_by()
        )
    rows = counted + list(
        entries.annotate(bucket=Trunc("occurred_at", period.unit, tzinfo=period.tz))
        .values("bucket", "channel")
        .annotate(n=Count("id"))
        .order_by()
    )
    categories, series = _series_over_time(period, rows, key="channel", names=dict(Channel.choices))
    return ChartData(
        key="inbound",
        title="Inbound volume by channel",
        kind=STACKED,
        categories=categories,
        series=series,
        x_label="Hour" if period.unit == "hour" else "Day",
        y_label="messages",
    )


def _cases(queue_ids: list[int] | None):
    cases = Case.objects.filter(merged_into__isnull=True)
    return cases if queue_ids is None else cases.filter(queue_id__in=queue_ids)


def sla_attainment(period: Period, *, queue_ids: list[int] | None = None) -> ChartData:
    """Per queue, of the cases opened in the period whose target has been settled: the share
    answered (first response) or solved (resolution) without a breach, in percent."""
    responded = Q(first_responded_at__isnull=False)
    fr_breached = Q(first_response_breached_at__isnull=False)
    solved = Q(solved_at__isnull=False)
    res_breached = Q(resolution_breached_at__isnull=False)
    cases = _cases(queue_ids).filter(created_at__gte=period.since)
    totals: dict[int, dict[str, int]] = {}
    boundary = period.closed_until(rollups.SLA)
    if boundary is not None:
        cases = period.recent_rows(cases, rollups.SLA, boundary=boundary)
        cells = period.rollup_rows(rollups.SLA, until=boundary)
        if queue_ids is not None:
            cells = cells.filter(dimension__in=[str(pk) for pk in queue_ids])
        for cell in cells.values("dimension", "detail").annotate(
            met=rollups.total("numerator"), settled=rollups.total("denominator")
        ):
            prefix = "fr" if cell["detail"] == rollups.FIRST_RESPONSE else "res"
            queue = totals.setdefault(int(cell["dimension"]), {})
            queue[f"{prefix}_met"] = queue.get(f"{prefix}_met", 0) + cell["met"]
            queue[f"{prefix}_total"] = queue.get(f"{prefix}_total", 0) + cell["settled"]
    for row in (
        cases.values("queue_id")
        .annotate(
            fr_total=Count("id", filter=responded | fr_breached),
            fr_met=Count("id", filter=responded & ~fr_breached),
            res_total=Count("id", filter=solved | res_breached),
            res_met=Count("id", filter=solved & ~res_breached),
        )
        .order_by()
    ):
        queue = totals.setdefault(row.pop("queue_id"), {})
        for name, n in row.items():
            queue[name] = queue.get(name, 0) + n
    names = dict(Queue.objects.filter(pk__in=totals).values_list("pk", "name"))
    by_name: dict[str, dict[str, int]] = {}
    for pk, numbers in totals.items():
        row = by_name.setdefault(names.get(pk, str(pk)), {"queue__name": names.get(pk, str(pk))})
        for name in ("fr_total", "fr_met", "res_total", "res_met"):
            row[name] = row.get(name, 0) + numbers.get(name, 0)
    rows = [by_name[name] for name in sorted(by_name)]

    def pct(met: int, total: int) -> float:
        return round(100 * met / total, 1) if total else 0.0

    return ChartData(
        key="sla",
        title="SLA attainment by queue",
        kind=BAR,
        categories=[r["queue__name"] for r in rows],
        series=[
            Series("First response", [pct(r["fr_met"], r["fr_total"]) for r in rows]),
            Series("Resolution", [pct(r["res_met"], r["res_total"]) for r in rows]),
        ],
        x_label="Queue",
        y_label="within target",
        unit="%",
        y_max=100,
        table_only=[
            Series("First responses settled", [r["fr_total"] for r in rows]),
            Series("Resolutions settled", [r["res_total"] for r in rows]),
        ],
        note="Of the cases opened in the period whose target is settled (met or breached).",
    )


def _commitments(queue_ids: list[int] | None):
    commitments = Commitment.objects.all()
    return commitments if queue_ids is None else commitments.filter(case__queue_id__in=queue_ids)


def open_commitments_by_age(period: Period, *, queue_ids: list[int] | None = None) -> ChartData:
    """Open commitments now, by how long ago they were made and by kind."""
    now = period.now
    age = When_(
        When(created_at__gt=now - timedelta(days=1), then=Value(AGE_BUCKETS[0])),
        When(created_at__gt=now - timedelta(days=3), then=Value(AGE_BUCKETS[1])),
        When(created_at__gt=now - timedelta(days=7), then=Value(AGE_BUCKETS[2])),
        default=Value(AGE_BUCKETS[3]),
        output_field=CharField(),
    )
    rows = (
        _commitments(queue_ids)
        .filter(status=CommitmentStatus.OPEN)
        .annotate(age=age)
        .values("age", "kind")
        .annotate(n=Count("id"))
        .order_by()
    )
    values: dict[str, list[float]] = {}
    for row in rows:
        values.setdefault(row["kind"], [0] * len(AGE_BUCKETS))[AGE_BUCKETS.index(row["age"])] += (
            row["n"]
        )
    kinds = dict(CommitmentKind.choices)
    return ChartData(
        key="commitments_open",
        title="Open commitments by age and kind",
        kind=STACKED,
        categories=list(AGE_BUCKETS),
        series=[Series(kinds.get(k, k), values[k]) for k in CommitmentKind.values if k in values],
        x_label="Age",
        y_label="commitments",
    )


def commitments_kept_broken(period: Period, *, queue_ids: list[int] | None = None) -> ChartData:
    """Commitments kept and broken per hour/day of the period (by when they were resolved)."""
    resolved = _commitments(queue_ids).filter(
        status__in=[CommitmentStatus.KEPT, CommitmentStatus.BROKEN],
        resolved_at__gte=period.since,
    )
    counted: list = []
    boundary = period.closed_until(rollups.COMMITMENTS_RESOLVED)
    if boundary is not None:
        resolved = resolved.filter(resolved_at__gte=boundary)
        cells = period.rollup_rows(rollups.COMMITMENTS_RESOLVED, until=boundary)
        if queue_ids is not None:
            cells = cells.filter(dimension__in=[str(pk) for pk in queue_ids])
        counted = list(
            cells.annotate(bucket=Trunc("bucket_at", period.unit, tzinfo=period.tz))
            .values("bucket", status=F("detail"))
            .annotate(n=rollups.total("value"))
            .order_by()
        )
    rows = counted + list(
        resolved.annotate(bucket=Trunc("resolved_at", period.unit, tzinfo=period.tz))
        .values("bucket", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    categories, series = _series_over_time(
        period, rows, key="status", names=dict(CommitmentStatus.choices)
    )
    by_name = {s.name: s for s in series}
    zeros = [0] * len(categories)
    series = [by_name.get(name, Series(name, zeros)) for name in ("Kept", "Broken")]
    return ChartData(
        key="commitments_kept",
        title="Commitments kept vs broken",
        kind=LINE,
        categories=categories,
        series=series,
        x_label="Hour" if period.unit == "hour" else "Day",
        y_label="commitments",
    )


def campaign_touches(period: Period) -> tuple[ChartData, ChartData]:
    """Per campaign (touches made in the period): sent vs held vs suppressed, and the
    contradictions prevented (held for a service reason), from one GROUP BY query."""
    touches = Touch.objects.filter(created_at__gte=period.since)
    rows: list[dict] = []
    boundary = period.closed_until(rollups.TOUCHES)
    if boundary is not None:
        touches = period.recent_rows(touches, rollups.TOUCHES, boundary=boundary)
        cells = period.rollup_rows(rollups.TOUCHES, until=boundary)
        for cell in (
            cells.values("dimension", "detail").annotate(n=rollups.total("value")).order_by()
        ):
            status, _, reason = cell["detail"].partition("/")
            rows.append({"campaign_id": int(cell["dimension"]), "status": status,
                         "reason": reason, "n": cell["n"]})  # fmt: skip
    rows += touches.values("campaign_id", "status", "reason").annotate(n=Count("id")).order_by()
    campaigns = {row["campaign_id"] for row in rows}
    ids = sorted(campaigns)[-MAX_CAMPAIGNS:]
    names_of = dict(Campaign.objects.filter(pk__in=ids).values_list("pk", "name"))
    position = {pk: i for i, pk in enumerate(ids)}
    statuses = (TouchStatus.SENT, TouchStatus.HELD, TouchStatus.SUPPRESSED)
    by_status = {s: [0] * len(ids) for s in statuses}
    by_reason = {r: [0] * len(ids) for r in SERVICE_REASONS}
    for row in rows:
        i = position.get(row["campaign_id"])
        if i is None:
            continue
        if row["status"] in by_status:
            by_status[row["status"]][i] += row["n"]
        if row["reason"] in by_reason:
            by_reason[row["reason"]][i] += row["n"]
    names = [names_of.get(pk, str(pk)) for pk in ids]
    touches = ChartData(
        key="touches",
        title="Campaign touches: sent, held, suppressed",
        kind=STACKED,
        categories=names,
        series=[Series(TouchStatus(s).label, by_status[s]) for s in statuses],
        x_label="Campaign",
        y_label="touches",
    )
    prevented = ChartData(
        key="contradictions",
        title="Contradictions prevented (held for a service reason)",
        kind=STACKED,
        categories=names,
        series=[Series(Reason(r).label, by_reason[r]) for r in SERVICE_REASONS],
        x_label="Campaign",
        y_label="touches held",
    )
    return touches, prevented


def backlog_by_queue(*, queue_ids: list[int] | None = None) -> ChartData:
    """Open cases now, per queue (every queue, so an empty one shows as 0)."""
    queues = Queue.objects.all() if queue_ids is None else Queue.objects.filter(pk__in=queue_ids)
    # Counted through the open-cases index, then laid over every queue: a join over every case
    # ever opened (or a subquery per queue, costed by a queue table too small to be analysed)
    # is what made this slow.
    open_cases = Case.objects.filter(status__in=OPEN_STATUSES, merged_into__isnull=True)
    if queue_ids is not None:
        open_cases = open_cases.filter(queue_id__in=queue_ids)
    grouped = open_cases.values("queue_id").annotate(n=Count("id")).order_by()
    counts = dict(grouped.values_list("queue_id", "n"))
    rows = [
        {"name": name, "n": counts.get(pk, 0)}
        for pk, name in queues.order_by("name").values_list("pk", "name")
    ]
    return ChartData(
        key="backlog",
        title="Backlog: open cases by queue",
        kind=BAR,
        categories=[r["name"] for r in rows],
        series=[Series("Open cases", [r["n"] for r in rows])],
        x_label="Queue",
        y_label="open cases",
    )


def held_touches_now() -> dict[str, int]:
    """Touches held right now, by reason label (one query)."""
    rows = (
        Touch.objects.filter(status=TouchStatus.HELD)
        .values("reason")
        .annotate(n=Count("id"))
        .order_by("reason")
    )
    return {Reason(r["reason"]).label if r["reason"] else "—": r["n"] for r in rows}


def agents_online(*, now: float | None = None) -> int:
    """Service people with a live case page open (a presence heartbeat in the last 45 s).

    Presence keeps one sorted set per viewed case; we scan just those keys (as many as cases
    being looked at) and count distinct users, then keep those who hold a service role.
    """
    now = presence.clock() if now is None else now
    client = redis.Redis.from_url(settings.REDIS_URL)
    pattern = f"{settings.REDIS_PREFIX}:presence:case.*:sockets"
    user_ids: set[int] = set()
    for key in client.scan_iter(match=pattern, count=500):
        for member in client.zrangebyscore(key, now - presence.VIEWING_SECONDS, "+inf"):
            user_ids.add(int(member.split(b":", 1)[0]))
    if not user_ids:
        return 0
    return (
        User.objects.filter(
            pk__in=user_ids,
            is_active=True,
            groups__name__in=[roles.AGENT, roles.SUPERVISOR],
        )
        .distinct()
        .count()
    )


def service_charts(period: Period, *, queue_ids: list[int] | None = None) -> list[ChartData]:
    return [
        inbound_volume(period, queue_ids=queue_ids),
        sla_attainment(period, queue_ids=queue_ids),
        open_commitments_by_age(period, queue_ids=queue_ids),
        commitments_kept_broken(period, queue_ids=queue_ids),
    ]


def all_charts(period: Period) -> list[ChartData]:
    return [*service_charts(period), *campaign_touches(period)]


CHART_KEYS = (
    "inbound",
    "sla",
    "commitments_open",
    "commitments_kept",
    "touches",
    "contradictions",
    "backlog",
)


def chart_by_key(key: str, period: Period, *, queue_ids: list[int] | None = None) -> ChartData:
    """One chart for its CSV download (LookupError for an unknown key)."""
    builders = {
        "inbound": inbound_volume,
        "sla": sla_attainment,
        "commitments_open": open_commitments_by_age,
        "commitments_kept": commitments_kept_broken,
        "touches": lambda p, **_: campaign_touches(p)[0],
        "contradictions": lambda p, **_: campaign_touches(p)[1],
        "backlog": lambda p, queue_ids=None: backlog_by_queue(queue_ids=queue_ids),
    }
    if key not in builders:
        raise LookupError(key)
    return builders[key](period, queue_ids=queue_ids)
