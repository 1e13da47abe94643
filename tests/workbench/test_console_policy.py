"""The contact policy editor: the rules in force, a preview that moves touches between send and
hold without storing anything, saving a new version (with its note, author and audit), history."""

import pytest

from campaigns.models import ContactPolicy
from campaigns.policy import current_policy
from tests.campaigns.factories import CampaignFactory, reachable_customer
from tests.cases.factories import CaseFactory, CommitmentFactory
from workbench.models import AuditEntry

pytestmark = pytest.mark.django_db


def form_data(policy: ContactPolicy, **changes) -> dict:
    data = {
        "commitment_hold_scope": policy.commitment_hold_scope,
        "complaint_priorities": list(policy.complaint_priorities),
        "complaint_topics": ", ".join(policy.complaint_topics),
        "cool_off_days": policy.cool_off_days,
        "frequency_cap_touches": policy.frequency_cap_touches,
        "frequency_cap_days": policy.frequency_cap_days,
        "quiet_hours_start": policy.quiet_hours_start.strftime("%H:%M"),
        "quiet_hours_end": policy.quiet_hours_end.strftime("%H:%M"),
        "change_note": "",
    }
    if policy.is_topic_conflict_on:
        data["is_topic_conflict_on"] = "on"
    if policy.is_agent_pause_on:
        data["is_agent_pause_on"] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def live_campaign():
    """Three reachable customers, one of them waiting for a refund."""
    customers = [reachable_customer() for _ in range(3)]
    CommitmentFactory(case=CaseFactory(customer=customers[0], status="open"))
    return CampaignFactory(name="Spring upgrade", status="scheduled")


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer"])
def test_policy_editor_refuses_other_roles_and_stores_nothing(client_for, make_user, role):
    client = client_for(make_user(role))
    before = ContactPolicy.objects.count()
    assert client.get("/console/policy/").status_code == 403
    data = form_data(current_policy(), cool_off_days=1, change_note="mine now", save="1")
    assert client.post("/console/policy/", data).status_code == 403
    assert ContactPolicy.objects.count() == before


def test_editor_shows_every_rule_with_its_current_value(client_for, cco):
    page = client_for(cco).get("/console/policy/").text
    policy = current_policy()
    assert f'data-testid="policy-version">{policy.version}<' in page
    assert f'name="cool_off_days" value="{policy.cool_off_days}"' in page
    assert f'name="frequency_cap_touches" value="{policy.frequency_cap_touches}"' in page
    assert 'name="quiet_hours_start" value="21:00"' in page
    for label in ("Open commitment hold", "Open complaint hold", "Cool-off", "Topic conflict",
                  "Frequency cap", "Quiet hours", "Agent pause"):  # fmt: skip
        assert label in page


def test_preview_shows_touches_moving_from_hold_to_send_and_stores_nothing(
    client_for, cco, live_campaign
):
    client = client_for(cco)
    versions = ContactPolicy.objects.count()
    audits = AuditEntry.objects.count()
    data = form_data(current_policy(), commitment_hold_scope="off", preview="1")
    response = client.post("/console/policy/", data)
    assert response.status_code == 200
    page = response.text
    row = page.split(f'data-campaign="{live_campaign.pk}"')[1].split("</tr>")[0]
    # Audience 3; 2 go today, 3 would go; one touch moves from hold to send.
    assert [cell.split("<")[0] for cell in row.split('class="num')[1:]] == [
        '">3',
        '">2',
        '">3',
        ' move-hold" data-testid="to-hold">0',
        ' move-send" data-testid="to-send">1',
    ]
    assert (
        'Open commitment hold: <span class="diff-before">Every campaign</span> → '
        '<span class="diff-after">No hold</span>' in page
    )
    assert ContactPolicy.objects.count() == versions
    assert AuditEntry.objects.count() == audits


def test_preview_of_a_stricter_policy_moves_touches_to_hold(client_for, cco, live_campaign):
    # Two more reachable customers with an open normal-priority case: today no hold (the
    # policy names high and urgent); holding normal complaints too moves both to hold.
    for _ in range(2):
        CaseFactory(customer=reachable_customer(), status="open", priority="normal")
    data = form_data(
        current_policy(), complaint_priorities=["normal", "high", "urgent"], preview="1"
    )
    page = client_for(cco).post("/console/policy/", data).text
    assert 'data-testid="to-hold">2<' in page
    assert 'data-testid="to-send">0<' in page


def test_save_adds_a_new_version_with_author_note_and_audit(client_for, cco, live_campaign):
    before = current_policy()
    data = form_data(
        before, cool_off_days=14, change_note="Longer cool-off after complaints", save="1"
    )
    response = client_for(cco).post("/console/policy/", data)
    assert response.status_code == 302
    new = current_policy()
    assert new.version == before.version + 1
    assert (new.cool_off_days, new.changed_by, new.change_note) == (
        14,
        cco,
        "Longer cool-off after complaints",
    )
    old = ContactPolicy.objects.get(version=before.version)
    assert old.cool_off_days == before.cool_off_days  # the old row is never edited
    [entry] = AuditEntry.objects.filter(action="policy.changed")
    assert entry.actor == cco
    assert entry.details["version"] == new.version
    assert entry.details["changes"] == [
        {
            "field": "cool_off_days",
            "label": "Cool-off (days after a case is solved or a commitment broken)",
            "before": str(before.cool_off_days),
            "after": "14",
        }
    ]
    page = client_for(cco).get("/console/policy/").text
    history = page.split('id="policy-history"')[1]
    assert f'data-version="{new.version}"' in history
    assert "Longer cool-off after complaints" in history
    assert (
        f'<span class="diff-before">{before.cool_off_days}</span> → '
        '<span class="diff-after">14</span>' in history
    )


def test_save_without_a_note_is_refused_and_stores_nothing(client_for, cco):
    versions = ContactPolicy.objects.count()
    data = form_data(current_policy(), cool_off_days=3, save="1")
    response = client_for(cco).post("/console/policy/", data)
    assert response.status_code == 400
    assert "This field is required." in response.text
    assert ContactPolicy.objects.count() == versions
    assert not AuditEntry.objects.filter(action="policy.changed").exists()


def test_an_invalid_rule_is_refused_next_to_its_field(client_for, cco):
    versions = ContactPolicy.objects.count()
    data = form_data(current_policy(), frequency_cap_days=0, change_note="try", save="1")
    response = client_for(cco).post("/console/policy/", data)
    assert response.status_code == 400
    assert ContactPolicy.objects.count() == versions


def test_preview_with_no_live_campaign_says_nothing_moves(client_for, cco):
    CampaignFactory(status="draft")
    data = form_data(current_policy(), commitment_hold_scope="off", preview="1")
    page = client_for(cco).post("/console/policy/", data).text
    assert "No campaign is scheduled or sending" in page
