"""Canned responses' pages: the list, the form (with a preview), deactivation, and the composer's
"Insert" (the macro filled for one case, as plain text).

Doors like cases/views.py: who may look or act is checked here and again in cases.macros.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from rules.contrib.views import permission_required

from cases import macros
from cases.models import Macro
from cases.views import _get_workable_case
from workbench import roles

LIST = "cases/macros.html"
FORM = "cases/macros_form.html"
DEACTIVATE = "cases/macros_deactivate.html"
PREVIEW = "preview"  # the form's first button, so Enter in the name field never saves


class MacroForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=macros.NAME_MAX_CHARS,
        help_text="What agents pick in the composer, e.g. “Refund confirmed”.",
    )
    body = forms.CharField(
        label="Text",
        max_length=macros.BODY_MAX_CHARS,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text=f"Plain text. Placeholders filled from the case: {macros.PLACEHOLDER_HELP}.",
    )

    def clean_body(self) -> str:
        try:
            return macros.check_body(self.cleaned_data["body"])
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["body"]) from None


def _add_errors(form: forms.Form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


@permission_required("cases.view_macros", raise_exception=True)
@require_GET
def macro_list(request):
    """Every macro by name: active ones for everyone who reads cases; managers also see the
    deactivated ones, and the buttons to change them."""
    can_manage = bool(roles.can_manage_macros(request.user))
    rows = list(macros.all_macros() if can_manage else macros.active_macros())
    context = {
        "active": [macro for macro in rows if macro.is_active],
        "inactive": [macro for macro in rows if not macro.is_active],
        "can_manage": can_manage,
        "placeholder_help": macros.PLACEHOLDER_HELP,
    }
    return render(request, LIST, context)


def _form_page(request, *, macro: Macro | None):
    """The create and edit form. "Preview" shows the text filled with example values and stores
    nothing; "Save" stores it through the service, or shows each error next to its field."""
    initial = {"name": macro.name, "body": macro.body} if macro else None
    if request.method == "GET":
        form = MacroForm(initial=initial)
        return render(request, FORM, {"form": form, "macro": macro})
    form = MacroForm(request.POST)
    is_preview = request.POST.get("action") == PREVIEW
    context = {"form": form, "macro": macro}
    if not form.is_valid():
        return render(request, FORM, context, status=400)
    data = form.cleaned_data
    if is_preview:
        context["preview"] = macros.fill(data["body"], macros.example_values(agent=request.user))
        return render(request, FORM, context)
    try:
        if macro is None:
            saved = macros.create_macro(name=data["name"], body=data["body"], actor=request.user)
        else:
            saved = macros.update_macro(
                macro=macro, name=data["name"], body=data["body"], actor=request.user
            )
    except ValidationError as exc:
        _add_errors(form, exc)
        return render(request, FORM, context, status=400)
    verb = "created" if macro is None else "saved"
    messages.success(request, f"Canned response “{saved.name}” {verb}.")
    return redirect("cases:macros")


@permission_required("cases.manage_macros", raise_exception=True)
@require_http_methods(["GET", "POST"])
def macro_create(request):
    return _form_page(request, macro=None)


@permission_required("cases.manage_macros", raise_exception=True)
@require_http_methods(["GET", "POST"])
def macro_edit(request, macro_pk: int):
    return _form_page(request, macro=get_object_or_404(Macro, pk=macro_pk))


@permission_required("cases.manage_macros", raise_exception=True)
@require_http_methods(["GET", "POST"])
def macro_deactivate(request, macro_pk: int):
    """GET asks for confirmation; POST takes the macro out of the composer's picker."""
    macro = get_object_or_404(Macro, pk=macro_pk)
    if request.method == "GET":
        return render(request, DEACTIVATE, {"macro": macro})
    macros.deactivate_macro(macro=macro, actor=request.user)
    messages.success(request, f"Canned response “{macro.name}” deactivated.")
    return redirect("cases:macros")


@permission_required("cases.manage_macros", raise_exception=True)
@require_POST
def macro_reactivate(request, macro_pk: int):
    macro = get_object_or_404(Macro, pk=macro_pk)
    macros.reactivate_macro(macro=macro, actor=request.user)
    messages.success(request, f"Canned response “{macro.name}” is back in the composer.")
    return redirect("cases:macros")


@permission_required("cases.view_queue", raise_exception=True)
@require_GET
def macro_render(request, pk: int, macro_pk: int):
    """The macro filled for this case and this agent, as plain text for the composer to insert.
    Only for someone who may work on the case (403 otherwise); a deactivated macro is 404."""
    case = _get_workable_case(request, pk)
    macro = get_object_or_404(Macro, pk=macro_pk, is_active=True)
    text = macros.render_macro(macro=macro, case=case, agent=request.user)
    response = HttpResponse(text, content_type="text/plain; charset=utf-8")
    add_never_cache_headers(response)
    return response
