"""Engagement and value in the console: averages and customer equity per lifecycle stage and per
segment (the macro view), and the customers of one group, most valuable first (the micro view,
keyset-paged). The numbers come from the nightly job (customers.engagement), never computed here.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.db.models import Avg, Count, Q, Sum
from django.http import Http404
from django.shortcuts import render
from django.utils.http import urlencode
from rules.contrib.views import permission_required

from campaigns.audience import customers_in_segment
from campaigns.models import Segment
from customers import engagement as formulas
from customers.models import Engagement, LifecycleStage

PAGE_SIZE = 50
MAX_SEGMENTS = 20
MEASURES = ("involvement", "interaction", "intimacy", "influence", "lifetime_value")


def _aggregates() -> dict:
    return {
        "customers": Count("customer_id"),
        **{f"avg_{m}": Avg(m) for m in MEASURES},
        "equity": Sum("lifetime_value"),
    }


def by_stage() -> list[dict]:
    """One row per lifecycle stage (one GROUP BY)."""
    rows = {
        r["customer__lifecycle_stage"]: r
        for r in Engagement.objects.values("customer__lifecycle_stage")
        .annotate(**_aggregates())
        .order_by()
    }
    return [
        {"key": f"stage:{value}", "label": label, **rows[value]}
        for value, label in LifecycleStage.choices
        if value in rows
    ]


def by_segment() -> list[dict]:
    """One row per saved segment (one aggregate query each, at most MAX_SEGMENTS)."""
    out = []
    for segment in Segment.objects.order_by("name")[:MAX_SEGMENTS]:
        members = customers_in_segment(segment.definition).values("pk")
        row = Engagement.objects.filter(customer_id__in=members).aggregate(**_aggregates())
        out.append({"key": f"segment:{segment.pk}", "label": segment.name, **row})
    return out


def group_rows(key: str):
    """The Engagement rows of one group (`stage:<value>` or `segment:<id>`) and its label."""
    kind, _, value = key.partition(":")
    if kind == "stage" and value in LifecycleStage.values:
        return (
            Engagement.objects.filter(customer__lifecycle_stage=value),
            LifecycleStage(value).label,
        )
    if kind == "segment" and value.isdigit():
        segment = Segment.objects.filter(pk=int(value)).first()
        if segment is not None:
            members = customers_in_segment(segment.definition).values("pk")
            return Engagement.objects.filter(customer_id__in=members), segment.name
    raise Http404("No such group.")


def _cursor(raw: str) -> tuple[Decimal, int] | None:
    try:
        value, pk = raw.split("|", 1)
        return Decimal(value), int(pk)
    except (ValueError, InvalidOperation):
        return None


@permission_required("workbench.open_console", raise_exception=True)
def engagement(request):
    group = request.GET.get("group", "")
    context = {
        "formulas": formulas,
        "computed_at": formulas.last_computed_at(),
        "console_section": "engagement",
    }
    if group:
        rows, label = group_rows(group)
        cursor = _cursor(request.GET.get("after", ""))
        if cursor:
            value, pk = cursor
            rows = rows.filter(
                Q(lifetime_value__lt=value) | Q(lifetime_value=value, customer_id__lt=pk)
            )
        page = list(
            rows.select_related("customer")
            .only("customer__display_name", *[f.name for f in Engagement._meta.concrete_fields])
            .order_by("-lifetime_value", "-customer_id")[: PAGE_SIZE + 1]
        )
        next_url = None
        if len(page) > PAGE_SIZE:
            page = page[:PAGE_SIZE]
            last = page[-1]
            next_url = "?" + urlencode(
                {"group": group, "after": f"{last.lifetime_value}|{last.customer_id}"}
            )
        context.update({"group": group, "group_label": label, "page": page, "next_url": next_url})
    else:
        context.update({"stages": by_stage(), "segments": by_segment()})
    return render(request, "workbench/console_engagement.html", context)
