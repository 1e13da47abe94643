"""The audit log page: who did what, when, to what; filtered by actor, action, target and dates,
paged by keyset (newest first), exported as CSV (the export is itself audited)."""

from __future__ import annotations

import csv
import io
import json
import zoneinfo
from datetime import datetime, time, timedelta

from django import forms
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import render
from django.utils.http import urlencode
from rules.contrib.views import permission_required

from workbench.audit import record_audit
from workbench.models import AuditEntry

PAGE_SIZE = 50
EXPORT_LIMIT = 100_000
EXPORT_ACTION = "audit.exported"


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150, label="Actor")
    action = forms.CharField(required=False, max_length=64, label="Action")
    target = forms.CharField(required=False, max_length=255, label="Target")
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    after = forms.CharField(required=False)  # the keyset cursor: "<iso time>|<id>"

    def clean_after(self):
        raw = self.cleaned_data.get("after") or ""
        if not raw:
            return None
        try:
            when, pk = raw.rsplit("|", 1)
            return datetime.fromisoformat(when), int(pk)
        except ValueError:
            raise forms.ValidationError("That page link is broken; start again.") from None


def filtered_entries(data: dict, *, tz_name: str = "UTC"):
    """The entries the filters select (dates are whole days in the viewer's time zone)."""
    tz = zoneinfo.ZoneInfo(tz_name or "UTC")
    entries = AuditEntry.objects.all()
    if data.get("actor"):
        entries = entries.filter(actor_label__icontains=data["actor"])
    if data.get("action"):
        entries = entries.filter(action__icontains=data["action"])
    if data.get("target"):
        text = data["target"]
        entries = entries.filter(
            Q(target_label__icontains=text) | Q(target_type__icontains=text) | Q(target_id=text)
        )
    if data.get("date_from"):
        entries = entries.filter(created_at__gte=datetime.combine(data["date_from"], time(), tz))
    if data.get("date_to"):
        end = datetime.combine(data["date_to"] + timedelta(days=1), time(), tz)
        entries = entries.filter(created_at__lt=end)
    return entries.order_by("-created_at", "-id")


def _filters_of(form: AuditFilterForm) -> dict:
    return {k: v for k, v in form.cleaned_data.items() if k != "after" and v not in (None, "")}


@permission_required("workbench.open_console", raise_exception=True)
def audit_list(request):
    form = AuditFilterForm(request.GET)
    rows, next_url, export_url = [], None, None
    if form.is_valid():
        filters = _filters_of(form)
        entries = filtered_entries(filters, tz_name=request.user.timezone)
        cursor = form.cleaned_data["after"]
        if cursor:
            when, pk = cursor
            entries = entries.filter(Q(created_at__lt=when) | Q(created_at=when, id__lt=pk))
        rows = list(entries[: PAGE_SIZE + 1])
        query = {k: str(v) for k, v in filters.items()}
        if len(rows) > PAGE_SIZE:
            rows = rows[:PAGE_SIZE]
            last = rows[-1]
            next_url = "?" + urlencode(
                {**query, "after": f"{last.created_at.isoformat()}|{last.pk}"}
            )
        export_url = "?" + urlencode(query) if query else ""
    return render(
        request,
        "workbench/console_audit.html",
        {
            "form": form,
            "rows": rows,
            "next_url": next_url,
            "export_query": export_url or "",
            "is_later_page": bool(request.GET.get("after")),
            "console_section": "audit",
        },
        status=200 if form.is_valid() else 400,
    )


@permission_required("workbench.open_console", raise_exception=True)
def audit_csv(request):
    """The filtered log as CSV (up to EXPORT_LIMIT rows); the export is audited first."""
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return HttpResponse("Invalid filters.", status=400, content_type="text/plain")
    filters = _filters_of(form)
    entries = filtered_entries(filters, tz_name=request.user.timezone)
    rows = list(
        entries.values_list(
            "created_at",
            "actor_label",
            "action",
            "target_type",
            "target_id",
            "target_label",
            "ip_address",
            "details",
        )[:EXPORT_LIMIT]
    )
    record_audit(
        actor=request.user,
        action=EXPORT_ACTION,
        details={"filters": {k: str(v) for k, v in filters.items()}, "rows": len(rows)},
        ip_address=request.META.get("REMOTE_ADDR") or None,
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["when", "actor", "action", "target_type", "target_id", "target", "ip", "details"]
    )
    for created_at, *rest, details in rows:
        writer.writerow(
            [created_at.isoformat(), *(v or "" for v in rest), json.dumps(details, sort_keys=True)]
        )
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
    return response
