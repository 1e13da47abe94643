"""Live fragments of the workspace: the queue list, the case header, who else is on the case, and
the delivery status of replies.

Both render the same partials, from the same context functions, as the HTTP views. A viewer
who may not read the case (an agent outside its queue who still holds the group) gets nothing.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import QueryDict
from django.template.loader import render_to_string

from cases.access import can_read_case
from cases.models import Case
from cases.replies import DELIVERY_EVENT
from cases.sla import CASE_CHANGED, QUEUE_CHANGED
from cases.views import header_context, presence_html, queue_context
from customers.models import Interaction
from workbench import presence, realtime

# Who views and who types on a case: the case group hears it (workbench/presence.py).
CASE_PRESENCE = "case.presence"


def render_queue_list(viewer, **_data) -> str:
    """The viewer's default queue view (first page, no filters), swapped in only where the page
    shows that view; a filtered or later page refetches its own URL instead (see the template)."""
    try:
        context = queue_context(viewer, QueryDict(), is_live=True)
    except PermissionDenied:
        return ""
    return render_to_string("cases/queue.html#queue-list", context)


def render_case_header(viewer, *, case_id: int, **_data) -> str:
    case = (
        Case.objects.select_related("queue", "assignee", "customer")
        .defer("customer__name_search")
        .filter(pk=case_id)
        .first()
    )
    if case is None or not can_read_case(viewer, case):
        return ""
    context = header_context(viewer, case)
    context["is_live"] = True
    return render_to_string("cases/case.html#case-header", context)


def may_be_present_on_case(user, pk: int) -> bool:
    """Presence takes part only where the user may read the case, not just the case group."""
    case = Case.objects.filter(pk=pk).only("id", "queue", "assignee").first()
    return case is not None and can_read_case(user, case)


def render_case_presence(viewer, *, pk: int, **_data) -> str:
    """ "Also here: Priya (typing…)": everyone on the case but the viewer; empty when alone."""
    if not may_be_present_on_case(viewer, pk):
        return ""
    return presence_html(viewer, pk)


def render_reply_delivery(viewer, *, interaction_id: int, case_id: int, **_data) -> str:
    """A reply's delivery status (queued, sending, sent, failed) on the case's timeline."""
    case = Case.objects.filter(pk=case_id).only("id", "queue", "assignee").first()
    if case is None or not can_read_case(viewer, case):
        return ""
    entry = Interaction.objects.filter(pk=interaction_id).only("id", "status", "data").first()
    if entry is None:
        return ""
    return render_to_string("cases/case.html#delivery-status", {"entry": entry, "is_live": True})


realtime.register_fragment(QUEUE_CHANGED, render_queue_list, per_user=True)
realtime.register_fragment(CASE_CHANGED, render_case_header, per_user=True)
realtime.register_fragment(DELIVERY_EVENT, render_reply_delivery, per_user=True)
realtime.register_fragment(CASE_PRESENCE, render_case_presence, per_user=True)
presence.register_presence("case", may_be_present=may_be_present_on_case, event=CASE_PRESENCE)
