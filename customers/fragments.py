"""Live fragments of the customer page, rendered for one viewer (same partials as the views)."""

from __future__ import annotations

from django.template.loader import render_to_string

from customers.models import Direction, Interaction
from customers.timeline import INTERACTION_EVENT
from workbench import realtime, roles

# An outbound message's delivery status moved (queued → sending → sent, delivered, read, failed):
# the delivery paths publish it to the customer's group (workbench/connectors/receipts.py).
INTERACTION_STATUS_EVENT = "customer.interaction_status"


def entry_context(viewer, interaction: Interaction) -> dict:
    return {
        "entry": interaction,
        "viewer": viewer,
        "can_read_private": roles.can_read_private_notes(viewer),
    }


def render_new_interaction(viewer, *, interaction_id: int) -> str:
    """A new timeline entry, prepended to the timeline (hx-swap-oob afterbegin)."""
    interaction = Interaction.objects.select_related("actor").filter(pk=interaction_id).first()
    if interaction is None:
        return ""
    return render_to_string(
        "customers/customer_detail.html#timeline-new-entry", entry_context(viewer, interaction)
    )


def render_interaction_status(viewer, *, interaction_id: int, customer_id: int, **_data) -> str:
    """An outbound entry's delivery status, swapped by its id (`delivery-<pk>`) wherever the
    customer's timeline shows the entry: the customer page and the case page's timeline share
    the partial and the id, so one event on the customer's group serves both.

    Empty where the timeline shows no live status for the entry (the entry is gone, is not this
    customer's, is not outbound, or is private and the role may not read private notes), so a
    marketer never learns more of a private entry than "Private note by service". It depends on
    the viewer's roles alone, so the hub renders it once per role, in one query.
    """
    if not roles.can_read_customers(viewer):
        return ""
    entry = (
        Interaction.objects.filter(pk=interaction_id, customer_id=customer_id)
        .only("id", "direction", "status", "data", "is_private")
        .first()
    )
    if entry is None or entry.direction != Direction.OUTBOUND or not entry.status:
        return ""
    if entry.is_private and not roles.can_read_private_notes(viewer):
        return ""
    return render_to_string(
        "customers/_delivery_status.html#delivery-status", {"entry": entry, "is_live": True}
    )


realtime.register_fragment(INTERACTION_EVENT, render_new_interaction, per_user=True)
realtime.register_fragment(INTERACTION_STATUS_EVENT, render_interaction_status)
