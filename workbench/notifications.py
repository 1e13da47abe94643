"""Notifications: telling a person something happened (an @mention), and the nav's unread count.

A low part of workbench, like realtime and audit: it imports no app. An app tells people with
`notify`, giving the text and a link it built; each recipient's badge is updated live through
their own realtime group `user.<id>` (only they may join it) after the transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from workbench import realtime, roles
from workbench.models import Notification

NOTIFICATIONS_CHANGED = "notifications.changed"
BADGE = "workbench/notifications.html#nav-notifications"
# The badge stops counting here ("99+"): the number is a nudge, not a report.
BADGE_CAP = 99


def user_group(user_id: int) -> str:
    return realtime.group_name("user", user_id)


def unread_count(user, *, cap: int = BADGE_CAP) -> int:
    """How many notifications the user has not read, counted up to `cap` + 1 (one query)."""
    unread = Notification.objects.filter(recipient=user, read_at__isnull=True)
    return unread.values("id")[: cap + 1].count()


def notify(*, recipients: Iterable, verb: str, url: str, key: str = "", actor=None) -> list[int]:
    """Tell each recipient `verb` (plain text, shown escaped) with a link to `url` (a path on this
    site). With a `key`, a recipient already told about it is not told again, so a retried
    caller stores nothing twice. Returns the ids of the users newly notified; their badges are
    updated after commit."""
    if not url.startswith("/") or url.startswith("//"):
        raise ValueError("a notification links to a path on this site")
    ids = sorted({user.pk for user in recipients})
    if not ids:
        return []
    with transaction.atomic():
        told = set()
        if key:
            told = set(
                Notification.objects.filter(key=key, recipient_id__in=ids).values_list(
                    "recipient_id", flat=True
                )
            )
        fresh = [pk for pk in ids if pk not in told]
        Notification.objects.bulk_create(
            [
                Notification(recipient_id=pk, actor=actor, verb=verb[:300], url=url, key=key)
                for pk in fresh
            ],
            # A concurrent retry of the same caller may have stored it in between.
            ignore_conflicts=bool(key),
        )
        for pk in fresh:
            realtime.publish(user_group(pk), NOTIFICATIONS_CHANGED)
    return fresh


def mark_read(*, notification: Notification, user) -> None:
    """Mark one of the user's notifications read (a no-op when it already is)."""
    if notification.recipient_id != user.pk:
        raise PermissionDenied("a notification is read by its recipient only")
    with transaction.atomic():
        changed = Notification.objects.filter(pk=notification.pk, read_at__isnull=True).update(
            read_at=timezone.now()
        )
        if changed:
            realtime.publish(user_group(user.pk), NOTIFICATIONS_CHANGED)


def mark_all_read(*, user) -> int:
    """Mark every unread notification of the user read; returns how many were unread."""
    with transaction.atomic():
        changed = Notification.objects.filter(recipient=user, read_at__isnull=True).update(
            read_at=timezone.now()
        )
        if changed:
            realtime.publish(user_group(user.pk), NOTIFICATIONS_CHANGED)
    return changed


def badge_context(user, *, is_live: bool = False, is_current: bool = False) -> dict:
    count = unread_count(user)
    return {
        "unread_count": count,
        "unread_label": f"{BADGE_CAP}+" if count > BADGE_CAP else str(count),
        "notifications_url": reverse("notifications:list"),
        "badge_url": reverse("notifications:badge"),
        "is_live": is_live,
        "is_current": is_current,
    }


def render_badge(user, *, is_live: bool = False, is_current: bool = False, **_data) -> str:
    """The nav's "Notifications" link with its unread count: the same partial for the page, the
    badge's refetch and the live push. Empty for a role that is never notified."""
    if not roles.can_be_mentioned(user):
        return ""
    return render_to_string(BADGE, badge_context(user, is_live=is_live, is_current=is_current))


realtime.register_fragment(
    NOTIFICATIONS_CHANGED, lambda user, **data: render_badge(user, is_live=True), per_user=True
)
