"""The CCO's dashboard: each chart's numbers from built data (table and CSV agree), the period
selector, the live panel, the SVG itself, the query budget, and the CCO-only doors."""

import csv
import io
from datetime import UTC, datetime, time, timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from campaigns.models import Touch
from cases.models import Commitment
from customers.models import Interaction
from tests.campaigns.factories import CampaignFactory, TouchFactory
from tests.cases.factories import CaseFactory, CommitmentFactory, CustomerFactory, QueueFactory
from workbench import charts
from workbench.console import dashboard, home

pytestmark = pytest.mark.django_db

START_OF_TODAY = datetime.combine(timezone.now().astimezone(UTC).date(), time(), UTC)


def day_label(moment: datetime) -> str:
    return f"{moment:%d %b}"


def inbound(customer, channel: str, at: datetime, direction: str = "in"):
    return Interaction.objects.create(
        customer=customer, channel=channel, kind="message", direction=direction, occurred_at=at
    )


def set_created(model, pk, at):
    model.objects.filter(pk=pk).update(created_at=at)


@pytest.fixture
def built():
    """Messages, cases, commitments and touches with known numbers."""
    customer = CustomerFactory()
    for _ in range(2):
        inbound(customer, "email", START_OF_TODAY + timedelta(seconds=1))
    inbound(customer, "chat", START_OF_TODAY + timedelta(seconds=2))
    inbound(customer, "email", START_OF_TODAY - timedelta(days=2) + timedelta(hours=1))
    inbound(customer, "email", START_OF_TODAY + timedelta(seconds=3), direction="out")
    inbound(customer, "email", START_OF_TODAY - timedelta(days=10))  # outside 7 days

    billing, returns = QueueFactory(name="Billing"), QueueFactory(name="Returns")
    now = timezone.now()
    CaseFactory(queue=billing, first_responded_at=now, solved_at=now, status="solved")
    CaseFactory(
        queue=billing, first_responded_at=now, first_response_breached_at=now,
        solved_at=now, resolution_breached_at=now, status="solved",
    )  # fmt: skip
    CaseFactory(queue=billing)  # not answered yet: no attainment either way
    CaseFactory(queue=returns, first_responded_at=now, status="open")

    promised = CaseFactory(queue=returns)  # not answered yet: no attainment either way
    fresh = CommitmentFactory(case=promised, kind="refund")
    aged = CommitmentFactory(case=promised, kind="refund")
    set_created(Commitment, aged.pk, now - timedelta(days=5))
    old = CommitmentFactory(case=promised, kind="callback")
    set_created(Commitment, old.pk, now - timedelta(days=10))
    CommitmentFactory(
        case=promised, status="kept", resolved_at=START_OF_TODAY + timedelta(seconds=5)
    )
    CommitmentFactory(
        case=promised, status="broken", resolved_at=START_OF_TODAY + timedelta(seconds=6)
    )
    CommitmentFactory(
        case=promised,
        status="kept",
        resolved_at=START_OF_TODAY - timedelta(days=2) + timedelta(hours=1),
    )

    spring = CampaignFactory(name="Spring upgrade")
    for _ in range(3):
        TouchFactory(campaign=spring, status="sent")
    for _ in range(2):
        TouchFactory(campaign=spring, status="held", reason="open_commitment")
    TouchFactory(campaign=spring, status="held", reason="frequency_cap")
    TouchFactory(campaign=spring, status="suppressed", reason="no_consent")
    TouchFactory(campaign=CampaignFactory(name="Winter sale"), status="held", reason="cool_off")
    return {"fresh": fresh, "billing": billing, "returns": returns}


def csv_rows(response) -> list[list[str]]:
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.content.decode())))


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer"])
@pytest.mark.parametrize("url", ["/console/", "/console/live/", "/console/charts/inbound.csv"])
def test_console_and_its_downloads_refuse_other_roles(client_for, make_user, role, url):
    assert client_for(make_user(role)).get(url).status_code == 403


def test_signed_out_visitor_is_sent_to_sign_in(client):
    response = client.get("/console/charts/sla.csv")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_inbound_volume_counts_inbound_messages_per_channel_per_day(client_for, cco, built):
    rows = csv_rows(client_for(cco).get("/console/charts/inbound.csv?period=7"))
    assert rows[0] == ["Day", "Email", "Live chat"]
    assert len(rows) == 1 + 7
    by_day = {row[0]: row[1:] for row in rows[1:]}
    assert by_day[day_label(START_OF_TODAY)] == ["2", "1"]
    assert by_day[day_label(START_OF_TODAY - timedelta(days=2))] == ["1", "0"]
    assert sum(int(v) for row in rows[1:] for v in row[1:]) == 4


def test_today_is_counted_by_hour_and_90_days_reach_back(client_for, cco, built):
    client = client_for(cco)
    today = csv_rows(client.get("/console/charts/inbound.csv?period=today"))
    assert today[0] == ["Hour", "Email", "Live chat"]
    assert today[1] == ["00:00", "2", "1"]
    ninety = csv_rows(client.get("/console/charts/inbound.csv?period=90"))
    assert len(ninety) == 1 + 90
    assert sum(int(v) for row in ninety[1:] for v in row[1:]) == 5


def test_sla_attainment_is_the_share_of_settled_cases_within_target(client_for, cco, built):
    rows = csv_rows(client_for(cco).get("/console/charts/sla.csv?period=30"))
    assert rows == [
        ["Queue", "First response", "Resolution", "First responses settled", "Resolutions settled"],
        ["Billing", "50", "50", "2", "2"],
        ["Returns", "100", "0", "1", "0"],
    ]


