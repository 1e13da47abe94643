"""Marketing's pages: campaigns (list, editor, preflight, the live campaign page) and segments
(list and builder with a live count), plus the "Marketing for this customer" panel.

Views are doors: they check the role, parse a form, call one service (`campaigns.editing`,
`campaigns.lifecycle`, `campaigns.overrides`, `campaigns.policy`) and render. Marketers work
here; the CCO reads; service gets 403. Fragments that the websocket also pushes (the progress
bar, the holds) are named partials rendered by the same context functions (`campaigns.fragments`).
"""

from __future__ import annotations

from contextlib import suppress

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect
from rules.contrib.views import permission_required

from campaigns import editing, lifecycle, overrides, policy
from campaigns.audience import segment_count, validate_definition
from campaigns.dispatch import progress_for
from campaigns.forms import (
    MATCH_CHOICES,
    MAX_CONDITIONS,
    CampaignForm,
    OverrideRequestForm,
    Row,
    SegmentForm,
    definition_from,
    field_specs,
    rows_for,
    rows_from,
)
from campaigns.models import (
    HOLD_REASONS,
    Campaign,
    CampaignStatus,
    Override,
    OverrideStatus,
    Reason,
    Segment,
    Touch,
    TouchStatus,
)
from workbench import realtime, roles

LIST = "campaigns/campaign_list.html"
DETAIL = "campaigns/campaign_detail.html"
FORM = "campaigns/campaign_form.html"
SEGMENTS = "campaigns/segment_list.html"
SEGMENT_FORM = "campaigns/segment_form.html"
DRILL = "campaigns/preflight_customers.html"
PAGE_SIZE = 25
DRILL_SIZE = 50
SEND = "send"

# Each outcome in the words a marketer (and the agent's panel) reads.
EXPLANATIONS = {
    SEND: "Will be sent: nothing in service or the contact policy stands in the way.",
    Reason.OPEN_COMMITMENT: "Held: service has promised this customer something (a refund, a "
    "callback…) that is still open. Sent automatically once the promise is kept.",
    Reason.OPEN_COMPLAINT: "Held: the customer has an open complaint case. Sent automatically "
    "once the case is solved and the cool-off has passed.",
    Reason.COOL_OFF: "Held: a complaint was solved or a promise broken recently; the contact "
    "policy leaves the customer alone for a few days.",
    Reason.AGENT_PAUSE: "Held: an agent paused marketing for this customer until their case is "
    "solved.",
    Reason.FREQUENCY_CAP: "Held: the customer already had as many marketing messages as the "
    "contact policy allows in its window.",
    Reason.QUIET_HOURS: "Waiting: it is night where the customer lives; sent in the morning.",
    Reason.TOPIC_CONFLICT: "Not sent: the customer has an open case about a topic of this "
    "campaign.",
    Reason.NO_CONSENT: "Not sent: the customer has not agreed to marketing on this channel.",
    Reason.NO_IDENTITY: "Not sent: we have no handle for the customer on this channel.",
}
OUTCOME_ORDER = [SEND, *HOLD_REASONS, Reason.TOPIC_CONFLICT, Reason.NO_CONSENT, Reason.NO_IDENTITY]


def outcome_label(outcome: str) -> str:
    return "Will be sent" if outcome == SEND else Reason(outcome).label


def _refuse_unless_editor(user) -> None:
    if not roles.can_edit_campaigns(user):
        raise PermissionDenied("Only marketers change campaigns and segments.")


