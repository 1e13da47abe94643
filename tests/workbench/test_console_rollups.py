"""The console's rollups: charts read from them equal the same charts read from the raw tables
(any period, any viewer's time zone, a supervisor's queues), what arrives after a refresh shows
at once, what changes in the past shows after the next refresh, the refresh is idempotent, and
the page's query count stays flat."""

from datetime import UTC, datetime, time, timedelta

import pytest
from django.utils import timezone

from campaigns.models import Touch
from cases.models import Case, Commitment
from customers.models import Interaction
from tests.campaigns.factories import CampaignFactory, TouchFactory
from tests.cases.factories import CaseFactory, CommitmentFactory, CustomerFactory, QueueFactory
from workbench.console import dashboard, rollups
from workbench.models import Rollup, RollupCoverage

pytestmark = pytest.mark.django_db

ZONES = ("UTC", "Asia/Kolkata", "America/Los_Angeles")
# Minutes after 00:00 UTC: either side of Kolkata's midnight (18:30 UTC) and LA's (08:00).
MINUTES = (10, 470, 490, 1100, 1115, 1435)
DAYS_BACK = (0, 1, 2, 6, 7, 29, 30, 60, 89, 91)


def moments(now: datetime) -> list[datetime]:
    midnight = datetime.combine(now.astimezone(UTC).date(), time(), UTC)
    found = [
        midnight - timedelta(days=days) + timedelta(minutes=minutes)
        for days in DAYS_BACK
        for minutes in MINUTES
    ]
    return [at for at in found if at < now - timedelta(minutes=1)] + [now - timedelta(minutes=1)]


def message(customer, at, channel="email", direction="in"):
    return Interaction.objects.create(
        customer=customer, channel=channel, kind="message", direction=direction, occurred_at=at
    )


@pytest.fixture
def spread():
    """Messages, cases, commitments and touches at every moment of the last 91 days."""
    now = timezone.now()
    customer = CustomerFactory()
    billing, returns = QueueFactory(name="Billing"), QueueFactory(name="Returns")
    spring, winter = CampaignFactory(name="Spring"), CampaignFactory(name="Winter")
    for n, at in enumerate(moments(now)):
        message(customer, at, channel=("email", "chat", "x")[n % 3])
        message(customer, at, direction="out")
        queue = (billing, returns)[n % 2]
        case = CaseFactory(
            queue=queue,
            first_responded_at=at if n % 3 else None,
            first_response_breached_at=at if n % 4 == 0 else None,
            solved_at=at if n % 5 else None,
            resolution_breached_at=at if n % 7 == 0 else None,
        )
        Case.objects.filter(pk=case.pk).update(created_at=at)
        CommitmentFactory(case=case, status=("kept", "broken")[n % 2], resolved_at=at)
        touch = TouchFactory(
            campaign=(spring, winter)[n % 2],
            status=("sent", "held", "suppressed")[n % 3],
            reason=("", "open_commitment", "no_consent")[n % 3],
        )
        Touch.objects.filter(pk=touch.pk).update(created_at=at)
    return {"billing": billing, "returns": returns, "customer": customer}


def charts(key: str, zone: str, now: datetime, queue_ids=None) -> list:
    period = dashboard.period_for(key, tz_name=zone, now=now)
    if queue_ids is not None:
        return dashboard.service_charts(period, queue_ids=queue_ids)
    return dashboard.all_charts(period)


def refresh_window() -> None:
    today = timezone.now().astimezone(UTC).date()
    rollups.refresh_rollups(since=today - timedelta(days=rollups.WINDOW_DAYS))


@pytest.mark.parametrize("zone", ZONES)
def test_charts_from_rollups_equal_charts_from_raw_tables(spread, zone):
    now = timezone.now()
    raw = {key: charts(key, zone, now) for key in dashboard.PERIODS}
    assert not RollupCoverage.objects.exists()

    refresh_window()

    assert set(Rollup.objects.values_list("metric", flat=True)) == {
        *rollups.METRICS,
        *(rollups.hourly(metric) for metric in rollups.METRICS),
    }
    for key in dashboard.PERIODS:
        assert charts(key, zone, now) == raw[key], key
    # Not a vacuous comparison: the 90-day chart counts every inbound message since the period's
    # first local midnight. (How many that is depends on the hour the test runs, so count it.)
    since = dashboard.period_for("90", tz_name=zone, now=now).since
    expected = Interaction.objects.filter(direction="in", occurred_at__gte=since).count()
    inbound = charts("90", zone, now)[0]
    assert expected > 30
    assert sum(sum(series.values) for series in inbound.series) == expected


def test_supervisor_queue_charts_from_rollups_equal_raw(spread):
    now = timezone.now()
    billing = [spread["billing"].pk]
    raw = charts("30", "Asia/Kolkata", now, queue_ids=billing)
    refresh_window()
    assert charts("30", "Asia/Kolkata", now, queue_ids=billing) == raw
    assert raw[1].categories == ["Billing"]


