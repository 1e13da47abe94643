"""Customer pages: merge another customer into this one (supervisor or CCO), with a preview."""

from __future__ import annotations

from django import forms
from django.apps import apps
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods

from customers.merge import merge_candidates, merge_customers, preview_merge
from customers.models import Customer, Identity
from workbench import roles

CONFIRM_LABEL = "I understand this cannot be undone"


class MergeForm(forms.Form):
    other = forms.IntegerField(
        min_value=1,
        max_value=2**63 - 1,
        widget=forms.HiddenInput,
        error_messages={"required": "Pick the customer to merge into this one."},
    )
    confirm = forms.BooleanField(
        label=CONFIRM_LABEL,
        error_messages={"required": "Tick the box to confirm: a merge cannot be undone."},
    )


def _customers_with_identities():
    return Customer.objects.prefetch_related(
        Prefetch("identities", Identity.objects.order_by("channel", "handle"))
    )


def _preview_lines(preview) -> list[dict]:
    """One line per model: its plural name, rows moving, rows staying with the tombstone."""
    lines = [
        {
            "label": label,
            "name": apps.get_model(label)._meta.verbose_name_plural,
            "moves": count,
            "stays": preview.stays.get(label, 0),
        }
        for label, count in preview.moves.items()
    ]
    return sorted(lines, key=lambda line: line["name"])


@require_http_methods(["GET", "POST"])
def merge(request, pk: int):
    """GET: find the other customer and preview; POST: merge it into this one (the survivor)."""
    if not roles.can_merge_customers(request.user):
        raise PermissionDenied("Only a supervisor or the CCO can merge customers.")
    survivor = get_object_or_404(_customers_with_identities(), pk=pk)
    if request.method == "GET" and survivor.is_merged:
        return redirect("customers:merge", pk=survivor.merged_into_id)

    query = request.GET.get("q", "").strip()[:200]
    form = MergeForm(request.POST if request.method == "POST" else None)
    raw_other = request.POST.get("other") if request.method == "POST" else request.GET.get("other")
    context = {
        "survivor": survivor,
        "q": query,
        "candidates": merge_candidates(survivor=survivor, query=query) if query else None,
        "form": form,
        "other": None,
        "preview": None,
        "error": "",
        "confirm_label": CONFIRM_LABEL,
    }
    other_field = MergeForm.base_fields["other"]
    if raw_other not in (None, ""):
        try:
            other_id = other_field.clean(raw_other)
            context["other"] = _customers_with_identities().filter(pk=other_id).first()
            if context["other"] is None:
                raise ValidationError(f"There is no customer {other_id}.")
            context["preview"] = preview_merge(survivor=survivor, merged=context["other"])
            context["lines"] = _preview_lines(context["preview"])
        except ValidationError as error:
            context["error"] = " ".join(error.messages)
            return render(request, "customers/merge.html", context, status=400)

    if request.method == "GET":
        return render(request, "customers/merge.html", context)
    if not form.is_valid():
        if context["other"] is None:
            context["error"] = " ".join(form.errors.get("other", []))
        return render(request, "customers/merge.html", context, status=400)
    try:
        merge_customers(survivor=survivor, merged=context["other"], actor=request.user)
    except ValidationError as error:
        context["error"] = " ".join(error.messages)
        return render(request, "customers/merge.html", context, status=400)
    messages.success(
        request,
        f"Customer {context['other'].pk} was merged into this profile: "
        f"{context['preview'].total} records moved.",
    )
    return redirect(reverse("customers:detail", args=[survivor.pk]))


urlpatterns = [path("<int:pk>/merge/", merge, name="merge")]
