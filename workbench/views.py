"""Pages of the composition root: the home redirect, the no-role page, navigation, /api/me/."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.shortcuts import redirect, render
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.response import Response

from workbench import roles


def home(request):
    """Send each role to its own home; a user with no role to the page that says so."""
    url_name = roles.home_url_name(request.user)
    return redirect(url_name) if url_name else no_role(request)


@login_not_required
def no_role(request):
    """A signed-in user in no group: say what happened and who can fix it (403)."""
    if not request.user.is_authenticated:
        return redirect("login")
    if roles.has_role(request.user):
        return redirect("home")
    return render(request, "workbench/no_role.html", status=403)


def navigation(request) -> dict:
    """Context processor: the navigation entries this user's role may use, and nothing else."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "user_roles": []}
    items = []
    if roles.can_read_cases(user):
        items.append(("Case queue", reverse("cases:queue"), "cases"))
    if roles.can_read_customers(user):
        items.append(("Customers", reverse("customers:list"), "customers"))
    if roles.can_read_campaigns(user):
        items.append(("Campaigns", reverse("campaigns:list"), "campaigns"))
    if roles.can_open_console(user):
        items.append(("Console", reverse("console:home"), "console"))
    if roles.has_role(user):
        items.append(("API", reverse("api-docs"), "api"))
    section = request.resolver_match.namespace if request.resolver_match else ""
    return {
        "nav_items": [
            {"label": label, "url": url, "is_current": key == section} for label, url, key in items
        ],
        "user_roles": sorted(roles.roles_of(user)),
    }


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    name = serializers.CharField()
    timezone = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())


@extend_schema(responses=MeSerializer)
@api_view(["GET"])
def me(request):
    """Who the caller is and which roles they hold."""
    user = request.user
    data = {
        "id": user.pk,
        "username": user.get_username(),
        "name": user.get_full_name(),
        "timezone": user.timezone,
        "roles": sorted(roles.roles_of(user)),
    }
    return Response(MeSerializer(data).data)
