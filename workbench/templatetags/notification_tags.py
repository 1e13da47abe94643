"""Template tags for every page: the nav's notifications badge and the user's own live group."""

from __future__ import annotations

from django import template

from workbench import notifications, roles

register = template.Library()


@register.simple_tag(takes_context=True)
def notification_badge(context) -> str:
    """The "Notifications" nav link with the unread count (one COUNT query), or "" for a role
    that is never notified: `{% notification_badge as badge %}`."""
    user = context.get("user")
    if user is None or not user.is_authenticated:
        return ""
    match = getattr(context.get("request"), "resolver_match", None)
    is_current = match is not None and match.namespace == "notifications"
    return notifications.render_badge(user, is_current=is_current)


@register.filter
def with_own_group(groups, user) -> list[str]:
    """A live page's groups plus the viewer's own `user.<id>`, so the badge updates live there
    too. A page with no live groups stays without a socket."""
    groups = list(groups or [])
    if not groups or not getattr(user, "is_authenticated", False):
        return groups
    if not roles.can_be_mentioned(user):
        return groups
    own = notifications.user_group(user.pk)
    return groups if own in groups else [*groups, own]
