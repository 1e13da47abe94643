"""A supervisor's customer journey in the browser: search, open, read, filter, page, merge."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from customers.identity import resolve_customer
from customers.models import Customer, Direction, Kind
from customers.timeline import record_interaction

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def customer_with_history(name: str, email: str, entries: int) -> Customer:
    customer = resolve_customer(channel="email", handle=email, display_name=name).customer
    start = timezone.now() - timedelta(days=entries)
    for n in range(entries):
        record_interaction(
            customer=customer,
            channel="email" if n % 2 else "chat",
            kind=Kind.MESSAGE,
            direction=Direction.INBOUND,
            title=f"Message {n}",
            body_text=f"Body of message {n}",
            occurred_at=start + timedelta(days=n),
        )
    return customer


def test_supervisor_searches_opens_filters_pages_and_merges_a_customer(page, sign_in, make_user):
    make_user("supervisor", username="sam")
    grace = customer_with_history("Grace Hopper", "grace@example.com", 60)
    duplicate = customer_with_history("G. Hopper", "g.hopper@example.org", 2)
    sign_in(page, "sam")

    # Search finds her by the start of her email, live as the supervisor types.
    page.get_by_role("link", name="Customers").click()
    expect(page).to_have_url(re.compile(r"/customers/$"))
    # Type only once htmx has wired the box (its scripts are deferred: typing earlier is lost).
    expect(page.locator("html")).to_have_attribute("data-wb-htmx", "ready")
    page.get_by_label("Find a customer by name, email, phone or @handle").fill("grace@")
    expect(page.locator("#results").get_by_role("link", name="Grace Hopper")).to_be_visible()
    expect(page.locator("#results").get_by_role("link", name="G. Hopper")).to_have_count(0)
    page.locator("#results").get_by_role("link", name="Grace Hopper").click()

    # The timeline shows the newest 50 first; "Load older" brings the rest.
    expect(page.get_by_role("heading", level=1)).to_contain_text("Grace Hopper")
    entries = page.locator("#timeline-entries > li.entry")
    expect(entries).to_have_count(50)
    expect(entries.first).to_contain_text("Message 59")
    page.get_by_role("button", name="Load older").click()
    expect(entries).to_have_count(60)
    expect(entries.last).to_contain_text("Message 0")
    expect(page.locator("#timeline")).to_contain_text("Start of the timeline")

    # Filtering by channel keeps only live-chat entries (the even-numbered ones).
    page.locator("fieldset.chips").first.get_by_label("Live chat").check()
    expect(entries).to_have_count(30)
    expect(entries.first).to_contain_text("Message 58")

    # Merge the duplicate in, after a preview of what moves.
    page.get_by_role("link", name="Merge…").click()
    page.get_by_label("Name, handle, email, phone or customer number").fill("Hopper")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="Preview merge").click()
    preview = page.locator("#merge-preview")
    expect(preview.locator('tr[data-label="customers.interaction"]')).to_contain_text("2")
    expect(preview.locator('tr[data-label="customers.identity"]')).to_contain_text("1")
    page.get_by_label("I understand this cannot be undone").check()
    page.get_by_role("button", name=f"Merge customer {duplicate.pk} into {grace.pk}").click()

    expect(page).to_have_url(f"{page.url.split('/customers/')[0]}/customers/{grace.pk}/")
    expect(page.locator("#timeline-entries > li.entry").first).to_contain_text(
        f"Merged Customer {duplicate.pk}"
    )
    duplicate.refresh_from_db()
    assert duplicate.merged_into_id == grace.pk
    assert grace.interactions.filter(kind=Kind.MESSAGE).count() == 62
