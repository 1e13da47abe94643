"""Panels other apps add to the customer card (case view) and the customer page, via a registry.

customers imports no app above it, so an app that has something to say about a customer
registers a renderer from its AppConfig.ready(): `register_panel("marketing", render)`, where
`render(user, customer_id)` returns HTML (already escaped, rendered for that user's role; "" to
show nothing). Pages render `panels_for(user, customer_id)` in registration order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.utils.safestring import SafeString, mark_safe

_panels: dict[str, Callable[[object, int], str]] = {}


@dataclass(frozen=True)
class Panel:
    name: str
    html: SafeString


def register_panel(name: str, render: Callable[[object, int], str]) -> None:
    """Declare a panel: render(user, customer_id) → HTML from a template (autoescaped)."""
    _panels[name] = render


def panels_for(user, customer_id: int) -> list[Panel]:
    """The registered panels with something to show to this user, in registration order."""
    panels = []
    for name, render in _panels.items():
        html = render(user, customer_id)
        if html:
            # The renderer returns a rendered template (autoescaped), never raw user text.
            panels.append(Panel(name=name, html=mark_safe(html)))  # noqa: S308
    return panels
