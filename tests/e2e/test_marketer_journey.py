"""A marketer's journey in the browser, with an agent and the CCO alongside.

Mia builds a segment (the live count follows her conditions), writes a campaign with a preview,
runs preflight (one customer is held by an open refund promise) and schedules it. The campaign
starts (beat's work, run here). Ada, an agent, opens Grace's case, sees the campaign coming, and
records a commitment: Grace's touch turns into a hold, on Ada's case view and live on Mia's
campaign page. Mia asks the CCO for an override of the commitment hold; Cleo approves it on her
console, and Mia's page shows the approval without a reload.
"""

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import time, timedelta

import pytest
from django.db import connections
from django.utils import timezone
from playwright.sync_api import expect

from campaigns import dispatch
from campaigns.models import Campaign, ContactPolicy, Override, Touch
from cases.commitments import record_commitment
from cases.lifecycle import open_case
from customers.identity import resolve_customer
from customers.models import Channel, Consent, Interaction
from tests.cases.factories import QueueFactory, SlaPolicyFactory
from tests.e2e.conftest import wait_until_wired

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

SHOTS = "/tmp/campaign_{}.png"  # noqa: S108 (where the screenshots are looked at)


def in_thread(function, /, **kwargs):
    """Run a service that publishes from a thread of its own (Playwright's loop runs here)."""

    def run():
        try:
            return function(**kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=30)


def _world(*, agent):
    """Four customers: three paying ones reachable by email (Grace with a case in Ada's queue,
    Harry with an open refund promise), one lead. No quiet hours, so any time of day works."""
    latest = ContactPolicy.objects.order_by("-version").first()
    ContactPolicy.objects.create(
        version=latest.version + 1, quiet_hours_start=time(0), quiet_hours_end=time(0)
    )
    queue = QueueFactory(name="Support", members=[agent])
    SlaPolicyFactory(queue=queue)
    people = {}
    for name, handle, stage in [
        ("Grace Hopper", "grace@example.com", "customer"),
        ("Harry Potts", "harry@example.com", "customer"),
        ("Sam Ortiz", "sam@example.com", "customer"),
        ("Lena Lead", "lena@example.com", "lead"),
    ]:
        customer = resolve_customer(
            channel=Channel.EMAIL, handle=handle, display_name=name
        ).customer
        customer.lifecycle_stage, customer.timezone = stage, "UTC"
        customer.save(update_fields=["lifecycle_stage", "timezone"])
        Consent.objects.create(
            customer=customer, purpose="marketing_email", is_granted=True, source="web",
            recorded_at=timezone.now() - timedelta(days=30),
        )  # fmt: skip
        people[name] = customer
    grace_case = open_case(
        customer=people["Grace Hopper"], queue=queue, subject="Router drops the line",
        channel=Channel.EMAIL,
    )  # fmt: skip
    harry_case = open_case(
        customer=people["Harry Potts"], queue=queue, subject="Refund please", channel=Channel.EMAIL
    )
    record_commitment(
        case=harry_case, kind="refund", text="Refund of £20", actor=agent,
        due_at=timezone.now() + timedelta(days=3),
    )  # fmt: skip
    return grace_case


@pytest.fixture
def cco_user(make_user):
    return make_user("cco", username="cleo", first_name="Cleo", last_name="Park")


