"""The CCO's page for overrides: each pending request with its campaign, the hold it would lift,
the marketer's justification and the customers it reaches; approve or refuse in writing
(campaigns.overrides does the deciding, the audit, the timeline entries and the notification)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from rules.contrib.views import permission_required

from campaigns import overrides as override_service
from campaigns.models import Override, OverrideStatus, Touch, TouchStatus
from customers.models import Customer

AFFECTED_SHOWN = 50
RECENT_DECISIONS = 20


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("refuse", "Refuse")])
    note = forms.CharField(
        max_length=override_service.MAX_TEXT,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Your reason (required)",
    )


def pending_overrides() -> list[dict]:
    """Pending requests, oldest first, each with how many customers it reaches and the first of
    them: three queries however many requests wait."""
    pending = list(
        Override.objects.filter(status=OverrideStatus.PENDING)
        .select_related("campaign", "requested_by")
        .order_by("requested_at", "pk")
    )
    if not pending:
        return []
    keys = {(o.campaign_id, o.reason) for o in pending}
    held = Touch.objects.filter(
        status=TouchStatus.HELD,
        campaign_id__in={k[0] for k in keys},
        reason__in={k[1] for k in keys},
    )
    counts = {
        (r["campaign_id"], r["reason"]): r["n"]
        for r in held.values("campaign_id", "reason").annotate(n=Count("id")).order_by()
    }
    # The first customers of each request, by a window over the same held touches.
    firsts = (
        held.annotate(
            rank=Window(
                RowNumber(), partition_by=[F("campaign_id"), F("reason")], order_by=F("id").asc()
            )
        )
        .filter(rank__lte=AFFECTED_SHOWN)
        .values("campaign_id", "reason", "customer_id", "reason_detail")
    )
    by_key: dict[tuple, list[dict]] = {}
    customer_ids = set()
    for row in firsts:
        by_key.setdefault((row["campaign_id"], row["reason"]), []).append(row)
        customer_ids.add(row["customer_id"])
    names = dict(Customer.objects.filter(pk__in=customer_ids).values_list("pk", "display_name"))
    out = []
    for override in pending:
        key = (override.campaign_id, override.reason)
        out.append(
            {
                "override": override,
                "affected_count": counts.get(key, 0),
                "affected": [
                    {
                        "customer_id": r["customer_id"],
                        "name": names.get(r["customer_id"]) or f"Customer {r['customer_id']}",
                        "detail": r["reason_detail"],
                    }
                    for r in by_key.get(key, [])
                ],
                "form": DecisionForm(prefix=f"o{override.pk}"),
            }
        )
    return out


def _page(request, *, failed: dict | None = None, status: int = 200):
    items = pending_overrides()
    if failed:
        for item in items:
            if item["override"].pk == failed["pk"]:
                item["form"] = failed["form"]
                item["error"] = failed.get("error", "")
    decided = (
        Override.objects.exclude(status=OverrideStatus.PENDING)
        .select_related("campaign", "requested_by", "decided_by")
        .order_by("-decided_at", "-pk")[:RECENT_DECISIONS]
    )
    return render(
        request,
        "workbench/console_overrides.html",
        {"items": items, "decided": decided, "console_section": "overrides"},
        status=status,
    )


@permission_required("workbench.open_console", raise_exception=True)
def override_list(request):
    return _page(request)


@require_POST
@permission_required("workbench.open_console", raise_exception=True)
def decide(request, pk: int):
    override = get_object_or_404(Override, pk=pk)
    form = DecisionForm(request.POST, prefix=f"o{pk}")
    if not form.is_valid():
        return _page(request, failed={"pk": pk, "form": form}, status=400)
    service = (
        override_service.approve_override
        if form.cleaned_data["decision"] == "approve"
        else override_service.refuse_override
    )
    try:
        decided = service(override=override, actor=request.user, note=form.cleaned_data["note"])
    except ValidationError as error:
        text = " ".join(error.messages)
        if (
            override.status == OverrideStatus.PENDING
            and Override.objects.filter(pk=pk, status=OverrideStatus.PENDING).exists()
        ):
            return _page(request, failed={"pk": pk, "form": form, "error": text}, status=400)
        messages.error(request, text)
        return redirect("console:overrides")
    messages.success(
        request,
        f"Override on “{decided.campaign.name}” {decided.get_status_display().lower()}; "
        "the marketer has been told.",
    )
    return redirect("console:overrides")
