"""Reports: the service charts of the dashboard, read-only, for supervisors (their teams' queues)
and the CCO (every queue). Same chart functions, so the numbers match the console's."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.urls import include, path

from cases.models import Queue
from workbench import charts, roles
from workbench.console import dashboard
from workbench.console.home import chart_cards, csv_response

can_read_reports = roles.is_supervisor | roles.is_cco
REPORT_KEYS = ("sla", "commitments_open", "commitments_kept", "backlog")


def _queue_ids(user) -> list[int] | None:
    """None (every queue) for the CCO; a supervisor's own queues otherwise."""
    if not can_read_reports(user):
        raise PermissionDenied("Reports are for supervisors and the CCO.")
    if roles.is_cco(user):
        return None
    return list(Queue.objects.filter(members=user).values_list("pk", flat=True))


def report_charts(period, *, queue_ids):
    return [dashboard.chart_by_key(key, period, queue_ids=queue_ids) for key in REPORT_KEYS]


def reports(request):
    queue_ids = _queue_ids(request.user)
    period = dashboard.period_for(request.GET.get("period"), tz_name=request.user.timezone)
    queues = Queue.objects.order_by("name")
    if queue_ids is not None:
        queues = queues.filter(pk__in=queue_ids)
    return render(
        request,
        "workbench/reports.html",
        {
            "period": period,
            "periods": dashboard.PERIODS,
            "queues": list(queues.values_list("name", flat=True)),
            "cards": chart_cards(
                report_charts(period, queue_ids=queue_ids),
                period=period,
                csv_url_name="reports:chart_csv",
            ),
        },
    )


def report_csv(request, key: str):
    queue_ids = _queue_ids(request.user)
    if key not in REPORT_KEYS:
        raise Http404("No such chart.")
    period = dashboard.period_for(request.GET.get("period"), tz_name=request.user.timezone)
    chart = dashboard.chart_by_key(key, period, queue_ids=queue_ids)
    return csv_response(charts.csv_text(chart), filename=f"{key}-{period.key}.csv")


urlpatterns = [
    path("", reports, name="home"),
    path("<slug:key>.csv", report_csv, name="chart_csv"),
]
urls = include((urlpatterns, "reports"))