def test_messages_arriving_after_the_refresh_count_at_once(client_for, cco, spread):
    refresh_window()
    client = client_for(cco)
    before = client.get("/console/charts/inbound.csv?period=7").content.decode()
    today = timezone.now() - timedelta(seconds=30)
    for _ in range(3):
        message(spread["customer"], today, channel="whatsapp")
    # A late arrival dated two days back (after the refresh): counted too.
    message(spread["customer"], today - timedelta(days=2), channel="whatsapp")

    after = client.get("/console/charts/inbound.csv?period=7").content.decode()

    assert "WhatsApp" not in before
    rows = [line.split(",") for line in after.strip().splitlines()]
    whatsapp = rows[0].index("WhatsApp")
    assert sum(int(row[whatsapp]) for row in rows[1:]) == 4
    assert rows[-1][whatsapp] == "3"


def test_a_past_case_answered_later_counts_after_the_next_refresh(spread):
    queue = QueueFactory(name="Late")
    case = CaseFactory(queue=queue)
    Case.objects.filter(pk=case.pk).update(created_at=timezone.now() - timedelta(days=3))
    refresh_window()
    Case.objects.filter(pk=case.pk).update(first_responded_at=timezone.now())

    rollups.refresh_recent_rollups()

    sla = charts("7", "UTC", timezone.now(), queue_ids=[queue.pk])[1]
    assert sla.categories == ["Late"]
    assert sla.series[0].values == [100.0]  # answered in time: 1 of 1


def test_refresh_is_idempotent_and_forgets_what_is_gone(spread):
    refresh_window()
    first = sorted(Rollup.objects.values_list("metric", "bucket_at", "dimension", "detail",
                                              "value", "numerator", "denominator"))  # fmt: skip
    refresh_window()
    again = sorted(Rollup.objects.values_list("metric", "bucket_at", "dimension", "detail",
                                              "value", "numerator", "denominator"))  # fmt: skip
    assert again == first

    Touch.objects.all().delete()
    refresh_window()
    assert not Rollup.objects.filter(metric=rollups.TOUCHES).exists()
    assert Rollup.objects.filter(metric=rollups.INBOUND).count() == sum(
        1 for row in first if row[0] == rollups.INBOUND
    )


def test_rollups_not_covering_the_period_are_not_used(spread):
    now = timezone.now()
    raw = charts("90", "UTC", now)
    rollups.refresh_rollups(since=now.astimezone(UTC).date() - timedelta(days=1))

    assert charts("90", "UTC", now) == raw  # 90 days need older buckets: raw tables read


def test_recompute_task_covers_every_metric_for_92_days(spread):
    written = rollups.recompute_rollups()

    assert set(written) == set(rollups.METRICS)
    assert all(n > 0 for n in written.values())
    earliest = timezone.now() - timedelta(days=rollups.WINDOW_DAYS + 1)
    assert all(c.covered_since >= earliest for c in RollupCoverage.objects.all())
    assert RollupCoverage.objects.count() == len(rollups.METRICS)


def test_dashboard_queries_stay_flat_with_rollups(
    client_for, cco, spread, django_assert_num_queries
):
    refresh_window()
    client = client_for(cco)
    client.get("/console/")  # warm the session and content types
    with django_assert_num_queries(21):
        client.get("/console/?period=90")
    for _ in range(5):
        TouchFactory(campaign=CampaignFactory(), status="held", reason="agent_pause")
        CommitmentFactory()
        message(spread["customer"], timezone.now())
    refresh_window()
    with django_assert_num_queries(21):
        client.get("/console/?period=90")


def test_commitments_resolved_rollup_keeps_queue_and_status(spread):
    refresh_window()
    cells = Rollup.objects.filter(metric=rollups.COMMITMENTS_RESOLVED)
    assert set(cells.values_list("detail", flat=True)) == {"kept", "broken"}
    assert {int(d) for d in cells.values_list("dimension", flat=True)} == {
        spread["billing"].pk,
        spread["returns"].pk,
    }
    counted = sum(cells.values_list("value", flat=True))
    assert counted == Commitment.objects.filter(status__in=["kept", "broken"]).count()


def test_first_frequent_refresh_fills_the_whole_window(spread):
    now = timezone.now()
    raw = charts("90", "America/Los_Angeles", now)

    rollups.refresh_recent_rollups()  # no nightly run yet: a new install

    window_start = now.astimezone(UTC).date() - timedelta(days=rollups.WINDOW_DAYS)
    assert {c.metric: c.covered_since.date() for c in RollupCoverage.objects.all()} == {
        metric: window_start for metric in rollups.METRICS
    }
    assert charts("90", "America/Los_Angeles", now) == raw
    rollups.refresh_recent_rollups()  # later runs: the last day only, older buckets kept
    assert charts("90", "America/Los_Angeles", now) == raw
