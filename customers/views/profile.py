"""Customer pages: the list with search, the customer page and its live timeline, consent."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch, prefetch_related_objects
from django.http import HttpResponseBadRequest, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect
from rules.contrib.views import permission_required

from customers.consent import latest_consents, record_consent
from customers.identity import live_customer
from customers.models import Channel, ConsentPurpose, Customer, Identity, Kind
from customers.panels import panels_for
from customers.search import search_customers
from customers.summary import summary_for
from customers.timeline import Cursor, timeline_page
from workbench import realtime, roles

LIST_PAGE_SIZE = 50
SEARCH_LIMIT = 50
LIST = "customers/customer_list.html"
DETAIL = "customers/customer_detail.html"


# --- forms ---------------------------------------------------------------------------------


class TimelineFilterForm(forms.Form):
    """The timeline's filters (GET): channels, kinds, and the keyset position to start from."""

    channel = forms.MultipleChoiceField(choices=Channel.choices, required=False)
    kind = forms.MultipleChoiceField(choices=Kind.choices, required=False)
    before = forms.CharField(required=False, max_length=64)

    def clean_before(self) -> Cursor | None:
        value = self.cleaned_data["before"]
        if not value:
            return None
        try:
            return Cursor.decode(value)
        except ValidationError:
            raise ValidationError("That is not a position in the timeline.") from None

    def query(self) -> str:
        """The filters (not the position) as a query string, for the page's own links."""
        data = self.cleaned_data if self.is_valid() else {}
        pairs = [("channel", c) for c in data.get("channel", [])]
        pairs += [("kind", k) for k in data.get("kind", [])]
        return urlencode(pairs)


class ConsentForm(forms.Form):
    """What the customer said about one purpose, and on which channel they said it."""

    GRANTED = "granted"
    WITHDRAWN = "withdrawn"

    purpose = forms.ChoiceField(choices=ConsentPurpose.choices)
    decision = forms.ChoiceField(
        choices=[(GRANTED, "Granted"), (WITHDRAWN, "Withdrawn")], widget=forms.RadioSelect
    )
    source = forms.ChoiceField(
        choices=Channel.choices, initial=Channel.PHONE, label="Said on (source)"
    )
    note = forms.CharField(max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2}))


# --- the list ------------------------------------------------------------------------------


@permission_required("customers.view_customers", raise_exception=True)
@require_GET
def customer_list(request):
    """Newest customers first (keyset by id), or the matches of the search box.

    An htmx request (the live search) gets only the `results` partial; a history restore gets
    the whole page.
    """
    query = request.GET.get("q", "").strip()
    before = request.GET.get("before", "")
    if before and not (before.isdigit() and 0 < int(before) < 2**63):
        return HttpResponseBadRequest("before: not a position in the customer list")
    older = None
    if query:
        customers = list(search_customers(query, limit=SEARCH_LIMIT))
    else:
        rows = Customer.objects.filter(merged_into__isnull=True).defer("name_search")
        if before:
            rows = rows.filter(pk__lt=int(before))
        customers = list(rows.order_by("-pk")[: LIST_PAGE_SIZE + 1])
        if len(customers) > LIST_PAGE_SIZE:
            customers = customers[:LIST_PAGE_SIZE]
            older = customers[-1].pk
    prefetch_related_objects(
        customers, Prefetch("identities", Identity.objects.order_by("channel", "handle"))
    )
    context = {
        "query": query,
        "customers": customers,
        "older": older,
        "is_first_page": not before,
        "is_capped": bool(query) and len(customers) == SEARCH_LIMIT,
        "has_any": bool(customers) or bool(query) or bool(before) or _has_customers(),
        "viewer": request.user,
    }
    is_fragment = request.htmx and not request.htmx.history_restore_request
    response = render(request, f"{LIST}#results" if is_fragment else LIST, context)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _has_customers() -> bool:
    return Customer.objects.filter(merged_into__isnull=True).exists()


# --- the customer page ---------------------------------------------------------------------


@permission_required("customers.view_customers", raise_exception=True)
@require_GET
def customer_detail(request, pk: int):
    """The customer page. A merged customer's page redirects to the customer who survived."""
    customer = get_object_or_404(Customer.objects.defer("name_search"), pk=pk)
    if customer.is_merged:
        return _to_survivor(request, customer)
    filters = TimelineFilterForm(request.GET)
    context = profile_context(request.user, customer, filters=filters)
    return render(request, DETAIL, context, status=400 if filters.errors else 200)


@permission_required("customers.view_customers", raise_exception=True)
@require_GET
def customer_timeline(request, pk: int):
    """The timeline for htmx: the whole section (filters, resync), or the next older page.

    Without `before` it returns the `timeline` partial (the filter form and the resync refetch
    ask for this); with it, the `timeline-more` partial that replaces the "Load older" button.
    A plain browser request is sent to the customer page with the same filters.
    """
    customer = get_object_or_404(Customer.objects.defer("name_search"), pk=pk)
    if customer.is_merged:
        return _to_survivor(request, customer)
    filters = TimelineFilterForm(request.GET)
    if not request.htmx or request.htmx.history_restore_request:
        query = filters.query()
        url = reverse("customers:detail", args=[customer.pk])
        return redirect(f"{url}?{query}" if query else url)
    if not filters.is_valid():
        return HttpResponseBadRequest(
            "; ".join(f"{field}: {' '.join(errors)}" for field, errors in filters.errors.items())
        )
    context = timeline_context(request.user, customer, filters)
    partial = "timeline-more" if filters.cleaned_data["before"] else "timeline"
    return render(request, f"{DETAIL}#{partial}", context)


