"""Live-chat pages: the CCO's list of websites allowed to embed the widget, and the demo shop page.

Origins are added and removed by the CCO only (403 for anyone else), each change in the audit
log; a removal asks for confirmation first. The demo page (/chat/demo/) is public, like any
shop's page would be, and is always allowed to open the chat socket.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import include, path
from django.views.decorators.http import require_http_methods
from rules.contrib.views import permission_required

from workbench.audit import record_audit
from workbench.connectors.chat import normalise_origin
from workbench.models import ChatWidgetOrigin

ORIGIN_ADDED = "chat_origin_added"
ORIGIN_REMOVED = "chat_origin_removed"


class OriginForm(forms.Form):
    origin = forms.CharField(
        label="Website origin",
        max_length=300,
        help_text="Scheme, host and port of the site that embeds the widget, e.g. "
        "https://shop.example",
    )

    def clean_origin(self) -> str:
        origin = normalise_origin(self.cleaned_data["origin"])
        if ChatWidgetOrigin.objects.filter(origin=origin).exists():
            raise ValidationError(f"{origin} is allowed already.")
        return origin


def allow_origin(*, origin: str, actor) -> ChatWidgetOrigin:
    """Allow `origin` (normalised) to embed the widget; audited. ValidationError when it is
    malformed or allowed already (nothing stored)."""
    origin = normalise_origin(origin)
    try:
        with transaction.atomic():
            row = ChatWidgetOrigin.objects.create(origin=origin, added_by=actor)
            record_audit(actor=actor, action=ORIGIN_ADDED, target=row)
    except IntegrityError:
        raise ValidationError(f"{origin} is allowed already.") from None
    return row


def remove_origin(*, row: ChatWidgetOrigin, actor) -> None:
    """Stop `row`'s website from opening new chat sockets; audited."""
    with transaction.atomic():
        record_audit(actor=actor, action=ORIGIN_REMOVED, target=row)
        row.delete()


@permission_required("workbench.open_console", raise_exception=True)
@require_http_methods(["GET", "POST"])
def chat_settings(request):
    form = OriginForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            allow_origin(origin=form.cleaned_data["origin"], actor=request.user)
        except ValidationError as exc:
            form.add_error("origin", exc)
        else:
            return redirect("chat_settings:home")
    origins = list(ChatWidgetOrigin.objects.select_related("added_by").order_by("origin"))
    status = 400 if form.errors else 200
    context = {"form": form, "origins": origins}
    return render(request, "workbench/chat_settings.html", context, status=status)


@permission_required("workbench.open_console", raise_exception=True)
@require_http_methods(["GET", "POST"])
def remove(request, pk: int):
    row = get_object_or_404(ChatWidgetOrigin, pk=pk)
    if request.method == "POST":
        remove_origin(row=row, actor=request.user)
        return redirect("chat_settings:home")
    context = {"confirm_row": row, "origins": [], "form": None}
    return render(request, "workbench/chat_settings.html", context)


@login_not_required
@require_http_methods(["GET"])
def chat_demo(request):
    """A small shop's page embedding the widget, as a customer's website would."""
    workbench_url = f"{request.scheme}://{request.get_host()}"
    return render(request, "workbench/chat_demo.html", {"workbench_url": workbench_url})


urlpatterns = [
    path("", chat_settings, name="home"),
    path("<int:pk>/remove/", remove, name="remove"),
]
urls = include((urlpatterns, "chat_settings"))
