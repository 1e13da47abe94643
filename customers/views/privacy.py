"""Customer pages: privacy requests (the CCO's alone): export as JSON, erase; both confirmed."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods

from customers.models import Consent, Customer, Identity, Interaction
from customers.privacy import erase_customer, export_customer
from workbench import roles

ERASE_WORD = "ERASE"


class EraseForm(forms.Form):
    confirmation = forms.CharField(
        label="Type the customer number or ERASE to confirm",
        max_length=32,
        error_messages={"required": "Type the customer number or ERASE to confirm."},
    )

    def __init__(self, *args, customer: Customer, **kwargs):
        super().__init__(*args, **kwargs)
        self.customer = customer

    def clean_confirmation(self) -> str:
        value = self.cleaned_data["confirmation"].strip()
        if value not in (str(self.customer.pk), ERASE_WORD):
            raise ValidationError(
                f"Type {self.customer.pk} or {ERASE_WORD} exactly to confirm; nothing was erased."
            )
        return value


def _refuse_unless_cco(user) -> None:
    if not roles.can_handle_privacy(user):
        raise PermissionDenied("Only the CCO can export or erase a customer's data.")


def _held_counts(customer: Customer) -> dict[str, int]:
    return {
        "identities": Identity.objects.filter(customer=customer).count(),
        "interactions": Interaction.objects.filter(customer=customer).count(),
        "consents": Consent.objects.filter(customer=customer).count(),
    }


@require_http_methods(["GET", "POST"])
def export(request, pk: int):
    """GET: what the export holds and a button; POST: the JSON file, audited."""
    _refuse_unless_cco(request.user)
    customer = get_object_or_404(Customer, pk=pk)
    context = {"customer": customer, "counts": _held_counts(customer), "error": ""}
    if request.method == "GET":
        return render(request, "customers/export.html", context)
    try:
        data = export_customer(customer=customer, actor=request.user)
    except ValidationError as error:
        context["error"] = " ".join(error.messages)
        return render(request, "customers/export.html", context, status=400)
    response = JsonResponse(data, json_dumps_params={"indent": 2, "ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="customer-{customer.pk}.json"'
    return response


@require_http_methods(["GET", "POST"])
def erase(request, pk: int):
    """GET: what is kept and destroyed, and the typed confirmation; POST: erase, audited."""
    _refuse_unless_cco(request.user)
    customer = get_object_or_404(Customer, pk=pk)
    form = EraseForm(request.POST or None, customer=customer)
    context = {
        "customer": customer,
        "counts": _held_counts(customer),
        "form": form,
        "error": "",
        "erase_word": ERASE_WORD,
    }
    if request.method == "GET":
        return render(request, "customers/erase.html", context)
    if not form.is_valid():
        return render(request, "customers/erase.html", context, status=400)
    try:
        erase_customer(customer=customer, actor=request.user)
    except ValidationError as error:
        context["error"] = " ".join(error.messages)
        return render(request, "customers/erase.html", context, status=400)
    messages.success(
        request,
        f"Customer {customer.pk} was erased: identities removed, bodies blanked, "
        "counts and dates kept.",
    )
    return redirect("customers:detail", pk=customer.pk)


urlpatterns = [
    path("<int:pk>/export/", export, name="export"),
    path("<int:pk>/erase/", erase, name="erase"),
]