def test_open_commitments_by_age_and_kind(client_for, cco, built):
    rows = csv_rows(client_for(cco).get("/console/charts/commitments_open.csv"))
    assert rows == [
        ["Age", "Refund", "Callback"],
        ["under 1 day", "1", "0"],
        ["1-3 days", "0", "0"],
        ["3-7 days", "1", "0"],
        ["over 7 days", "0", "1"],
    ]


def test_commitments_kept_and_broken_over_time(client_for, cco, built):
    rows = csv_rows(client_for(cco).get("/console/charts/commitments_kept.csv?period=7"))
    assert rows[0] == ["Day", "Kept", "Broken"]
    by_day = {row[0]: row[1:] for row in rows[1:]}
    assert by_day[day_label(START_OF_TODAY)] == ["1", "1"]
    assert by_day[day_label(START_OF_TODAY - timedelta(days=2))] == ["1", "0"]


def test_touches_per_campaign_and_contradictions_prevented(client_for, cco, built):
    client = client_for(cco)
    touches = csv_rows(client.get("/console/charts/touches.csv?period=7"))
    assert touches == [
        ["Campaign", "Sent", "Held", "Suppressed"],
        ["Spring upgrade", "3", "3", "1"],
        ["Winter sale", "0", "1", "0"],
    ]
    prevented = csv_rows(client.get("/console/charts/contradictions.csv?period=7"))
    assert prevented[0] == [
        "Campaign",
        "Open service commitment",
        "Open complaint case",
        "Cool-off after a case or a broken commitment",
        "Marketing paused by an agent",
    ]
    assert prevented[1:] == [
        ["Spring upgrade", "2", "0", "0", "0"],
        ["Winter sale", "0", "0", "1", "0"],
    ]


def test_touches_made_before_the_period_are_left_out(client_for, cco, built):
    Touch.objects.update(created_at=timezone.now() - timedelta(days=40))
    rows = csv_rows(client_for(cco).get("/console/charts/touches.csv?period=30"))
    assert rows == [["Campaign", "Sent", "Held", "Suppressed"]]


def test_dashboard_shows_charts_tables_and_the_live_panel(client_for, cco, built):
    response = client_for(cco).get("/console/?period=30")
    assert response.status_code == 200
    page = response.text
    for key in dashboard.CHART_KEYS[:-1]:
        assert f'data-testid="chart-{key}"' in page
        assert f"/console/charts/{key}.csv?period=30" in page
    assert page.count('<svg class="chart"') == 7  # six charts and the backlog
    assert '<title id="chart-sla-title">SLA attainment by queue</title>' in page
    assert '<a href="?period=30" class="chip-link" aria-current="true"' in page
    # Live panel: Billing has one open case (the unanswered one), Returns two.
    assert 'data-testid="backlog-total">3<' in page
    assert 'data-testid="held-total">4<' in page
    assert 'data-testid="agents-online">0<' in page
    assert '<th scope="row">Billing</th><td class="num">50%</td>' in page


def test_unknown_period_falls_back_to_seven_days_and_unknown_chart_is_404(client_for, cco):
    client = client_for(cco)
    assert (
        '<a href="?period=7" class="chip-link" aria-current="true"'
        in client.get("/console/?period=365").text
    )
    assert client.get("/console/charts/nothing.csv").status_code == 404


def test_empty_dashboard_says_so(client_for, cco):
    page = client_for(cco).get("/console/").text
    assert "Nothing to show for this period yet." in page
    assert "No campaign touch is held." in page


def test_dashboard_queries_do_not_grow_with_data(client_for, cco, built, django_assert_num_queries):
    client = client_for(cco)
    client.get("/console/")  # warm the session and content types
    with django_assert_num_queries(17):
        client.get("/console/?period=90")
    for _ in range(5):
        TouchFactory(campaign=CampaignFactory(), status="held", reason="agent_pause")
        CommitmentFactory()
    with django_assert_num_queries(17):
        client.get("/console/?period=90")


def test_live_panel_fragment_is_what_the_socket_pushes(client_for, cco, built):
    http = client_for(cco).get("/console/live/").text
    assert http == home.render_live(cco)
    assert http.strip().startswith('<section id="console-live"')


def test_live_refresh_publishes_only_when_the_numbers_changed(
    cco, built, django_capture_on_commit_callbacks
):
    # As if the panel had just been pushed as it is now.
    redis.Redis.from_url(settings.REDIS_URL).set(home.live_key(), home.live_snapshot())
    with django_capture_on_commit_callbacks() as callbacks:
        assert home.refresh_console_live() is False
    assert callbacks == []
    CaseFactory(queue=built["billing"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert home.refresh_console_live() is True
    assert len(callbacks) == 1


def test_svg_escapes_labels_and_has_accessible_titles():
    chart = charts.ChartData(
        key="t",
        title="A <b> title",
        kind=charts.BAR,
        categories=["<script>"],
        series=[charts.Series("S & P", [3])],
    )
    svg = charts.render_svg(chart)
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert '<title id="chart-t-title">A &lt;b&gt; title</title>' in svg
    assert "&lt;script&gt; · S &amp; P: 3</title>" in svg
    assert charts.csv_text(chart) == ",S & P\r\n<script>,3\r\n"


@pytest.mark.parametrize(("top", "expected"), [(0, 1), (3, 5), (7, 10), (12, 20), (230, 250)])
def test_axis_top_is_a_round_number(top, expected):
    assert charts.nice_max(top) == expected
