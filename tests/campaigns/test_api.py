"""The campaigns API: the same role rules as the pages (marketers write, the CCO reads, service
is refused), bad input named by field with nothing stored, and the lifecycle and override doors."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Campaign, CampaignStatus, Override, Segment, Touch
from tests.campaigns.factories import CampaignFactory, SegmentFactory, reachable_customer
from tests.cases.factories import CommitmentFactory, CustomerFactory, ensure_case_events_render

pytestmark = pytest.mark.django_db

BASE = "/api/campaigns/"
SEGMENTS = "/api/campaigns/segments/"
STAGE_CUSTOMER = {
    "match": "all",
    "conditions": [{"field": "lifecycle_stage", "op": "in", "value": ["customer"]}],
}


@pytest.fixture(autouse=True)
def _renderers():
    ensure_case_events_render()


def send(client, method, path, payload=None):
    body = json.dumps(payload) if payload is not None else None
    return getattr(client, method)(path, data=body, content_type="application/json")


def draft_payload(segment, **extra):
    payload = {
        "name": "Spring upgrade",
        "channel": "email",
        "subject": "Hi {{ customer.first_name }}",
        "content": "Dear {{ customer.first_name }}, upgrade now.",
        "segment": segment.pk,
        "topics": ["upgrade"],
        "schedule_mode": "at",
        "scheduled_at": (timezone.now() + timedelta(hours=2)).isoformat(),
    }
    payload.update(extra)
    return payload


def stored():
    return (
        list(Segment.objects.order_by("id").values_list("id", "name", "definition")),
        list(Campaign.objects.order_by("id").values_list("id", "name", "status")),
        Override.objects.count(),
    )


# --- roles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["agent", "supervisor"])
def test_service_is_refused_every_endpoint(make_user, client_for, role):
    campaign = CampaignFactory(status=CampaignStatus.DRAFT)
    client = client_for(make_user(role))
    before = stored()
    for method, path, payload in [
        ("get", BASE, None),
        ("get", f"{BASE}{campaign.pk}/", None),
        ("get", f"{BASE}{campaign.pk}/preflight/", None),
        ("get", f"{BASE}{campaign.pk}/progress/", None),
        ("post", f"{BASE}{campaign.pk}/schedule/", None),
        ("post", BASE, draft_payload(campaign.segment)),
        ("get", SEGMENTS, None),
        ("post", SEGMENTS, {"name": "X", "definition": STAGE_CUSTOMER}),
        ("post", f"{SEGMENTS}count/", {"definition": STAGE_CUSTOMER}),
    ]:
        assert send(client, method, path, payload).status_code == 403, (method, path)
    assert stored() == before


def test_the_cco_reads_but_every_write_is_403(cco, client_for):
    campaign = CampaignFactory(status=CampaignStatus.DRAFT)
    client = client_for(cco)
    assert send(client, "get", BASE).status_code == 200
    assert send(client, "get", f"{BASE}{campaign.pk}/preflight/").status_code == 200
    assert send(client, "get", SEGMENTS).status_code == 200
    before = stored()
    assert send(client, "post", BASE, draft_payload(campaign.segment)).status_code == 403
    assert send(client, "post", f"{BASE}{campaign.pk}/schedule/").status_code == 403
    assert send(client, "delete", f"{BASE}{campaign.pk}/").status_code == 403
    overrides = f"{BASE}{campaign.pk}/overrides/"
    payload = {"reason": "open_commitment", "justification": "x"}
    assert send(client, "post", overrides, payload).status_code == 403
    assert stored() == before


def test_anonymous_is_401(client):
    assert send(client, "get", BASE).status_code == 401


# --- segments ----------------------------------------------------------------------------------


def test_marketer_saves_reads_changes_and_deletes_a_segment(marketer, client_for):
    client = client_for(marketer)
    created = send(client, "post", SEGMENTS, {"name": "Customers", "definition": STAGE_CUSTOMER})
    assert created.status_code == 201
    body = created.json()
    assert (body["name"], body["owner_username"]) == ("Customers", marketer.username)
    path = f"{SEGMENTS}{body['id']}/"
    assert send(client, "get", path).json()["definition"] == STAGE_CUSTOMER
    changed = send(client, "put", path, {"name": "Everyone", "definition": {"conditions": []}})
    assert changed.status_code == 200
    assert changed.json()["definition"] == {"match": "all", "conditions": []}
    assert send(client, "delete", path).status_code == 204
    assert not Segment.objects.exists()


def test_a_bad_segment_is_400_by_field_and_nothing_is_stored(marketer, client_for):
    client = client_for(marketer)
    bad = {"name": "", "definition": {"conditions": [{"field": "shoe_size", "op": "in"}]}}
    response = send(client, "post", SEGMENTS, bad)
    assert response.status_code == 400
    assert "name" in response.json()
    response = send(client, "post", SEGMENTS, {"name": "Shoes", "definition": bad["definition"]})
    assert response.status_code == 400
    assert response.json()["definition"] == ["Condition 1: unknown field 'shoe_size'."]
    assert not Segment.objects.exists()


def test_a_segment_used_by_a_campaign_is_not_deleted(marketer, client_for):
    campaign = CampaignFactory(status=CampaignStatus.DRAFT)
    response = send(client_for(marketer), "delete", f"{SEGMENTS}{campaign.segment_id}/")
    assert response.status_code == 400
    assert Segment.objects.filter(pk=campaign.segment_id).exists()


def test_count_a_definition_and_a_saved_segment(marketer, cco, client_for):
    CustomerFactory.create_batch(2, lifecycle_stage="customer")
    CustomerFactory(lifecycle_stage="lead")
    client = client_for(marketer)
    response = send(client, "post", f"{SEGMENTS}count/", {"definition": STAGE_CUSTOMER})
    assert response.json() == {"count": 2}
    bad = send(client, "post", f"{SEGMENTS}count/", {"definition": {"match": "some"}})
    assert bad.status_code == 400
    segment = SegmentFactory(definition=STAGE_CUSTOMER)
    client = client_for(cco)
    assert send(client, "get", f"{SEGMENTS}{segment.pk}/count/").json() == {"count": 2}
    counted = send(client, "post", f"{SEGMENTS}count/", {"definition": STAGE_CUSTOMER})
    assert counted.json() == {"count": 2}


# --- campaigns ---------------------------------------------------------------------------------


def test_marketer_drafts_changes_and_deletes_a_campaign(marketer, client_for):
    segment = SegmentFactory()
    client = client_for(marketer)
    created = send(client, "post", BASE, draft_payload(segment))
    assert created.status_code == 201
    body = created.json()
    assert (body["status"], body["owner_username"]) == ("draft", marketer.username)
    path = f"{BASE}{body['id']}/"
    changed = send(client, "put", path, draft_payload(segment, name="Renamed"))
    assert changed.json()["name"] == "Renamed"
    assert send(client, "delete", path).status_code == 204
    assert not Campaign.objects.exists()


def test_a_bad_campaign_is_400_by_field_and_nothing_is_stored(marketer, client_for):
    segment = SegmentFactory()
    client = client_for(marketer)
    payload = draft_payload(segment, channel="pigeon")
    payload["segment"] = 0
    response = send(client, "post", BASE, payload)
    assert response.status_code == 400
    assert {"channel", "segment"} <= set(response.json())
    response = send(client, "post", BASE, draft_payload(segment, content="{{ customer.password }}"))
    assert response.status_code == 400
    assert "Unknown placeholder" in response.json()["content"][0]
    response = send(client, "post", BASE, draft_payload(segment, schedule_mode="local_window"))
    assert response.status_code == 400
    assert "window_start_hour" in response.json()
    assert not Campaign.objects.exists()


def test_another_marketers_draft_and_a_scheduled_campaign_are_not_changed(make_user, client_for):
    owner, other = make_user("marketer"), make_user("marketer")
    draft = CampaignFactory(status=CampaignStatus.DRAFT, owner=owner, name="Mine")
    live = CampaignFactory(status=CampaignStatus.SCHEDULED, owner=owner, name="Live")
    response = send(client_for(other), "put", f"{BASE}{draft.pk}/", draft_payload(draft.segment))
    assert response.status_code == 403
    response = send(client_for(owner), "put", f"{BASE}{live.pk}/", draft_payload(live.segment))
    assert response.status_code == 400
    assert sorted(Campaign.objects.values_list("name", flat=True)) == ["Live", "Mine"]


def test_preflight_counts_outcomes_and_names_the_policy_version(marketer, client_for):
    reachable_customer()
    held = reachable_customer(display_name="Promised Pat")
    CommitmentFactory(case__customer=held, customer=held)
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, owner=marketer, topics=[])
    client = client_for(marketer)
    body = send(client, "get", f"{BASE}{campaign.pk}/preflight/").json()
    assert body["total"] == 2
    assert body["counts"]["open_commitment"] == 1
    assert body["policy_version"] == 1
    people = send(
        client, "get", f"{BASE}{campaign.pk}/preflight/customers/?outcome=open_commitment"
    )
    assert [row["name"] for row in people.json()] == ["Promised Pat"]
    bad = send(client, "get", f"{BASE}{campaign.pk}/preflight/customers/?outcome=maybe")
    assert bad.status_code == 400
    assert "outcome" in bad.json()


def test_schedule_pause_resume_cancel(marketer, client_for):
    campaign = CampaignFactory(
        status=CampaignStatus.DRAFT, owner=marketer, schedule_mode="at",
        scheduled_at=timezone.now() + timedelta(hours=1),
    )  # fmt: skip
    client = client_for(marketer)
    path = f"{BASE}{campaign.pk}/"
    assert send(client, "post", f"{path}schedule/").json()["status"] == "scheduled"
    again = send(client, "post", f"{path}schedule/")
    assert again.status_code == 400
    assert send(client, "post", f"{path}pause/").json()["status"] == "paused"
    assert send(client, "post", f"{path}resume/").json()["status"] == "scheduled"
    assert send(client, "post", f"{path}cancel/").json()["status"] == "cancelled"


def test_progress_counts_touches(marketer, client_for):
    campaign = CampaignFactory(status=CampaignStatus.SENDING, owner=marketer)
    Touch.objects.create(campaign=campaign, customer=CustomerFactory(), status="sent")
    Touch.objects.create(
        campaign=campaign, customer=CustomerFactory(), status="held", reason="cool_off"
    )
    body = send(client_for(marketer), "get", f"{BASE}{campaign.pk}/progress/").json()
    assert (body["sent"], body["held"], body["remaining"], body["total"]) == (1, 1, 0, 2)


def test_override_request_through_the_api(marketer, client_for):
    campaign = CampaignFactory(status=CampaignStatus.SENDING, owner=marketer)
    client = client_for(marketer)
    path = f"{BASE}{campaign.pk}/overrides/"
    missing = send(client, "post", path, {"reason": "open_commitment", "justification": ""})
    assert missing.status_code == 400
    assert "justification" in missing.json()
    assert not Override.objects.exists()
    created = send(
        client, "post", path, {"reason": "open_commitment", "justification": "Asked by phone."}
    )
    assert created.status_code == 201
    assert created.json()["status"] == "pending"
    twice = send(
        client, "post", path, {"reason": "open_commitment", "justification": "Asked by phone."}
    )
    assert twice.status_code == 400
    assert Override.objects.count() == 1


def test_the_schema_documents_the_campaign_endpoints(marketer, client_for):
    schema = client_for(marketer).get("/api/schema/", HTTP_ACCEPT="application/json")
    paths = json.loads(schema.content)["paths"]
    assert "/api/campaigns/{id}/preflight/" in paths
    assert "/api/campaigns/segments/count/" in paths
