"""The notifications page: what I was told, newest first, opened one by one or marked all read."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import include, path, reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from workbench import notifications, roles
from workbench.models import Notification

PAGE = "workbench/notifications.html"
PAGE_SIZE = 50


class PageForm(forms.Form):
    before = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)


@require_GET
def notification_list(request):
    """My notifications, newest first, 50 at a time (keyset on id: newer rows have larger ids)."""
    form = PageForm(request.GET)
    if not form.is_valid():
        return HttpResponse("That is not a position in your notifications.", status=400)
    before = form.cleaned_data["before"]
    rows = Notification.objects.filter(recipient=request.user).select_related("actor")
    if before:
        rows = rows.filter(pk__lt=before)
    rows = list(rows.order_by("-id")[: PAGE_SIZE + 1])
    older_url = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        older_url = f"{reverse('notifications:list')}?before={rows[-1].pk}"
    context = {
        "rows": rows,
        "older_url": older_url,
        "is_later_page": before is not None,
        "has_unread": notifications.unread_count(request.user, cap=0) > 0,
        "realtime_groups": [notifications.user_group(request.user.pk)]
        if roles.can_be_mentioned(request.user)
        else [],
    }
    return render(request, PAGE, context)


@require_GET
def notification_badge(request):
    """The nav badge alone, for the page's refetch after a reconnect (`wb:resync`)."""
    response = HttpResponse(notifications.render_badge(request.user))
    patch_vary_headers(response, ("HX-Request",))
    return response


@require_GET
def notification_open(request, pk: int):
    """Follow a notification's link, marking it read on the way (only my own: 404 otherwise)."""
    notification = get_object_or_404(Notification, pk=pk, recipient=request.user)
    notifications.mark_read(notification=notification, user=request.user)
    target = notification.url
    if not url_has_allowed_host_and_scheme(target, allowed_hosts=None):
        target = reverse("notifications:list")
    return redirect(target)


@require_POST
def notification_read_all(request):
    count = notifications.mark_all_read(user=request.user)
    if count:
        noun = "notification" if count == 1 else "notifications"
        messages.success(request, f"Marked {count} {noun} read.")
    else:
        messages.info(request, "Nothing was unread.")
    return redirect("notifications:list")


urlpatterns = [
    path("", notification_list, name="list"),
    path("badge/", notification_badge, name="badge"),
    path("read-all/", notification_read_all, name="read_all"),
    path("<int:pk>/", notification_open, name="open"),
]
urls = include((urlpatterns, "notifications"))
