"""Counts other apps show on the customer page (open cases, open commitments) via a registry.

customers imports no app above it, so an app that knows a count registers it here from its
AppConfig.ready(): `register_summary("Open cases", lambda customer_id: …)`. The page shows
each expected label with "—" until an app fills it in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Shown from the start, so the page's layout does not change when cases arrives.
EXPECTED_LABELS = ("Open cases", "Open commitments")

_counters: dict[str, Callable[[int], int | None]] = {}


@dataclass(frozen=True)
class SummaryLine:
    label: str
    count: int | None  # None: nobody counts this yet (shown as "—")


def register_summary(label: str, count: Callable[[int], int | None]) -> None:
    """Declare a count for the customer page: count(customer_id) → int, or None if unknown."""
    _counters[label] = count


def summary_for(customer_id: int) -> list[SummaryLine]:
    """The expected labels first, then any other registered ones, each with its count."""
    labels = list(EXPECTED_LABELS) + [label for label in _counters if label not in EXPECTED_LABELS]
    lines = []
    for label in labels:
        count = _counters.get(label)
        lines.append(SummaryLine(label=label, count=count(customer_id) if count else None))
    return lines
