"""The CCO's overrides page: pending requests with the customers they reach, approve or refuse
with a written reason (required), the marketer told; nobody else may see or decide."""

import pytest

from campaigns.models import Override
from tests.campaigns.factories import CampaignFactory, OverrideFactory, TouchFactory
from tests.cases.factories import CustomerFactory
from workbench.models import AuditEntry, Notification

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(marketer):
    campaign = CampaignFactory(name="Spring upgrade", status="sending")
    for name in ("Ann Held", "Bob Held", "Cy Held"):
        TouchFactory(
            campaign=campaign,
            customer=CustomerFactory(display_name=name),
            status="held",
            reason="open_commitment",
            reason_detail="Refund promised",
        )
    TouchFactory(campaign=campaign, status="held", reason="frequency_cap")  # another reason
    TouchFactory(campaign=campaign, status="sent")
    return OverrideFactory(
        campaign=campaign,
        reason="open_commitment",
        status="pending",
        requested_by=marketer,
        justification="They asked for the <b>upgrade</b> on the phone.",
    )


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer"])
def test_overrides_page_and_decisions_refuse_other_roles(client_for, make_user, pending, role):
    client = client_for(make_user(role))
    assert client.get("/console/overrides/").status_code == 403
    response = client.post(
        f"/console/overrides/{pending.pk}/decide/",
        {f"o{pending.pk}-decision": "approve", f"o{pending.pk}-note": "fine"},
    )
    assert response.status_code == 403
    pending.refresh_from_db()
    assert pending.status == "pending"


def test_page_lists_a_pending_request_with_its_affected_customers(client_for, cco, pending):
    page = client_for(cco).get("/console/overrides/").text
    item = page.split(f'data-testid="override-{pending.pk}"')[1].split("</article>")[0]
    assert "“Spring upgrade”: Open service commitment" in item
    assert 'data-testid="affected-count">3<' in item
    for name in ("Ann Held", "Bob Held", "Cy Held"):
        assert name in item
    assert "&lt;b&gt;upgrade&lt;/b&gt;" in item  # the justification is escaped
    assert "Refund promised" in item


def test_empty_state_when_nothing_waits(client_for, cco):
    page = client_for(cco).get("/console/overrides/").text
    assert "No override is waiting." in page


def test_approving_needs_a_written_reason(client_for, cco, pending):
    client = client_for(cco)
    audits = AuditEntry.objects.count()
    response = client.post(
        f"/console/overrides/{pending.pk}/decide/",
        {f"o{pending.pk}-decision": "approve", f"o{pending.pk}-note": "  "},
    )
    assert response.status_code == 400
    assert "This field is required." in response.text
    pending.refresh_from_db()
    assert pending.status == "pending"
    assert AuditEntry.objects.count() == audits


def test_approving_decides_audits_and_tells_the_marketer(client_for, cco, marketer, pending):
    response = client_for(cco).post(
        f"/console/overrides/{pending.pk}/decide/",
        {f"o{pending.pk}-decision": "approve", f"o{pending.pk}-note": "Customer asked, on record."},
    )
    assert response.status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.decided_by, pending.decision_note) == (
        "approved",
        cco,
        "Customer asked, on record.",
    )
    [entry] = AuditEntry.objects.filter(action="campaign.override_approved")
    assert entry.details["customers"] == 3
    [told] = Notification.objects.filter(recipient=marketer)
    assert "approved" in told.verb
    page = client_for(cco).get("/console/overrides/").text
    assert "No override is waiting." in page
    assert "Customer asked, on record." in page  # under recent decisions


def test_refusing_keeps_the_touches_held(client_for, cco, marketer, pending):
    response = client_for(cco).post(
        f"/console/overrides/{pending.pk}/decide/",
        {f"o{pending.pk}-decision": "refuse", f"o{pending.pk}-note": "Refund first."},
    )
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.status == "refused"
    assert AuditEntry.objects.filter(action="campaign.override_refused").count() == 1
    assert pending.campaign.touches.filter(status="held").count() == 4


def test_deciding_twice_changes_nothing_the_second_time(client_for, cco, pending):
    client = client_for(cco)
    data = {f"o{pending.pk}-decision": "approve", f"o{pending.pk}-note": "ok"}
    client.post(f"/console/overrides/{pending.pk}/decide/", data)
    response = client.post(
        f"/console/overrides/{pending.pk}/decide/",
        {f"o{pending.pk}-decision": "refuse", f"o{pending.pk}-note": "changed my mind"},
        follow=True,
    )
    assert "already approved" in response.text
    assert Override.objects.get(pk=pending.pk).status == "approved"


def test_the_page_does_not_query_per_request(
    client_for, cco, pending, django_assert_max_num_queries
):
    client = client_for(cco)
    client.get("/console/overrides/")
    with django_assert_max_num_queries(12) as captured:
        client.get("/console/overrides/")
    first = len(captured)
    for _ in range(3):
        campaign = CampaignFactory()
        TouchFactory(campaign=campaign, status="held", reason="cool_off")
        OverrideFactory(campaign=campaign, reason="cool_off", status="pending")
    with django_assert_max_num_queries(first):
        client.get("/console/overrides/")
