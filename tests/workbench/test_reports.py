"""/reports/: the service charts, read-only, for supervisors (their own queues) and the CCO."""

import csv
import io

import pytest
from django.utils import timezone

from tests.cases.factories import CaseFactory, QueueFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queues(supervisor):
    mine = QueueFactory(name="Billing", members=[supervisor])
    theirs = QueueFactory(name="Returns")
    now = timezone.now()
    CaseFactory(queue=mine, first_responded_at=now)
    CaseFactory(queue=mine)
    CaseFactory(queue=theirs, first_responded_at=now, first_response_breached_at=now)
    return mine, theirs


@pytest.mark.parametrize("role", ["agent", "marketer"])
def test_reports_refuse_agents_and_marketers(client_for, make_user, role):
    client = client_for(make_user(role))
    assert client.get("/reports/").status_code == 403
    assert client.get("/reports/sla.csv").status_code == 403


def test_supervisor_sees_only_their_queues(client_for, supervisor, queues):
    client = client_for(supervisor)
    page = client.get("/reports/").text
    assert "Queues: Billing." in page
    assert "Returns" not in page
    assert 'data-testid="chart-sla"' in page
    assert 'data-testid="chart-touches"' not in page  # marketing is not theirs
    rows = list(csv.reader(io.StringIO(client.get("/reports/sla.csv?period=7").content.decode())))
    assert rows == [
        ["Queue", "First response", "Resolution", "First responses settled", "Resolutions settled"],
        ["Billing", "100", "0", "1", "0"],
    ]
    backlog = list(csv.reader(io.StringIO(client.get("/reports/backlog.csv").content.decode())))
    assert backlog == [["Queue", "Open cases"], ["Billing", "2"]]


def test_supervisor_cannot_download_marketing_charts(client_for, supervisor):
    assert client_for(supervisor).get("/reports/touches.csv").status_code == 404


def test_supervisor_nav_links_to_reports_and_cco_sees_every_queue(
    client_for, supervisor, cco, queues
):
    page = client_for(supervisor).get("/cases/").text
    nav = page.split('<nav aria-label="Main">')[1].split("</nav>")[0]
    assert ">Reports</a>" in nav
    rows = list(csv.reader(io.StringIO(client_for(cco).get("/reports/sla.csv").content.decode())))
    assert rows[1:] == [["Billing", "100", "0", "1", "0"], ["Returns", "0", "0", "1", "0"]]


def test_supervisor_without_queues_is_told_how_to_get_them(client_for, supervisor):
    page = client_for(supervisor).get("/reports/").text
    assert "You lead no queue yet" in page
