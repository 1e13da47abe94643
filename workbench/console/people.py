"""People: the CCO invites users (a one-time set-password link), assigns roles (groups) and queues,
and deactivates them. Nobody changes their own role or deactivates themselves; every change is
audited."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.models import Group
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from rules.contrib.views import permission_required

from cases.models import Queue
from workbench import roles
from workbench.audit import record_audit
from workbench.models import User

ROLE_CHOICES = [(r, r.capitalize() if r != roles.CCO else "CCO") for r in roles.ROLES]


def _refuse_unless_cco(actor) -> None:
    if not roles.is_cco(actor):
        raise PermissionDenied("Only the CCO manages people.")


def set_password_path(user: User) -> str:
    """The one-time link to set a password: Django's reset token, void once the password is set
    (the token hashes the password) or after PASSWORD_RESET_TIMEOUT."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return reverse("password_reset_confirm", args=[uid, token])


def _role_names(user: User) -> list[str]:
    return sorted(set(user.groups.values_list("name", flat=True)) & set(roles.ROLES))


def invite_user(
    *, actor, username: str, email: str, first_name: str, last_name: str,
    role_names: list[str], queues: list[Queue],
) -> User:  # fmt: skip
    """Create a user with no usable password, the roles and queues given; audited."""
    _refuse_unless_cco(actor)
    with transaction.atomic():
        user = User(username=username, email=email, first_name=first_name, last_name=last_name)
        user.set_unusable_password()
        user.save()
        user.groups.set(Group.objects.filter(name__in=role_names))
        user.queues.set(queues)
        record_audit(
            actor=actor,
            action="user.invited",
            target=user,
            details={"roles": sorted(role_names), "queues": sorted(q.name for q in queues)},
        )
    return user


def change_access(*, actor, user: User, role_names: list[str], queues: list[Queue]) -> dict:
    """Set a user's roles and queues; refuses to change one's own roles. Audited with the
    before and after; returns what changed."""
    _refuse_unless_cco(actor)
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        before_roles = _role_names(user)
        before_queues = sorted(user.queues.values_list("name", flat=True))
        after_roles = sorted(set(role_names))
        after_queues = sorted(q.name for q in queues)
        if user.pk == actor.pk and before_roles != after_roles:
            raise PermissionDenied("You cannot change your own role.")
        other_groups = user.groups.exclude(name__in=roles.ROLES)
        user.groups.set([*other_groups, *Group.objects.filter(name__in=after_roles)])
        user.queues.set(queues)
        changes = {}
        if before_roles != after_roles:
            changes["roles"] = {"before": before_roles, "after": after_roles}
        if before_queues != after_queues:
            changes["queues"] = {"before": before_queues, "after": after_queues}
        if changes:
            record_audit(actor=actor, action="user.access_changed", target=user, details=changes)
    return changes


def deactivate_user(*, actor, user: User) -> User:
    """Deactivate a user (they can no longer sign in; their history stays). Not oneself."""
    _refuse_unless_cco(actor)
    if user.pk == actor.pk:
        raise PermissionDenied("You cannot deactivate yourself.")
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        if not user.is_active:
            return user
        user.is_active = False
        user.save(update_fields=["is_active"])
        record_audit(actor=actor, action="user.deactivated", target=user)
    return user


class InviteForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[\w.@+-]+\Z", max_length=150, help_text="Letters, digits and @.+-_ only."
    )
    email = forms.EmailField()
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    roles = forms.MultipleChoiceField(
        choices=ROLE_CHOICES, widget=forms.CheckboxSelectMultiple, required=True
    )
    queues = forms.ModelMultipleChoiceField(
        queryset=Queue.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    def clean_username(self):
        username = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise ValidationError("Someone already has this username.")
        return username


class AccessForm(forms.Form):
    roles = forms.MultipleChoiceField(
        choices=ROLE_CHOICES, widget=forms.CheckboxSelectMultiple, required=False
    )
    queues = forms.ModelMultipleChoiceField(
        queryset=Queue.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )


def _render(request, template: str, context: dict, status: int = 200):
    context["console_section"] = "people"
    return render(request, template, context, status=status)


@permission_required("workbench.open_console", raise_exception=True)
def people_list(request):
    users = User.objects.prefetch_related("groups", "queues").order_by("-is_active", "username")
    rows = [
        {
            "user": u,
            "roles": sorted({g.name for g in u.groups.all()} & set(roles.ROLES)),
            "queues": sorted(q.name for q in u.queues.all()),
        }
        for u in users
    ]
    return _render(request, "workbench/console_people.html", {"rows": rows})


@permission_required("workbench.open_console", raise_exception=True)
def invite(request):
    form = InviteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user = invite_user(
            actor=request.user,
            username=data["username"],
            email=data["email"],
            first_name=data["first_name"],
            last_name=data["last_name"],
            role_names=data["roles"],
            queues=list(data["queues"]),
        )
        link = request.build_absolute_uri(set_password_path(user))
        send_mail(
            subject="Your Workbench account",
            message=(
                f"{request.user.get_full_name() or request.user.get_username()} invited you to "
                f"Workbench as {user.get_username()}.\n\nSet your password here (the link "
                f"works once):\n{link}\n"
            ),
            from_email=None,
            recipient_list=[user.email],
        )
        return _render(request, "workbench/console_invited.html", {"invited": user, "link": link})
    status = 400 if request.method == "POST" else 200
    return _render(request, "workbench/console_invite.html", {"form": form}, status=status)


@permission_required("workbench.open_console", raise_exception=True)
def edit_person(request, pk: int):
    person = get_object_or_404(User, pk=pk)
    is_self = person.pk == request.user.pk
    initial = {"roles": _role_names(person), "queues": list(person.queues.all())}
    form = AccessForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            changes = change_access(
                actor=request.user,
                user=person,
                role_names=form.cleaned_data["roles"],
                queues=list(form.cleaned_data["queues"]),
            )
        except PermissionDenied as refusal:
            form.add_error("roles", str(refusal))
            return _render(
                request,
                "workbench/console_person.html",
                {"person": person, "form": form, "is_self": is_self},
                status=403,
            )
        messages.success(
            request, f"Saved {person.get_username()}." if changes else "Nothing changed."
        )
        return redirect("console:people")
    status = 400 if request.method == "POST" else 200
    return _render(
        request,
        "workbench/console_person.html",
        {"person": person, "form": form, "is_self": is_self},
        status=status,
    )


@permission_required("workbench.open_console", raise_exception=True)
def deactivate(request, pk: int):
    """GET asks for confirmation; POST deactivates."""
    person = get_object_or_404(User, pk=pk)
    if person.pk == request.user.pk:
        raise PermissionDenied("You cannot deactivate yourself.")
    if request.method == "POST":
        deactivate_user(actor=request.user, user=person)
        messages.success(request, f"{person.get_username()} can no longer sign in.")
        return redirect("console:people")
    return _render(request, "workbench/console_deactivate.html", {"person": person})