@permission_required("customers.view_customers", raise_exception=True)
@require_POST
def customer_consent(request, pk: int):
    """Record a grant or withdrawal that the customer told an agent about (service and CCO).

    Anyone else gets 403 and nothing is stored. Invalid input re-renders the page (400) with
    the errors next to the fields.
    """
    if not roles.can_record_consent(request.user):
        raise PermissionDenied("Your role cannot record consent.")
    customer = get_object_or_404(Customer.objects.defer("name_search"), pk=pk)
    if customer.is_merged:
        survivor = live_customer(customer)
        messages.error(
            request,
            f"{customer} was merged into {survivor}; nothing was recorded. "
            "Record the consent again on this page.",
        )
        return redirect("customers:detail", survivor.pk)
    form = ConsentForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            record_consent(
                customer=customer,
                purpose=data["purpose"],
                is_granted=data["decision"] == ConsentForm.GRANTED,
                source=data["source"],
                note=data["note"],
                recorded_by=request.user,
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            label = ConsentPurpose(data["purpose"]).label
            messages.success(request, f"{label}: {data['decision']}. Recorded.")
            return redirect(reverse("customers:detail", args=[customer.pk]) + "#consent")
    context = profile_context(request.user, customer, consent_form=form)
    return render(request, DETAIL, context, status=400)


# --- what the page shows ---------------------------------------------------------------------


def profile_context(
    viewer,
    customer: Customer,
    *,
    filters: TimelineFilterForm | None = None,
    consent_form: ConsentForm | None = None,
) -> dict:
    """Everything the customer page shows; its query count does not grow with the timeline."""
    filters = filters if filters is not None else TimelineFilterForm(QueryDict())
    identities = list(customer.identities.order_by("channel", "handle"))
    consents = latest_consents(customer.pk)
    prefetch_related_objects(list(consents.values()), "recorded_by")
    context = timeline_context(viewer, customer, filters)
    context.update(
        {
            "identities": identities,
            "attributes": _attribute_rows(customer.attributes),
            "consent_rows": [
                {"purpose": value, "label": label, "latest": consents.get(value)}
                for value, label in ConsentPurpose.choices
            ],
            "can_record_consent": roles.can_record_consent(viewer),
            "consent_form": consent_form or ConsentForm(),
            "summary": summary_for(customer.pk),
            "panels": panels_for(viewer, customer.pk),
            "actions": _action_links(viewer, customer),
            "realtime_groups": [realtime.group_name("customer", customer.pk)],
        }
    )
    return context


def timeline_context(viewer, customer: Customer, filters: TimelineFilterForm) -> dict:
    """The timeline section: one page of entries and the URLs to refetch or go further back."""
    base = reverse("customers:timeline", args=[customer.pk])
    query = filters.query()
    is_valid = filters.is_valid()
    context = {
        "customer": customer,
        "viewer": viewer,
        "selected_channels": filters.cleaned_data["channel"] if is_valid else [],
        "selected_kinds": filters.cleaned_data["kind"] if is_valid else [],
        "can_read_private": roles.can_read_private_notes(viewer),
        "filters": filters,
        "channel_choices": Channel.choices,
        "kind_choices": Kind.choices,
        "timeline_url": f"{base}?{query}" if query else base,
        "is_filtered": bool(query),
        "page": None,
        "older_url": None,
    }
    if not is_valid:
        return context  # the page shows the errors next to the filters, and no entries
    data = filters.cleaned_data
    page = timeline_page(
        customer.pk, channels=data["channel"], kinds=data["kind"], before=data["before"]
    )
    context["page"] = page
    if page.next_cursor is not None:
        older = urlencode([("before", page.next_cursor.encode())])
        context["older_url"] = f"{base}?{query}&{older}" if query else f"{base}?{older}"
    return context


def _attribute_rows(attributes) -> list[tuple[str, str]]:
    if not isinstance(attributes, dict):
        return []
    return [
        (str(key), value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        for key, value in sorted(attributes.items())
    ]


def _action_links(viewer, customer: Customer) -> list[tuple[str, str]]:
    """Links to the pages only some roles may use (each of those pages checks the role again)."""
    wanted = []
    if roles.can_merge_customers(viewer):
        wanted.append(("Merge…", "customers:merge"))
    if roles.can_handle_privacy(viewer):
        wanted += [("Export data", "customers:export"), ("Erase…", "customers:erase")]
    return [(label, reverse(name, args=[customer.pk])) for label, name in wanted]


def _to_survivor(request, customer: Customer):
    survivor = live_customer(customer)
    url = reverse("customers:detail", args=[survivor.pk])
    messages.info(
        request, f"Customer {customer.pk} was merged into {survivor}: this is their page now."
    )
    if request.htmx and not request.htmx.history_restore_request:
        return HttpResponseClientRedirect(url)
    return redirect(url)


urlpatterns = [
    path("", customer_list, name="list"),
    path("<int:pk>/", customer_detail, name="detail"),
    path("<int:pk>/timeline/", customer_timeline, name="timeline"),
    path("<int:pk>/consent/", customer_consent, name="consent"),
]
