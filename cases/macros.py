"""Canned responses (macros): writing them, and filling their placeholders for one case.

A macro's body is plain text with a fixed set of placeholders such as `{{ customer.first_name }}`.
They are filled by one regular-expression pass over the text, never by Django's template engine:
a macro is text a user wrote, and running it as a template would let it read anything in the
template context (`{{ settings.SECRET_KEY }}`) or load tags. A placeholder the list does not know
is refused when the macro is saved, and any `{% … %}` tag too, so a macro can never send a
customer something that looks like a template.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.db.models.functions import Lower

from cases.models import Case, Macro
from customers.models import Customer
from workbench import roles
from workbench.audit import record_audit

NAME_MAX_CHARS = 100
BODY_MAX_CHARS = 5_000
# `{{ anything }}` is a placeholder attempt; whitespace inside the braces is tolerated.
PLACEHOLDER = re.compile(r"\{\{\s*(?P<name>.*?)\s*\}\}", re.DOTALL)
TEMPLATE_TAG = re.compile(r"\{%.*?%\}", re.DOTALL)


def _first_word(text: str) -> str:
    words = text.split()
    return words[0] if words else ""


def _agent_name(agent) -> str:
    return agent.get_full_name() or agent.get_username()


# The whitelist: each placeholder and how to read it from (case, agent). Nothing else is filled.
PLACEHOLDERS: dict[str, Callable[[Case, object], str]] = {
    "customer.first_name": lambda case, agent: _first_word(case.customer.display_name),
    "customer.name": lambda case, agent: case.customer.display_name.strip(),
    "agent.first_name": lambda case, agent: (
        agent.first_name.strip() or _first_word(_agent_name(agent))
    ),
    "agent.name": lambda case, agent: _agent_name(agent),
    "case.id": lambda case, agent: str(case.pk),
    "case.subject": lambda case, agent: case.subject,
}
PLACEHOLDER_HELP = ", ".join(f"{{{{ {name} }}}}" for name in PLACEHOLDERS)


# --- reading -----------------------------------------------------------------------------------


def active_macros() -> QuerySet[Macro]:
    """The macros the composer's picker offers, by name."""
    return Macro.objects.filter(is_active=True).order_by(Lower("name"), "id")


def active_macro(raw_id: str | None) -> Macro | None:
    """The active macro a request parameter names (`?macro=12`), or None for anything else."""
    if not raw_id or not raw_id.isdigit() or len(raw_id) > 18:
        return None
    return Macro.objects.filter(pk=int(raw_id), is_active=True).first()


def all_macros() -> QuerySet[Macro]:
    """Every macro, active or not, by name: what supervisors and the CCO manage."""
    return Macro.objects.order_by(Lower("name"), "id")


def unknown_placeholders(body: str) -> list[str]:
    """The placeholders in `body` the whitelist does not know, as written, in order, once each."""
    unknown: list[str] = []
    for match in PLACEHOLDER.finditer(body):
        if match["name"] not in PLACEHOLDERS and match.group(0) not in unknown:
            unknown.append(match.group(0))
    return unknown


def check_body(body: str) -> str:
    """The body, stripped, or ValidationError (keyed `body`) saying what is wrong with it."""
    body = (body or "").strip()
    problems = []
    if not body:
        problems.append("A macro needs some text.")
    elif len(body) > BODY_MAX_CHARS:
        problems.append(f"Keep a macro under {BODY_MAX_CHARS:,} characters (it has {len(body):,}).")
    unknown = unknown_placeholders(body)
    if unknown:
        names = ", ".join(unknown)
        problems.append(f"Unknown placeholder {names}. Use only: {PLACEHOLDER_HELP}.")
    if TEMPLATE_TAG.search(body):
        problems.append("Template tags ({% … %}) are not supported: use the placeholders only.")
    if problems:
        raise ValidationError({"body": problems})
    return body


def fill(body: str, values: dict[str, str]) -> str:
    """Replace each known placeholder by its value in one pass (a value is never re-read, so a
    customer named "{{ agent.name }}" stays just that). Unknown ones are left as written."""

    def replace(match: re.Match) -> str:
        value = values.get(match["name"])
        return match.group(0) if value is None else value

    return PLACEHOLDER.sub(replace, body)


