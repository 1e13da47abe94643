"""The case merge page: pick another case of the same customer, preview what moves, confirm.

A door onto `cases.merging`: GET lists the customer's other open cases the viewer may work on
and, once one is picked (`?target=`), what would move; POST (with the confirmation ticked)
merges and sends the user to the case that stays open.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods
from rules.contrib.views import permission_required

from cases.access import can_read_case, can_work_case
from cases.merging import check_case_is_mergeable, merge_cases, preview_case_merge
from cases.models import OPEN_STATUSES, Case

TEMPLATE = "cases/merge.html"
# A customer with more open cases than this has a data problem no merge page solves.
MAX_CANDIDATES = 50


class PickCaseForm(forms.Form):
    """GET: which case stays open (the preview)."""

    target = forms.TypedChoiceField(
        coerce=int,
        label="The case that stays open",
        widget=forms.RadioSelect,
        error_messages={
            "required": "Pick the case to merge this one into.",
            "invalid_choice": "Pick one of the cases listed.",
        },
    )

    def __init__(self, *args, source: Case, candidates: list[Case], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].choices = [(case.pk, str(case)) for case in candidates]


class MergeCaseForm(PickCaseForm):
    """POST: the same choice, confirmed."""

    confirm = forms.BooleanField(
        error_messages={"required": "Tick the box to confirm: a merge cannot be undone."},
    )

    def __init__(self, *args, source: Case, candidates: list[Case], **kwargs):
        super().__init__(*args, source=source, candidates=candidates, **kwargs)
        self.fields[
            "confirm"
        ].label = (
            f"Close case #{source.pk} for good and move what it holds: a merge cannot be undone"
        )


def _candidates(viewer, source: Case) -> list[Case]:
    """The customer's other open cases the viewer may work on, most urgent SLA first."""
    rows = (
        Case.objects.filter(
            customer_id=source.customer_id, status__in=OPEN_STATUSES, merged_into__isnull=True
        )
        .exclude(pk=source.pk)
        .select_related("queue", "assignee")
        .order_by(F("sla_due_at").asc(nulls_last=True), "priority_rank", "id")[:MAX_CANDIDATES]
    )
    return [case for case in rows if can_work_case(viewer, case)]


@permission_required("cases.view_queue", raise_exception=True)
@require_http_methods(["GET", "POST"])
def merge(request, pk: int):
    source = get_object_or_404(
        Case.objects.select_related("customer", "queue", "assignee").defer(
            "customer__name_search", "customer__attributes"
        ),
        pk=pk,
    )
    if not can_read_case(request.user, source):
        raise PermissionDenied("This case is not in your queues or assigned to you.")
    if not can_work_case(request.user, source):
        raise PermissionDenied("Your role reads cases but does not work on them.")

    context = {
        "case": source,
        "viewer": request.user,
        "candidates": [],
        "target": None,
        "preview": None,
        "error": "",
    }
    try:
        check_case_is_mergeable(case=source)
    except ValidationError as exc:
        # Closed or merged already: say so and offer nothing.
        context["error"] = " ".join(exc.messages)
        return render(request, TEMPLATE, context, status=200 if request.method == "GET" else 400)

    candidates = _candidates(request.user, source)
    is_post = request.method == "POST"
    if is_post:
        pick = MergeCaseForm(request.POST, source=source, candidates=candidates)
    else:
        data = request.GET if "target" in request.GET else None
        pick = PickCaseForm(data, source=source, candidates=candidates)
    # The confirmation form carries the picked case on; on POST it is the submitted form.
    confirm = pick if is_post else MergeCaseForm(source=source, candidates=candidates)
    context.update({"candidates": candidates, "pick": pick, "confirm_form": confirm})
    if pick.is_bound:
        pick.is_valid()
        target_pk = pick.cleaned_data.get("target")
        if target_pk is not None:
            target = next(case for case in candidates if case.pk == target_pk)
            context["target"] = target
            try:
                context["preview"] = preview_case_merge(source=source, target=target)
            except ValidationError as exc:
                context["error"] = " ".join(exc.messages)
                return render(request, TEMPLATE, context, status=400)
    if not is_post or not pick.is_valid():
        status = 400 if pick.errors else 200
        return render(request, TEMPLATE, context, status=status)

    target = context["target"]
    try:
        merge_cases(source=source, target=target, actor=request.user)
    except ValidationError as exc:
        context["error"] = " ".join(exc.messages)
        return render(request, TEMPLATE, context, status=400)
    messages.success(
        request,
        f"Case #{source.pk} was merged into this case: its interactions and commitments are "
        f"here now, and case #{source.pk} is closed.",
    )
    return redirect("cases:detail", target.pk)
