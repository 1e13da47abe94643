"""Customer pages: the CSV import (upload with its check, recent imports) and its status page."""

from __future__ import annotations

from django import forms
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods

from customers import importing
from workbench import realtime, roles

RECENT_IMPORTS = 20
# Multipart framing around the file: a body larger than the file limit plus this is refused
# from its Content-Length, before a byte of it is parsed.
MULTIPART_SLACK_BYTES = 64 * 1024


class ImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text=f"Accepted columns: {importing.accepted_columns_help()}.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )


@csrf_exempt  # checked by _import_page, after the size guard (see below)
@require_http_methods(["GET", "POST"])
def import_customers(request):
    """Upload a CSV of customers (marketers and the CCO) and see one's recent imports.

    An oversized body is refused from its Content-Length before Django parses it into a
    temporary file: CSRF middleware would otherwise read the whole upload to find its token.
    """
    if not roles.can_import_customers(request.user):
        raise PermissionDenied("Your role may not import customers.")
    if request.method == "POST" and _declared_length(request) > (
        importing.MAX_UPLOAD_BYTES + MULTIPART_SLACK_BYTES
    ):
        refusal = importing.too_large_message(_declared_length(request))
        return _render_import_page(request, ImportForm(), status=413, refusal=refusal)
    return _import_page(request)


@csrf_protect
def _import_page(request):
    form = ImportForm(request.POST, request.FILES) if request.method == "POST" else ImportForm()
    if request.method == "POST" and form.is_valid():
        try:
            job = importing.start_import(user=request.user, upload=form.cleaned_data["file"])
        except ValidationError as exc:
            form.add_error("file", exc)
        else:
            return redirect("customers:import_status", pk=job.pk)
    status = 400 if request.method == "POST" else 200
    return _render_import_page(request, form, status=status)


def _render_import_page(request, form: ImportForm, *, status: int, refusal: str = ""):
    recent = list(importing.visible_imports(request.user)[:RECENT_IMPORTS])
    file_errors = [refusal] if refusal else list(form.errors.get("file", []))
    context = {
        "form": form,
        "file_errors": file_errors,
        "recent": recent,
        "max_mb": importing.MAX_UPLOAD_BYTES >> 20,
    }
    return render(request, "customers/import.html", context, status=status)


def _declared_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


@require_http_methods(["GET"])
def import_status(request, pk: int):
    """One import's progress (live) and, when done, its report with the rejected rows.

    Only its creator and the CCO see it: other importers get 404, other roles 403. htmx
    requests (the page refetching after a missed event) get the progress partial alone.
    """
    if not roles.can_import_customers(request.user):
        raise PermissionDenied("Your role may not import customers.")
    job = get_object_or_404(importing.visible_imports(request.user), pk=pk)
    context = importing.progress_context(job, viewer=request.user, page=request.GET.get("page"))
    if request.htmx:
        return render(request, "customers/import_status.html#progress", context)
    if not context["is_finished"]:
        context["realtime_groups"] = [realtime.group_name("import", job.pk)]
    return render(request, "customers/import_status.html", context)


urlpatterns = [
    path("import/", import_customers, name="import"),
    path("import/<int:pk>/", import_status, name="import_status"),
]
