"""What service sees of marketing: on the case view and the customer page, the campaign touches
scheduled or held for this customer, and why."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import CampaignStatus, Touch
from cases.commitments import record_commitment
from tests.campaigns.factories import CampaignFactory, reachable_customer
from tests.cases.factories import CaseFactory, ensure_case_events_render

pytestmark = pytest.mark.django_db

EMPTY = "No campaign is scheduled for this customer"


@pytest.fixture(autouse=True)
def _renderers():
    ensure_case_events_render()


@pytest.fixture
def case(agent):
    case = CaseFactory(customer=reachable_customer(display_name="Ann Lee"), assignee=agent)
    case.queue.members.add(agent)
    return case


def test_case_view_says_when_no_campaign_is_scheduled(agent, client_for, case):
    page = client_for(agent).get(reverse("cases:detail", args=[case.pk]))
    assert "Marketing for this customer" in page.content.decode()
    assert EMPTY in page.content.decode()


def test_case_view_lists_upcoming_and_held_touches_with_the_reason(agent, client_for, case):
    upcoming = CampaignFactory(name="Spring offer", status=CampaignStatus.SCHEDULED,
                               scheduled_at=timezone.now())  # fmt: skip
    held = CampaignFactory(name="Upgrade now", status=CampaignStatus.SENDING)
    draft = CampaignFactory(name="Not yet", status=CampaignStatus.DRAFT)
    done = CampaignFactory(name="Old news", status=CampaignStatus.DONE)
    Touch.objects.create(campaign=upcoming, customer=case.customer, status="pending")
    Touch.objects.create(
        campaign=held, customer=case.customer, status="held", reason="open_commitment",
        reason_detail="refund due 3 Dec",
    )  # fmt: skip
    Touch.objects.create(campaign=draft, customer=case.customer, status="pending")
    Touch.objects.create(campaign=done, customer=case.customer, status="sent")
    text = client_for(agent).get(reverse("cases:detail", args=[case.pk])).content.decode()
    assert EMPTY not in text
    assert "Spring offer" in text and "Upcoming" in text
    assert "Upgrade now" in text and "Held" in text
    assert "Open service commitment</strong> <span hx-disable>(refund due 3 Dec)</span>" in text
    assert "Not yet" not in text and "Old news" not in text
    # An agent cannot open campaigns, so the names are not links there.
    assert f'href="/campaigns/{held.pk}/"' not in text


def test_recording_a_commitment_turns_the_scheduled_touch_into_a_hold_on_the_case(
    agent, client_for, case, django_capture_on_commit_callbacks
):
    campaign = CampaignFactory(name="Upgrade now", status=CampaignStatus.SENDING, topics=[])
    Touch.objects.create(campaign=campaign, customer=case.customer, status="pending")
    with django_capture_on_commit_callbacks(execute=True):
        record_commitment(
            case=case,
            kind="refund",
            text="Refund £20",
            actor=agent,
            due_at=timezone.now() + timedelta(days=2),
        )
    text = client_for(agent).get(reverse("cases:detail", args=[case.pk])).content.decode()
    assert 'data-status="held"' in text
    assert "Open service commitment" in text


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer", "cco"])
def test_customer_page_shows_the_panel_to_every_role(make_user, client_for, role):
    customer = reachable_customer(display_name="Bo Chen")
    campaign = CampaignFactory(name="Upgrade now", status=CampaignStatus.SENDING)
    Touch.objects.create(campaign=campaign, customer=customer, status="held", reason="agent_pause")
    text = (
        client_for(make_user(role))
        .get(reverse("customers:detail", args=[customer.pk]))
        .content.decode()
    )
    assert "Marketing for this customer" in text
    assert "Marketing paused by an agent" in text
    is_link = f'href="/campaigns/{campaign.pk}/"' in text
    assert is_link == (role in ("marketer", "cco"))


def test_customer_page_panel_has_an_empty_state(marketer, client_for):
    customer = reachable_customer()
    text = (
        client_for(marketer).get(reverse("customers:detail", args=[customer.pk])).content.decode()
    )
    assert EMPTY in text


def test_the_panel_costs_the_same_queries_whatever_the_touches(
    agent, client_for, case, django_assert_max_num_queries
):
    client = client_for(agent)
    url = reverse("cases:detail", args=[case.pk])
    Touch.objects.create(
        campaign=CampaignFactory(status=CampaignStatus.SENDING), customer=case.customer
    )
    client.get(url)
    with django_assert_max_num_queries(100) as few:
        client.get(url)
    for _ in range(5):
        Touch.objects.create(
            campaign=CampaignFactory(status=CampaignStatus.SENDING), customer=case.customer,
            status="held", reason="frequency_cap",
        )  # fmt: skip
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(url)