def _errors_into(form, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def _done(request, url: str):
    """After a POST: a redirect (a plain form) or htmx's client redirect (a confirmed button)."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


# --- the campaign list -----------------------------------------------------------------------


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_GET
def campaign_list(request):
    """Every campaign, newest first, 25 a page, with its touches counted by status."""
    campaigns = Campaign.objects.select_related("segment", "owner").order_by("-created_at", "-id")
    page = Paginator(campaigns, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    counts: dict[int, dict[str, int]] = {row.pk: {} for row in rows}
    touched = [row.pk for row in rows if row.status != CampaignStatus.DRAFT]
    if touched:
        for line in (
            Touch.objects.filter(campaign_id__in=touched)
            .values("campaign_id", "status")
            .annotate(n=Count("id"))
            .order_by()
        ):
            counts[line["campaign_id"]][line["status"]] = line["n"]
    context = {
        "page": page,
        "rows": [(row, counts[row.pk]) for row in rows],
        "can_edit": roles.can_edit_campaigns(request.user),
        "has_segments": Segment.objects.exists(),
    }
    return render(request, LIST, context)


# --- segments --------------------------------------------------------------------------------


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_GET
def segment_list(request):
    segments = (
        Segment.objects.select_related("owner")
        .annotate(campaign_count=Count("campaigns"))
        .order_by("name")
    )
    page = Paginator(segments, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "can_edit": roles.can_edit_campaigns(request.user)}
    return render(request, SEGMENTS, context)


def builder_context(*, match: str, rows: list[Row]) -> dict:
    return {
        "rows": rows,
        "specs": field_specs(),
        "match": match,
        "match_choices": MATCH_CHOICES,
        "max_conditions": MAX_CONDITIONS,
        "can_add": len(rows) < MAX_CONDITIONS,
    }


def count_context(definition: dict) -> dict:
    """The live count: how many customers match, or what is missing in the conditions."""
    try:
        cleaned = validate_definition(definition)
    except ValidationError as exc:
        return {"count": None, "count_problem": " ".join(exc.messages)}
    return {"count": segment_count(cleaned), "count_problem": ""}


def _segment_page(request, *, segment: Segment | None, form: SegmentForm, rows, status=200):
    definition = definition_from(form["match"].value() or "all", rows)
    context = {
        "segment": segment,
        "form": form,
        "is_live_segment": segment is not None
        and segment.campaigns.filter(status__in=editing.LIVE_STATUSES).exists(),
        **builder_context(match=definition["match"], rows=rows),
        **count_context(definition),
    }
    return render(request, SEGMENT_FORM, context, status=status)


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_http_methods(["GET", "POST"])
def segment_new(request):
    _refuse_unless_editor(request.user)
    if request.method == "GET":
        first = Row(field=None)
        return _segment_page(request, segment=None, form=SegmentForm(), rows=[first])
    return _save_segment(request, segment=None)


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_http_methods(["GET", "POST"])
def segment_detail(request, pk: int):
    """A saved segment: its builder (marketers) or its conditions read-only (the CCO)."""
    segment = get_object_or_404(Segment.objects.select_related("owner"), pk=pk)
    if request.method == "POST":
        _refuse_unless_editor(request.user)
        return _save_segment(request, segment=segment)
    form = SegmentForm(
        initial={
            "name": segment.name,
            "description": segment.description,
            "match": (segment.definition or {}).get("match", "all"),
        }
    )
    return _segment_page(request, segment=segment, form=form, rows=rows_for(segment.definition))


def _save_segment(request, *, segment: Segment | None):
    form = SegmentForm(request.POST)
    rows = rows_from(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        definition = definition_from(data["match"], rows)
        try:
            if segment is None:
                saved = editing.create_segment(
                    name=data["name"],
                    description=data["description"],
                    definition=definition,
                    actor=request.user,
                )
            else:
                saved = editing.update_segment(
                    segment=segment,
                    name=data["name"],
                    description=data["description"],
                    definition=definition,
                    actor=request.user,
                )
        except ValidationError as exc:
            _errors_into(form, exc)
        else:
            messages.success(request, f"Segment “{saved.name}” saved.")
            return redirect("campaigns:segment", saved.pk)
    return _segment_page(request, segment=segment, form=form, rows=rows, status=400)


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_POST
def segment_builder(request):
    """The builder's rows after an add, a remove or a changed field (htmx), with the count."""
    _refuse_unless_editor(request.user)
    rows = rows_from(request.POST)
    action = request.POST.get("builder", "")
    if action == "add" and len(rows) < MAX_CONDITIONS:
        rows.append(Row(field=None))
    elif action.startswith("remove:"):
        with suppress(ValueError, IndexError):
            del rows[int(action.removeprefix("remove:"))]
    elif action.startswith("field:"):
        with suppress(ValueError, IndexError):
            index = int(action.removeprefix("field:"))
            rows[index] = Row(field=rows[index].field)  # a new field starts from its first op
    match = request.POST.get("match", "all")
    definition = definition_from(match, rows)
    context = {**builder_context(match=match, rows=rows), **count_context(definition)}
    context["count_oob"] = True
    html = render_to_string(f"{SEGMENT_FORM}#builder", context, request=request)
    html += render_to_string(f"{SEGMENT_FORM}#segment-count", context, request=request)
    return HttpResponse(html)


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_POST
def segment_count_view(request):
    """The live count for the conditions as they stand in the builder (htmx)."""
    _refuse_unless_editor(request.user)
    definition = definition_from(request.POST.get("match", "all"), rows_from(request.POST))
    return render(request, f"{SEGMENT_FORM}#segment-count", count_context(definition))


# --- the campaign editor ---------------------------------------------------------------------


def _campaign_values(form: CampaignForm) -> dict:
    return {field: form.cleaned_data.get(field) for field in editing.CAMPAIGN_FIELDS}


def _initial(campaign: Campaign) -> dict:
    initial = {field: getattr(campaign, field) for field in editing.CAMPAIGN_FIELDS}
    for field in ("scheduled_at", "ends_at"):
        if initial[field]:
            initial[field] = timezone.localtime(initial[field])
    return initial


def _form_page(request, *, form: CampaignForm, campaign: Campaign | None, status: int = 200):
    segment = form.cleaned_data.get("segment") if form.is_bound and form.is_valid() else None
    if segment is None and campaign is not None:
        segment = campaign.segment
    context = {
        "form": form,
        "campaign": campaign,
        "has_segments": Segment.objects.exists(),
        "placeholders": editing.PLACEHOLDERS,
        "preview": editing.render_preview(
            subject=form["subject"].value() or "",
            content=form["content"].value() or "",
            segment=segment,
        )
        if (form["content"].value() or "") and segment is not None
        else None,
    }
    return render(request, FORM, context, status=status)


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_http_methods(["GET", "POST"])
def campaign_new(request):
    _refuse_unless_editor(request.user)
    if request.method == "GET":
        initial = {}
        segment_id = request.GET.get("segment", "")
        if segment_id.isdigit():
            initial["segment"] = int(segment_id)
        return _form_page(request, form=CampaignForm(initial=initial), campaign=None)
    form = CampaignForm(request.POST)
    if form.is_valid():
        try:
            campaign = editing.create_campaign(actor=request.user, **_campaign_values(form))
        except ValidationError as exc:
            _errors_into(form, exc)
        else:
            messages.success(request, "Draft saved. Run preflight to see who it will reach.")
            return redirect("campaigns:detail", campaign.pk)
    return _form_page(request, form=form, campaign=None, status=400)


def _editable(request, pk: int) -> Campaign:
    campaign = get_object_or_404(Campaign.objects.select_related("segment"), pk=pk)
    _refuse_unless_editor(request.user)
    if campaign.owner_id != request.user.pk:
        raise PermissionDenied("Only the campaign's owner edits it.")
    return campaign


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_http_methods(["GET", "POST"])
def campaign_edit(request, pk: int):
    campaign = _editable(request, pk)
    if campaign.status != CampaignStatus.DRAFT:
        messages.error(request, "Only drafts are edited; pause or cancel a scheduled campaign.")
        return redirect("campaigns:detail", campaign.pk)
    if request.method == "GET":
        return _form_page(request, form=CampaignForm(initial=_initial(campaign)), campaign=campaign)
    form = CampaignForm(request.POST)
    if form.is_valid():
        try:
            editing.update_campaign(campaign=campaign, actor=request.user, **_campaign_values(form))
        except ValidationError as exc:
            _errors_into(form, exc)
        else:
            messages.success(request, "Draft saved.")
            return redirect("campaigns:detail", campaign.pk)
    return _form_page(request, form=form, campaign=campaign, status=400)


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_POST
def campaign_preview(request):
    """The editor's preview for the content as typed and the chosen segment (htmx)."""
    _refuse_unless_editor(request.user)
    segment_id = request.POST.get("segment", "")
    segment = Segment.objects.filter(pk=segment_id).first() if segment_id.isdigit() else None
    content = request.POST.get("content", "")
    context = {
        "preview": editing.render_preview(
            subject=request.POST.get("subject", ""), content=content, segment=segment
        )
        if content.strip() and segment is not None
        else None,
        "unknown": sorted(editing.unknown_placeholders(content)),
    }
    return render(request, f"{FORM}#preview", context)


# --- the campaign page -----------------------------------------------------------------------


def progress_context(viewer, campaign: Campaign) -> dict:
    """The progress bar and the holds: what the page shows and the websocket pushes."""
    progress = progress_for(campaign)
    total = progress.get("total") or 0
    bar, offset = [], 0.0
    for key in ("sent", "held", "suppressed", "failed"):
        width = (100.0 * progress.get(key, 0) / total) if total else 0.0
        bar.append({"key": key, "x": f"{offset:.3f}", "width": f"{width:.3f}"})
        offset += width
    # Held and suppressed touches by reason, in one grouped query.
    held: dict[str, int] = {}
    suppressed: dict[str, int] = {}
    waiting = (
        Touch.objects.filter(
            campaign=campaign, status__in=(TouchStatus.HELD, TouchStatus.SUPPRESSED)
        )
        .values_list("status", "reason")
        .annotate(n=Count("id"))
        .order_by()
    )
    for status, reason, n in waiting:
        (held if status == TouchStatus.HELD else suppressed)[reason] = n
    campaign_overrides = list(
        Override.objects.filter(campaign=campaign)
        .select_related("requested_by", "decided_by")
        .order_by("-requested_at", "-id")
    )
    open_by_reason = {
        o.reason: o
        for o in campaign_overrides
        if o.status in (OverrideStatus.PENDING, OverrideStatus.APPROVED)
    }
    may_ask = bool(roles.can_edit_campaigns(viewer)) and campaign.status in overrides.OPEN_STATUSES
    holds = [
        {
            "reason": reason,
            "label": Reason(reason).label,
            "explanation": EXPLANATIONS[reason],
            "count": held[reason],
            "override": open_by_reason.get(reason),
            "may_ask": may_ask
            and reason in overrides.OVERRIDABLE_REASONS
            and reason not in open_by_reason,
        }
        for reason in HOLD_REASONS
        if held.get(reason)
    ]
    return {
        "campaign": campaign,
        "viewer": viewer,
        "progress": progress,
        "bar": bar,
        "holds": holds,
        "suppressions": [
            {
                "reason": reason,
                "label": Reason(reason).label,
                "explanation": EXPLANATIONS[reason],
                "count": count,
            }
            for reason, count in sorted(suppressed.items())
        ],
        "overrides": campaign_overrides,
        "override_form": OverrideRequestForm(),
    }


def _campaign(pk: int) -> Campaign:
    return get_object_or_404(Campaign.objects.select_related("segment", "owner"), pk=pk)


def detail_context(request, campaign: Campaign, **extra) -> dict:
    user = request.user
    may_edit = editing.may_edit_campaign(user, campaign)
    is_owner_marketer = bool(roles.can_edit_campaigns(user)) and campaign.owner_id == user.pk
    context = {
        **progress_context(user, campaign),
        "may_edit": may_edit,
        "may_schedule": is_owner_marketer and campaign.status == CampaignStatus.DRAFT,
        "may_pause": is_owner_marketer and campaign.is_live,
        "may_resume": is_owner_marketer and campaign.status == CampaignStatus.PAUSED,
        "may_cancel": is_owner_marketer
        and campaign.status in (CampaignStatus.DRAFT, *editing.LIVE_STATUSES),
        "may_preflight": campaign.status in (CampaignStatus.DRAFT, *editing.LIVE_STATUSES),
        "preview": editing.render_preview(
            subject=campaign.subject, content=campaign.content, segment=campaign.segment
        ),
        "has_touches": campaign.status != CampaignStatus.DRAFT,
        "realtime_groups": [realtime.group_name("campaign", campaign.pk)],
        "errors": [],
    }
    context.update(extra)
    return context


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_GET
def campaign_detail(request, pk: int):
    campaign = _campaign(pk)
    return render(request, DETAIL, detail_context(request, campaign))


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_GET
def campaign_progress(request, pk: int):
    """The progress bar and the holds, for the page's refetch after a reconnect."""
    campaign = _campaign(pk)
    context = progress_context(request.user, campaign)
    context["is_live"] = True  # both sections swap in by id (the page asks with hx-swap="none")
    # Rendered without the request, like the pushed copy: its forms post through htmx, which
    # sends the CSRF token from <body hx-headers>.
    html = render_to_string(f"{DETAIL}#campaign-progress", context)
    html += render_to_string(f"{DETAIL}#campaign-holds", context)
    return HttpResponse(html)


def preflight_context(campaign: Campaign) -> dict:
    result = policy.preflight(campaign=campaign)
    outcomes = [
        {
            "outcome": str(outcome),
            "label": outcome_label(outcome),
            "explanation": EXPLANATIONS[outcome],
            "count": result.counts.get(outcome, 0),
            "is_send": outcome == SEND,
        }
        for outcome in OUTCOME_ORDER
        if result.counts.get(outcome, 0) or outcome == SEND
    ]
    return {"campaign": campaign, "preflight": result, "outcomes": outcomes}


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_POST
def campaign_preflight(request, pk: int):
    """Run preflight: the audience split by outcome under the current contact policy."""
    campaign = _campaign(pk)
    if campaign.status not in (CampaignStatus.DRAFT, *editing.LIVE_STATUSES):
        raise Http404("preflight is for drafts and live campaigns")
    context = preflight_context(campaign)
    if request.htmx:
        return render(request, f"{DETAIL}#preflight", context)
    return render(request, DETAIL, detail_context(request, campaign, **context))


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_GET
def preflight_customers(request, pk: int, outcome: str):
    """Who falls under one outcome: names only (never case bodies or notes), 50 at a time."""
    campaign = _campaign(pk)
    if outcome != SEND and outcome not in Reason.values:
        raise Http404("no such outcome")
    after = request.GET.get("after", "0")
    after_id = int(after) if after.isdigit() else 0
    people = policy.preflight_customers(
        campaign=campaign, outcome=outcome, after_id=after_id, limit=DRILL_SIZE + 1
    )
    more = len(people) > DRILL_SIZE
    people = people[:DRILL_SIZE]
    context = {
        "campaign": campaign,
        "outcome": outcome,
        "label": outcome_label(outcome),
        "explanation": EXPLANATIONS[outcome],
        "people": people,
        "next_after": people[-1][0] if more and people else None,
        "is_first_page": after_id == 0,
    }
    if request.htmx and after_id:
        return render(request, f"{DRILL}#people", context)
    return render(request, DRILL, context)


ACTIONS = {
    "schedule": (lifecycle.schedule_campaign, "Scheduled. Touches are checked again at send time."),
    "pause": (lifecycle.pause_campaign, "Paused. Nothing more is sent until you resume."),
    "resume": (lifecycle.resume_campaign, "Resumed."),
    "cancel": (lifecycle.cancel_campaign, "Cancelled. Touches not yet sent will not be sent."),
}


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_POST
def campaign_action(request, pk: int, action: str):
    """Schedule, pause, resume or cancel (the owner, a marketer; confirmed in the page)."""
    if action not in ACTIONS:
        raise Http404("no such action")
    _refuse_unless_editor(request.user)
    campaign = _campaign(pk)
    service, done = ACTIONS[action]
    try:
        service(campaign=campaign, actor=request.user)
    except ValidationError as exc:
        if request.htmx:
            messages.error(request, " ".join(exc.messages))
            return HttpResponseClientRedirect(reverse("campaigns:detail", args=[campaign.pk]))
        campaign.refresh_from_db()
        context = detail_context(request, campaign, errors=exc.messages)
        return render(request, DETAIL, context, status=400)
    messages.success(request, done)
    return _done(request, reverse("campaigns:detail", args=[campaign.pk]))


@permission_required("campaigns.view_campaigns", raise_exception=True)
@require_POST
def override_request(request, pk: int):
    """Ask the CCO for an override of one hold reason on this campaign (marketers)."""
    _refuse_unless_editor(request.user)
    campaign = _campaign(pk)
    form = OverrideRequestForm(request.POST)
    if form.is_valid():
        try:
            overrides.request_override(
                campaign=campaign,
                reason=form.cleaned_data["reason"],
                justification=form.cleaned_data["justification"],
                actor=request.user,
            )
        except ValidationError as exc:
            _errors_into(form, exc)
        else:
            if request.htmx:  # the holds again, now saying the override waits for the CCO
                context = detail_context(request, campaign)
                return render(request, f"{DETAIL}#campaign-holds", context)
            messages.success(request, "Asked the CCO. You will be told of the decision.")
            return redirect(reverse("campaigns:detail", args=[campaign.pk]) + "#overrides")
    context = detail_context(request, campaign)
    context.update(override_form=form, override_reason=request.POST.get("reason", ""))
    if request.htmx:
        # htmx swaps no 4xx answer: the holds come back (200) with the error by the field.
        return render(request, f"{DETAIL}#campaign-holds", context)
    return render(request, DETAIL, context, status=400)