def test_marketer_builds_previews_preflights_schedules_and_a_commitment_holds_live(
    new_page, sign_in, live_server_url, marketer, agent, cco_user
):
    grace_case = in_thread(_world, agent=agent)
    mia = new_page()
    mia.on("dialog", lambda dialog: dialog.accept())
    sign_in(mia, "mia")
    expect(mia).to_have_url(f"{live_server_url}/campaigns/")
    expect(mia.locator("#campaign-list")).to_contain_text("No campaigns yet")

    # A segment: paying customers. The count follows the conditions as they change.
    mia.get_by_role("link", name="building a segment").click()
    wait_until_wired(mia, re.compile(r"/campaigns/segments/new/"))
    mia.get_by_label("Name", exact=True).fill("Paying customers")
    mia.get_by_label("Condition 1: what").select_option("lifecycle_stage")
    expect(mia.locator(".condition-row[data-row='0']")).to_have_attribute(
        "data-field", "lifecycle_stage"
    )
    mia.get_by_label("Customer", exact=True).check()
    expect(mia.locator("#segment-count [data-count]")).to_have_attribute("data-count", "3")
    mia.get_by_label("Loyal").check()
    mia.get_by_role("button", name="Add a condition").click()
    mia.get_by_label("Condition 2: what").select_option("consent")
    expect(mia.locator(".condition-row[data-row='1']")).to_have_attribute("data-field", "consent")
    expect(mia.get_by_label("Condition 2: value")).to_have_value("marketing_email")
    expect(mia.locator("#segment-count [data-count]")).to_have_attribute("data-count", "3")
    mia.screenshot(path=SHOTS.format("segment"), full_page=True)
    mia.get_by_role("button", name="Save segment").click()
    expect(mia.locator(".messages")).to_contain_text("Segment “Paying customers” saved.")

    # A campaign to it, previewed as its first customer would get it.
    mia.get_by_role("link", name="Write a campaign to this segment").click()
    wait_until_wired(mia, re.compile(r"/campaigns/new/"))
    mia.get_by_label("Name", exact=True).fill("Spring upgrade")
    mia.get_by_label("Subject").fill("An offer for you, {{ customer.first_name }}")
    mia.get_by_label("Content").fill("Dear {{ customer.first_name }},\nour new router is here.")
    expect(mia.locator("#preview")).to_contain_text("Dear Grace,")
    mia.get_by_label("When to send").select_option("now")
    # Held touches wait for their reason to clear until the campaign ends, a week from now.
    ends_at = timezone.now() + timedelta(days=7)  # Mia's times are in UTC
    mia.get_by_label("Ends at").fill(ends_at.strftime("%Y-%m-%dT%H:%M"))
    mia.screenshot(path=SHOTS.format("editor"), full_page=True)
    mia.get_by_role("button", name="Save draft").click()
    wait_until_wired(mia, re.compile(r"/campaigns/[0-9]+/$"))
    expect(mia.locator("h1")).to_contain_text("Spring upgrade")
    campaign = Campaign.objects.get(name="Spring upgrade")

    # Preflight: two will be sent, Harry is held by his refund promise.
    mia.get_by_role("button", name="Run preflight").click()
    table = mia.locator("#preflight-table")
    expect(table.locator("tr[data-outcome=send] td.count")).to_have_text("2")
    expect(table.locator("tr[data-outcome=open_commitment] td.count")).to_have_text("1")
    expect(mia.locator("#preflight")).to_contain_text("contact policy v2")
    mia.screenshot(path=SHOTS.format("preflight"), full_page=True)

    # Schedule (confirmed in a dialog), then the campaign starts as beat would start it.
    mia.get_by_role("button", name="Schedule").click()
    expect(mia.locator("h1 .pill")).to_have_text("Scheduled")
    expect(mia.locator("html")).to_have_attribute("data-wb-socket", "open")
    assert in_thread(dispatch.start_campaign, campaign_id=campaign.pk, now=timezone.now())
    counts = mia.locator("[data-testid=campaign-counts]")
    expect(counts.locator("[data-field=held]")).to_have_text("1")
    expect(counts.locator("[data-field=remaining]")).to_have_text("2")

    # Ada opens Grace's case: the campaign is coming. She records a promise…
    ada = new_page()
    sign_in(ada, "ada")
    ada.goto(f"/cases/{grace_case.pk}/")
    panel = ada.locator("#marketing-panel")
    expect(panel).to_contain_text("Spring upgrade")
    expect(panel.locator("li[data-status=pending]")).to_contain_text("Upcoming")
    ada.get_by_label("Kind").select_option("callback")
    ada.get_by_label("What was promised").fill("An engineer calls back on Monday")
    ada.get_by_label("Due").fill(
        (timezone.localtime() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    )
    ada.get_by_role("button", name="Record commitment").click()
    # … and Grace's touch is held: on her case, and live on Mia's campaign page.
    expect(panel.locator("li[data-status=held]")).to_contain_text("Open service commitment")
    ada.screenshot(path=SHOTS.format("agent_case"), full_page=True)
    expect(counts.locator("[data-field=held]")).to_have_text("2")
    expect(counts.locator("[data-field=remaining]")).to_have_text("1")

    # The dispatcher sends what is due: Sam only; Grace and Harry stay held.
    sent = in_thread(dispatch.dispatch_chunk, campaign_id=campaign.pk)
    assert sent["sent"] == 1
    # The chunk left only held touches (the campaign runs on until its end): the bar says so live.
    expect(counts.locator("[data-field=sent]")).to_have_text("1")
    hold = mia.locator("#hold-open_commitment")
    expect(hold.locator(".count")).to_have_text("2")

    # Mia asks the CCO to override the commitment hold (a justification is required).
    hold.get_by_text("Ask the CCO for an override").click()
    hold.get_by_role("button", name="Ask the CCO").click()
    expect(hold.locator(".field-error")).to_contain_text("Explain to the CCO")
    hold.get_by_label("Why these customers should get it anyway").fill(
        "Both asked for the new router on the phone."
    )
    hold.get_by_role("button", name="Ask the CCO").click()
    expect(mia.locator("#hold-open_commitment")).to_contain_text("Override: Waiting for the CCO")
    expect(mia.locator("tr[data-override] td").nth(1)).to_have_text("Waiting for the CCO")
    mia.screenshot(path=SHOTS.format("live"), full_page=True)

    # Cleo approves on her console; Mia's page shows it live.
    cleo = new_page()
    sign_in(cleo, "cleo")
    cleo.goto("/console/overrides/")
    override = Override.objects.get()
    item = cleo.locator(f"#override-{override.pk}")
    expect(item.locator("[data-testid=affected-count]")).to_have_text("2")
    item.get_by_label("Your reason (required)").fill("Goodwill: they asked for it.")
    item.get_by_role("button", name="Approve").click()
    expect(mia.locator("#overrides")).to_be_visible()
    expect(mia.locator("tr[data-override] td").nth(1)).to_have_text("Approved")
    expect(mia.locator("#campaign-holds")).to_contain_text("No touch is held.")
    expect(counts.locator("[data-field=remaining]")).to_have_text("2")
    mia.screenshot(path=SHOTS.format("approved"), full_page=True)

    mia.goto("/campaigns/")
    expect(mia.locator(f"#campaign-row-{campaign.pk}")).to_contain_text("Sending")
    mia.screenshot(path=SHOTS.format("list"), full_page=True)

    override.refresh_from_db()
    assert (override.status, override.decided_by_id) == ("approved", cco_user.pk)
    assert Interaction.objects.filter(kind="campaign_touch", direction="internal").count() == 2
    assert Touch.objects.filter(campaign=campaign, status="pending").count() == 2
