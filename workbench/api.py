"""The REST API's shared parts: role predicates as DRF permissions, and keyset pagination.

Settings name these classes, so this module imports no DRF view (that would be a cycle).
"""

from __future__ import annotations

from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission

from workbench import roles


def predicate_permission(predicate, *, name: str | None = None) -> type[BasePermission]:
    """A DRF permission class that grants exactly what a `rules` predicate grants.

    Object checks pass the object as the predicate's second argument.
    """

    class PredicatePermission(BasePermission):
        message = "Your role does not allow this."

        def has_permission(self, request, view) -> bool:
            return bool(request.user and request.user.is_authenticated and predicate(request.user))

        def has_object_permission(self, request, view, obj) -> bool:
            return bool(predicate.test(request.user, obj))

    PredicatePermission.__name__ = name or f"Can{predicate.name.title().replace('_', '')}"
    return PredicatePermission


HasRole = predicate_permission(roles.has_role, name="HasRole")
CanReadCases = predicate_permission(roles.can_read_cases, name="CanReadCases")
CanWorkCases = predicate_permission(roles.can_work_cases, name="CanWorkCases")
CanReadCampaigns = predicate_permission(roles.can_read_campaigns, name="CanReadCampaigns")
CanEditCampaigns = predicate_permission(roles.can_edit_campaigns, name="CanEditCampaigns")
CanOpenConsole = predicate_permission(roles.can_open_console, name="CanOpenConsole")


class KeysetPagination(CursorPagination):
    """Pages by position, never OFFSET: newest first, stable while rows are added."""

    ordering = "-pk"
    page_size_query_param = "page_size"
    max_page_size = 200
