"""The "Marketing for this customer" panel warns service about campaigns scheduled but not
started yet (no touch exists): when the customer is in the segment, when it would go in their
own time, and, when the contact policy would hold it, the policy's own reason."""

import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from campaigns.fragments import SCHEDULED_LIMIT, render_customer_panel
from campaigns.models import CampaignStatus, Touch
from tests.campaigns.factories import CampaignFactory, SegmentFactory, reachable_customer
from tests.cases.factories import (
    CaseFactory,
    CommitmentFactory,
    CustomerFactory,
    ensure_case_events_render,
)

pytestmark = pytest.mark.django_db

# Far ahead of any clock the tests run on, so "when it starts" is this moment, not now.
STARTS = datetime(2031, 6, 10, 12, 0, tzinfo=UTC)  # 13:00 in London (BST)
FORECAST = "scheduled for 10 Jun 2031"
EMPTY = "No campaign is scheduled for this customer"


@pytest.fixture(autouse=True)
def _renderers():
    ensure_case_events_render()


@pytest.fixture
def ann():
    return reachable_customer(display_name="Ann Lee", timezone="Europe/London")


@pytest.fixture
def case(agent, ann):
    case = CaseFactory(customer=ann, assignee=agent, subject="My parcel never came")
    case.queue.members.add(agent)
    return case


def scheduled(**fields):
    fields.setdefault("scheduled_at", STARTS)
    fields.setdefault("status", CampaignStatus.SCHEDULED)
    return CampaignFactory(**fields)


def panel_text(html: str) -> str:
    """The panel's words as a person reads them: tags dropped, spaces collapsed."""
    section = re.search(r'<section id="marketing-panel".*?</section>', html, re.S)
    assert section is not None
    words = re.sub(r"<[^>]+>", " ", section.group(0)).replace("&#x27;", "'")
    return re.sub(r"\s+", " ", words).strip()


def case_panel(client_for, user, case) -> str:
    return panel_text(
        client_for(user).get(reverse("cases:detail", args=[case.pk])).content.decode()
    )


def test_the_case_view_warns_of_a_scheduled_campaign_in_the_customers_time(agent, client_for, case):
    scheduled(name="Summer offer", channel="email")

    text = case_panel(client_for, agent, case)

    assert "scheduled for 10 Jun 2031, 13:00 (Europe/London) — Summer offer (email)" in text
    assert EMPTY not in text
    assert "Will be held" not in text


def test_a_local_window_campaign_is_announced_for_the_opening_of_the_customers_window(
    agent, client_for, case
):
    scheduled(
        name="Morning news", schedule_mode="local_window", window_start_hour=9,
        window_end_hour=17, scheduled_at=datetime(2031, 6, 10, 2, 0, tzinfo=UTC),
    )  # fmt: skip

    text = case_panel(client_for, agent, case)

    assert "scheduled for 10 Jun 2031, 09:00 (Europe/London) — Morning news (email)" in text


def test_an_open_commitment_says_the_campaign_will_be_held_and_why(agent, client_for, case):
    commitment = CommitmentFactory(case=case, kind="refund", due_at=STARTS)
    scheduled(name="Upgrade now")

    text = case_panel(client_for, agent, case)

    assert "— Upgrade now (email)" in text
    assert (
        f"Will be held: Open service commitment (Refund promised on case #{case.pk}, "
        "due 10 Jun 2031)" in text
    )
    assert commitment.text not in text  # the promise's words stay on the case


def test_an_open_complaint_case_says_the_campaign_will_be_held(agent, client_for, case):
    case.priority = "high"
    case.save(update_fields=["priority"])
    scheduled(name="Upgrade now")

    text = case_panel(client_for, agent, case)

    assert (
        f"Will be held: Open complaint case (Open complaint: case #{case.pk} (high priority))"
        in text
    )


def test_a_campaign_whose_segment_leaves_the_customer_out_is_not_listed(agent, client_for, case):
    loyal_only = SegmentFactory(
        definition={"match": "all",
                    "conditions": [{"field": "lifecycle_stage", "op": "in", "value": ["loyal"]}]}
    )  # fmt: skip
    scheduled(name="Loyalty gift", segment=loyal_only)

    text = case_panel(client_for, agent, case)

    assert "Loyalty gift" not in text
    assert EMPTY in text


def test_only_campaigns_not_started_are_forecast_and_none_twice(agent, client_for, case, ann):
    scheduled(name="Draft one", status=CampaignStatus.DRAFT)
    scheduled(name="Started one", materialised_at=STARTS)  # its touches decide, not a forecast
    with_touch = scheduled(name="Touched one")
    Touch.objects.create(campaign=with_touch, customer=ann, status="pending")
    CampaignFactory(name="Sending one", status=CampaignStatus.SENDING)

    text = case_panel(client_for, agent, case)

    assert "Draft one" not in text and "Started one" not in text and "Sending one" not in text
    assert text.count("Touched one") == 1
    assert "scheduled for 10 Jun" not in text


def test_a_customer_the_campaign_could_not_reach_is_not_warned_about_it(agent, client_for):
    no_consent = CustomerFactory(display_name="Bo Chen", timezone="UTC")
    case = CaseFactory(customer=no_consent, assignee=agent)
    case.queue.members.add(agent)
    scheduled(name="Upgrade now")

    text = case_panel(client_for, agent, case)

    assert "Upgrade now" not in text
    assert EMPTY in text


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer", "cco"])
def test_every_role_sees_the_warning_and_no_case_text(make_user, client_for, ann, role):
    case = CaseFactory(customer=ann, subject="My parcel never came", priority="urgent")
    campaign = scheduled(name="Upgrade now")

    html = client_for(make_user(role)).get(reverse("customers:detail", args=[ann.pk]))
    text = panel_text(html.content.decode())

    assert "scheduled for 10 Jun 2031, 13:00 (Europe/London) — Upgrade now (email)" in text
    assert f"Will be held: Open complaint case (Open complaint: case #{case.pk} (urgent" in text
    assert "My parcel never came" not in text
    is_link = f'href="/campaigns/{campaign.pk}/"' in html.content.decode()
    assert is_link == (role in ("marketer", "cco"))


def test_the_panel_costs_a_fixed_query_plus_one_per_scheduled_campaign(
    agent, ann, django_assert_num_queries
):
    render_customer_panel(agent, ann.pk)  # warm the per-process time zone list
    with django_assert_num_queries(2):  # the touches, the scheduled campaigns
        assert "scheduled for 10 Jun" not in panel_text(render_customer_panel(agent, ann.pk))

    for _ in range(3):
        scheduled()
    # + the policy, the overrides, the savepoint pair, SET LOCAL jit, one statement each.
    with django_assert_num_queries(2 + 5 + 3):
        assert panel_text(render_customer_panel(agent, ann.pk)).count(FORECAST) == 3

    for _ in range(SCHEDULED_LIMIT):
        scheduled()
    with django_assert_num_queries(2 + 5 + SCHEDULED_LIMIT):
        text = panel_text(render_customer_panel(agent, ann.pk))
    assert text.count(FORECAST) == SCHEDULED_LIMIT


@pytest.mark.parametrize("zone", ["", "Not/AZone"])
def test_a_customer_without_a_known_timezone_is_told_the_time_in_utc(agent, client_for, zone):
    customer = reachable_customer(display_name="Cy Park", timezone=zone)
    case = CaseFactory(customer=customer, assignee=agent)
    case.queue.members.add(agent)
    scheduled(name="Summer offer")

    text = case_panel(client_for, agent, case)

    assert "scheduled for 10 Jun 2031, 12:00 (UTC) — Summer offer (email)" in text
