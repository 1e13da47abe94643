"""The console's dashboard: charts for the chosen period, live sign-ins, backlog, agents online
and held touches (pushed to the `console` group), and each chart's CSV."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import redis
from celery import shared_task
from django.conf import settings
from django.db.models import Count
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from rules.contrib.views import permission_required

from workbench import charts, realtime
from workbench.console import dashboard
from workbench.models import AuditEntry

SIGN_IN = "sign_in"
RECENT_SIGN_INS = 10
LIVE_EVENT = "console.live"
REFRESH_TASK = "workbench.refresh_console_live"


def sign_ins_context(user) -> dict:
    """What the sign-ins panel shows: people signed in over the last day and the latest entries."""
    since = timezone.now() - timedelta(hours=24)
    recent = AuditEntry.objects.filter(action=SIGN_IN, created_at__gte=since)
    return {
        "signed_in_count": recent.aggregate(n=Count("actor_id", distinct=True))["n"],
        "recent_sign_ins": list(recent.order_by("-created_at", "-id")[:RECENT_SIGN_INS]),
        "viewer": user,
    }


def render_sign_ins(user) -> str:
    return render_to_string("workbench/console.html#sign-ins", sign_ins_context(user))


def live_context() -> dict:
    """The parts of the dashboard that change by the minute: backlog, agents online, holds."""
    backlog = dashboard.backlog_by_queue()
    held = dashboard.held_touches_now()
    return {
        "backlog": backlog,
        "backlog_svg": charts.render_svg(backlog),
        "backlog_total": sum(backlog.series[0].values) if backlog.series else 0,
        "agents_online": dashboard.agents_online(),
        "held_by_reason": held,
        "held_total": sum(held.values()),
    }


def live_snapshot() -> str:
    """A fingerprint of what the live panel shows, to push only when it changed."""
    context = live_context()
    backlog = context["backlog"]
    parts = [
        *(f"{c}={v}" for c, v in zip(backlog.categories, backlog.series[0].values, strict=True)),
        f"online={context['agents_online']}",
        *(f"{k}={v}" for k, v in sorted(context["held_by_reason"].items())),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def live_key() -> str:
    """Where the fingerprint of the last pushed live panel is kept."""
    return f"{settings.REDIS_PREFIX}:console:live"


@shared_task(name=REFRESH_TASK, acks_late=True, reject_on_worker_lost=True)
def refresh_console_live() -> bool:
    """Every 30 s (beat): push the live panel to the `console` group when its numbers changed
    since the last push. Backlog, presence and holds change in many services; one poll here
    keeps those services free of console concerns. Safe to run twice."""
    fingerprint = live_snapshot()
    client = redis.Redis.from_url(settings.REDIS_URL)
    if client.getset(live_key(), fingerprint) == fingerprint.encode():
        return False
    realtime.publish(realtime.group_name("console"), LIVE_EVENT)
    return True


def render_live(user, **_data) -> str:
    return render_to_string("workbench/console.html#console-live", live_context())


realtime.register_fragment("console.sign_ins", lambda user: render_sign_ins(user), per_user=True)
realtime.register_fragment(LIVE_EVENT, render_live)


def chart_cards(items, *, period, csv_url_name: str) -> list[dict]:
    return [
        {
            "data": chart,
            "svg": charts.render_svg(chart),
            "csv_url": reverse(csv_url_name, args=[chart.key]) + f"?period={period.key}",
        }
        for chart in items
    ]


@permission_required("workbench.open_console", raise_exception=True)
def console_home(request):
    context = sign_ins_context(request.user)
    if request.htmx:
        return render(request, "workbench/console.html#sign-ins", context)
    period = dashboard.period_for(request.GET.get("period"), tz_name=request.user.timezone)
    context.update(live_context())
    context.update(
        {
            "period": period,
            "periods": dashboard.PERIODS,
            "cards": chart_cards(
                dashboard.all_charts(period), period=period, csv_url_name="console:chart_csv"
            ),
            "realtime_groups": [realtime.group_name("console")],
            "console_section": "dashboard",
        }
    )
    return render(request, "workbench/console.html", context)


@permission_required("workbench.open_console", raise_exception=True)
def console_live(request):
    """The live panel alone: what a page refetches after it missed an event."""
    return render(request, "workbench/console.html#console-live", live_context())


def csv_response(text: str, *, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@permission_required("workbench.open_console", raise_exception=True)
def chart_csv(request, key: str):
    """One dashboard chart's numbers as CSV, for the period the page showed."""
    period = dashboard.period_for(request.GET.get("period"), tz_name=request.user.timezone)
    try:
        chart = dashboard.chart_by_key(key, period)
    except LookupError:
        raise Http404("No such chart.") from None
    return csv_response(charts.csv_text(chart), filename=f"{key}-{period.key}.csv")