def placeholder_values(*, case: Case, agent) -> dict[str, str]:
    return {name: read(case, agent) for name, read in PLACEHOLDERS.items()}


def example_values(*, agent) -> dict[str, str]:
    """What the preview on the macro form fills in: made-up customer and case, the real agent."""
    example = Case(pk=1234, subject="Order 1234 has not arrived")
    example.customer = Customer(display_name="Ann Lee")
    return placeholder_values(case=example, agent=agent)


def render_macro(*, macro: Macro, case: Case, agent) -> str:
    """The macro's text for this case as `agent` would send it: plain text, not escaped (the
    composer escapes what it shows, the channel what it sends)."""
    return fill(macro.body, placeholder_values(case=case, agent=agent))


# --- writing -----------------------------------------------------------------------------------


def _check_manager(actor) -> None:
    if not roles.can_manage_macros(actor):
        raise PermissionDenied("Only supervisors and the CCO write canned responses.")


def _check_name(name: str, *, exclude_pk: int | None = None) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise ValidationError({"name": "A macro needs a name."})
    if len(name) > NAME_MAX_CHARS:
        raise ValidationError({"name": f"Keep the name under {NAME_MAX_CHARS} characters."})
    taken = Macro.objects.filter(name__iexact=name)
    if exclude_pk is not None:
        taken = taken.exclude(pk=exclude_pk)
    if taken.exists():
        raise ValidationError({"name": f"A macro named “{name}” already exists."})
    return name


def _clean(name: str, body: str, *, exclude_pk: int | None = None) -> tuple[str, str]:
    """Both fields checked together, so the form shows every error at once."""
    errors: dict[str, list[str]] = {}
    cleaned = {}
    for field, check in (
        ("name", lambda: _check_name(name, exclude_pk=exclude_pk)),
        ("body", lambda: check_body(body)),
    ):
        try:
            cleaned[field] = check()
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                errors.setdefault(key, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    return cleaned["name"], cleaned["body"]


def _save(macro: Macro, **kwargs) -> None:
    try:
        with transaction.atomic():
            macro.save(**kwargs)
    except IntegrityError:
        # Someone saved the same name between our check and our insert.
        raise ValidationError({"name": f"A macro named “{macro.name}” already exists."}) from None


def create_macro(*, name: str, body: str, actor) -> Macro:
    """Store a new active macro. ValidationError (by field) for an empty or taken name, an empty
    or overlong body, or an unknown placeholder; nothing is stored then."""
    _check_manager(actor)
    name, body = _clean(name, body)
    with transaction.atomic():
        macro = Macro(name=name, body=body, created_by=actor)
        _save(macro)
        record_audit(actor=actor, action="macro.created", target=macro)
    return macro


def update_macro(*, macro: Macro, name: str, body: str, actor) -> Macro:
    """Rename or rewrite a macro; the same checks as create_macro."""
    _check_manager(actor)
    name, body = _clean(name, body, exclude_pk=macro.pk)
    with transaction.atomic():
        locked = Macro.objects.select_for_update().get(pk=macro.pk)
        locked.name, locked.body = name, body
        _save(locked, update_fields=["name", "body", "updated_at"])
        record_audit(actor=actor, action="macro.updated", target=locked)
    return locked


def _set_active(*, macro: Macro, is_active: bool, actor) -> Macro:
    _check_manager(actor)
    with transaction.atomic():
        locked = Macro.objects.select_for_update().get(pk=macro.pk)
        if locked.is_active != is_active:
            locked.is_active = is_active
            locked.save(update_fields=["is_active", "updated_at"])
            action = "macro.reactivated" if is_active else "macro.deactivated"
            record_audit(actor=actor, action=action, target=locked)
    return locked


def deactivate_macro(*, macro: Macro, actor) -> Macro:
    """Take a macro out of the composer's picker (kept for the record; safe to repeat)."""
    return _set_active(macro=macro, is_active=False, actor=actor)


def reactivate_macro(*, macro: Macro, actor) -> Macro:
    """Put a deactivated macro back in the picker (safe to repeat)."""
    return _set_active(macro=macro, is_active=True, actor=actor)
