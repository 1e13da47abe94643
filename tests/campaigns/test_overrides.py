"""Overrides: a marketer asks, only the CCO decides (in writing); an approval is audited, written
on each held customer's timeline, told to the marketer, and releases the held touches."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from campaigns.models import CampaignStatus, Override, Touch, TouchStatus
from campaigns.overrides import approve_override, refuse_override, request_override
from customers.models import Interaction
from tests.campaigns.factories import CampaignFactory, reachable_customer
from tests.cases.factories import CommitmentFactory, CustomerFactory, ensure_case_events_render
from workbench.models import AuditEntry, Notification

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _renderers():
    ensure_case_events_render()


@pytest.fixture
def held(marketer):
    """A sending campaign of the marketer's with two customers held by an open commitment and
    one sent."""
    campaign = CampaignFactory(status=CampaignStatus.SENDING, owner=marketer, topics=[])
    customers = [reachable_customer(display_name=f"Held {n}") for n in range(2)]
    for customer in customers:
        CommitmentFactory(case__customer=customer, customer=customer)
        Touch.objects.create(
            campaign=campaign, customer=customer, status="held", reason="open_commitment"
        )
    Touch.objects.create(campaign=campaign, customer=CustomerFactory(), status="sent")
    return campaign, customers


def ask(campaign, actor, reason="open_commitment", justification="They asked for it by phone."):
    return request_override(
        campaign=campaign, reason=reason, justification=justification, actor=actor
    )


def test_marketer_asks_and_the_ccos_are_told(held, marketer, cco):
    campaign, _ = held
    override = ask(campaign, marketer)
    assert (override.status, override.requested_by) == ("pending", marketer)
    assert AuditEntry.objects.filter(action="campaign.override_requested").count() == 1
    told = Notification.objects.get(recipient=cco)
    assert campaign.name in told.verb
    assert told.url == f"/campaigns/{campaign.pk}/#overrides"


@pytest.mark.parametrize("role", ["agent", "supervisor", "cco"])
def test_only_marketers_ask_for_overrides(held, make_user, role):
    campaign, _ = held
    with pytest.raises(PermissionDenied):
        ask(campaign, make_user(role))
    assert not Override.objects.exists()


def test_a_request_needs_a_justification_and_a_hold_reason(held, marketer):
    campaign, _ = held
    with pytest.raises(ValidationError) as missing:
        ask(campaign, marketer, justification="   ")
    assert "justification" in missing.value.message_dict
    with pytest.raises(ValidationError) as suppression:
        ask(campaign, marketer, reason="no_consent")
    assert "reason" in suppression.value.message_dict
    assert not Override.objects.exists()


def test_one_open_request_per_campaign_and_reason(held, marketer):
    campaign, _ = held
    ask(campaign, marketer)
    with pytest.raises(ValidationError) as twice:
        ask(campaign, marketer)
    assert "already waiting or approved" in str(twice.value)
    assert Override.objects.count() == 1


def test_no_override_for_a_draft_or_finished_campaign(marketer):
    for status in (CampaignStatus.DRAFT, CampaignStatus.DONE, CampaignStatus.CANCELLED):
        campaign = CampaignFactory(status=status, owner=marketer)
        with pytest.raises(ValidationError):
            ask(campaign, marketer)
    assert not Override.objects.exists()


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer"])
def test_only_the_cco_approves_or_refuses(held, marketer, make_user, role):
    campaign, _ = held
    override = ask(campaign, marketer)
    actor = marketer if role == "marketer" else make_user(role)
    with pytest.raises(PermissionDenied):
        approve_override(override=override, actor=actor, note="fine")
    with pytest.raises(PermissionDenied):
        refuse_override(override=override, actor=actor, note="no")
    override.refresh_from_db()
    assert override.status == "pending"
    assert not AuditEntry.objects.filter(action__startswith="campaign.override_a").exists()


def test_a_decision_needs_a_written_note(held, marketer, cco):
    campaign, _ = held
    override = ask(campaign, marketer)
    with pytest.raises(ValidationError) as empty:
        approve_override(override=override, actor=cco, note=" ")
    assert "note" in empty.value.message_dict
    override.refresh_from_db()
    assert override.status == "pending"
    assert not Interaction.objects.filter(kind="campaign_touch").exists()


def test_approval_is_audited_on_each_held_customers_timeline_told_and_releases(held, marketer, cco):
    campaign, customers = held
    override = ask(campaign, marketer)
    approved = approve_override(override=override, actor=cco, note="Goodwill gesture, agreed.")
    assert (approved.status, approved.decided_by) == ("approved", cco)
    entry = AuditEntry.objects.get(action="campaign.override_approved")
    assert entry.actor == cco
    assert entry.details["customers"] == 2
    assert entry.details["note"] == "Goodwill gesture, agreed."
    for customer in customers:
        line = Interaction.objects.get(customer=customer, kind="campaign_touch")
        assert line.direction == "internal"
        assert line.title.startswith(f"CCO override: “{campaign.name}”")
        assert line.body_text == "Goodwill gesture, agreed."
    told = Notification.objects.get(recipient=marketer)
    assert told.verb == f"The CCO approved your override on “{campaign.name}”"
    # The override lifts the commitment hold for this campaign: nobody is held for it now.
    assert not Touch.objects.filter(campaign=campaign, status=TouchStatus.HELD).exists()
    assert Touch.objects.filter(campaign=campaign, status=TouchStatus.PENDING).count() == 2


def test_a_decision_is_taken_once(held, marketer, cco):
    campaign, _ = held
    override = ask(campaign, marketer)
    approve_override(override=override, actor=cco, note="Yes.")
    with pytest.raises(ValidationError):
        refuse_override(override=override, actor=cco, note="Changed my mind.")
    override.refresh_from_db()
    assert override.status == "approved"
    assert AuditEntry.objects.filter(action__startswith="campaign.override_").count() == 2


def test_refusal_is_audited_told_and_the_touches_stay_held(held, marketer, cco):
    campaign, _ = held
    override = ask(campaign, marketer)
    refused = refuse_override(override=override, actor=cco, note="Refund first.")
    assert refused.status == "refused"
    assert AuditEntry.objects.filter(action="campaign.override_refused").count() == 1
    assert Notification.objects.get(recipient=marketer).verb.startswith("The CCO refused")
    assert Touch.objects.filter(campaign=campaign, status=TouchStatus.HELD).count() == 2
    assert not Interaction.objects.filter(kind="campaign_touch").exists()
    # A refused reason may be asked again, with a better justification.
    assert ask(campaign, marketer, justification="The refund was paid.").status == "pending"
