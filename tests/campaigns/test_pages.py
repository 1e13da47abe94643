"""Marketing's pages: who may open them, the segment builder and its live count, the campaign
editor with its preview, preflight, scheduling, and the live campaign page."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from campaigns.fragments import render_campaign_progress
from campaigns.models import Campaign, CampaignStatus, Override, Segment, Touch
from tests.campaigns.factories import CampaignFactory, SegmentFactory, reachable_customer
from tests.cases.factories import CommitmentFactory, CustomerFactory, ensure_case_events_render

pytestmark = pytest.mark.django_db

STAGE_CUSTOMER = {
    "match": "all",
    "conditions": [{"field": "lifecycle_stage", "op": "in", "value": ["customer"]}],
}


@pytest.fixture(autouse=True)
def _renderers():
    ensure_case_events_render()


def builder_post(**extra):
    """A segment form as the builder posts it: one condition, lifecycle stage is customer."""
    data = {
        "name": "Customers",
        "description": "",
        "match": "all",
        "conditions": "1",
        "c-0-field": "lifecycle_stage",
        "c-0-op": "in",
        "c-0-value": ["customer"],
    }
    data.update(extra)
    return data


def campaign_post(segment, **extra):
    data = {
        "name": "Spring upgrade",
        "channel": "email",
        "segment": segment.pk,
        "subject": "Hello {{ customer.first_name }}",
        "content": "Dear {{ customer.first_name }}, upgrade now.",
        "topics": "Upgrade, router",
        "schedule_mode": "at",
        "scheduled_at": "",
        "window_start_hour": "",
        "window_end_hour": "",
        "ends_at": "",
    }
    data.update(extra)
    return data


# --- who may open what -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["agent", "supervisor"])
@pytest.mark.parametrize(
    "name", ["campaigns:list", "campaigns:segments", "campaigns:new", "campaigns:segment_new"]
)
def test_service_gets_403_on_every_marketing_page(make_user, client_for, role, name):
    client = client_for(make_user(role))
    assert client.get(reverse(name)).status_code == 403


@pytest.mark.parametrize("role", ["agent", "supervisor"])
def test_service_gets_403_on_a_campaign_and_cannot_schedule_it(make_user, client_for, role):
    campaign = CampaignFactory(status=CampaignStatus.DRAFT)
    client = client_for(make_user(role))
    assert client.get(reverse("campaigns:detail", args=[campaign.pk])).status_code == 403
    url = reverse("campaigns:action", args=[campaign.pk, "schedule"])
    assert client.post(url).status_code == 403
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.DRAFT


def test_cco_reads_the_campaign_pages_but_cannot_write(cco, client_for):
    campaign = CampaignFactory(status=CampaignStatus.DRAFT)
    client = client_for(cco)
    assert client.get(reverse("campaigns:list")).status_code == 200
    assert client.get(reverse("campaigns:segments")).status_code == 200
    page = client.get(reverse("campaigns:detail", args=[campaign.pk]))
    assert page.status_code == 200
    assert b"Schedule</button>" not in page.content
    segment_page = client.get(reverse("campaigns:segment", args=[campaign.segment_id]))
    assert b"Only marketers change segments." in segment_page.content
    assert client.get(reverse("campaigns:new")).status_code == 403
    assert client.post(reverse("campaigns:segment_new"), builder_post()).status_code == 403
    assert not Segment.objects.filter(name="Customers").exists()


# --- the campaign list -------------------------------------------------------------------------


def test_campaign_list_has_an_empty_state(marketer, client_for):
    page = client_for(marketer).get(reverse("campaigns:list"))
    assert b"No campaigns yet" in page.content
    assert b"building a segment" in page.content


def test_campaign_list_shows_status_segment_counts_and_owner_in_constant_queries(
    marketer, client_for, django_assert_max_num_queries
):
    client = client_for(marketer)
    for n in range(3):
        campaign = CampaignFactory(name=f"Campaign {n}", owner=marketer)
        Touch.objects.create(campaign=campaign, customer=CustomerFactory(), status="sent")
        Touch.objects.create(
            campaign=campaign, customer=CustomerFactory(), status="held", reason="open_commitment"
        )
    client.get(reverse("campaigns:list"))  # warm the session and the user's groups
    with django_assert_max_num_queries(8) as few:
        page = client.get(reverse("campaigns:list"))
    for _ in range(5):
        campaign = CampaignFactory(owner=marketer)
        Touch.objects.create(campaign=campaign, customer=CustomerFactory(), status="sent")
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get(reverse("campaigns:list"))
    text = page.content.decode()
    assert "Campaign 2" in text
    assert "Sending" in text
    assert "1 · 1 · 0 · 0" in text
    assert marketer.get_full_name() in text


def test_campaign_list_pages_by_25(marketer, client_for):
    segment = SegmentFactory()
    for n in range(27):
        CampaignFactory(name=f"Bulk {n:02}", segment=segment, status=CampaignStatus.DRAFT)
    client = client_for(marketer)
    first = client.get(reverse("campaigns:list")).content.decode()
    assert first.count('id="campaign-row-') == 25
    assert "Page 1 of 2" in first
    second = client.get(reverse("campaigns:list") + "?page=2").content.decode()
    assert second.count('id="campaign-row-') == 2


# --- segments ----------------------------------------------------------------------------------


def test_segment_list_has_an_empty_state(marketer, client_for):
    page = client_for(marketer).get(reverse("campaigns:segments"))
    assert b"No segments yet" in page.content


def test_segment_list_costs_the_same_queries_whatever_the_segments(
    marketer, client_for, django_assert_max_num_queries
):
    client = client_for(marketer)
    CampaignFactory(segment=SegmentFactory(owner=marketer))
    client.get(reverse("campaigns:segments"))
    with django_assert_max_num_queries(8) as few:
        client.get(reverse("campaigns:segments"))
    for _ in range(5):
        CampaignFactory(segment=SegmentFactory(owner=marketer))
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get(reverse("campaigns:segments"))
    assert page.content.decode().count('id="segment-row-') == 6


def test_marketer_saves_a_segment_from_the_builder(marketer, client_for):
    response = client_for(marketer).post(reverse("campaigns:segment_new"), builder_post())
    segment = Segment.objects.get(name="Customers")
    assert response.status_code == 302
    assert response["Location"] == reverse("campaigns:segment", args=[segment.pk])
    assert segment.owner == marketer
    assert segment.definition == STAGE_CUSTOMER


def test_a_segment_without_a_name_or_with_a_bad_condition_is_refused(marketer, client_for):
    client = client_for(marketer)
    response = client.post(reverse("campaigns:segment_new"), builder_post(name=""))
    assert response.status_code == 400
    assert b"This field is required." in response.content
    response = client.post(
        reverse("campaigns:segment_new"),
        builder_post(**{"c-0-field": "purchased", "c-0-op": "within_days", "c-0-value": "0"}),
    )
    assert response.status_code == 400
    assert b"whole number of days" in response.content
    assert not Segment.objects.exists()


def test_a_taken_segment_name_is_an_error_next_to_the_name(marketer, client_for):
    SegmentFactory(name="Customers")
    response = client_for(marketer).post(reverse("campaigns:segment_new"), builder_post())
    assert response.status_code == 400
    assert b"segment-name-error" in response.content
    assert Segment.objects.count() == 1


def test_builder_adds_and_removes_condition_rows(marketer, client_for):
    client = client_for(marketer)
    url = reverse("campaigns:segment_builder")
    added = client.post(url, builder_post(builder="add"), headers={"HX-Request": "true"})
    assert added.content.decode().count('class="condition-row"') == 2
    removed = client.post(url, builder_post(builder="remove:0"), headers={"HX-Request": "true"})
    text = removed.content.decode()
    assert text.count('class="condition-row"') == 0
    assert "No conditions: the segment is every customer." in text
    # The count comes along, out of band.
    assert 'id="segment-count"' in text and 'hx-swap-oob="true"' in text


def test_changing_a_rows_field_offers_that_fields_ops(marketer, client_for):
    response = client_for(marketer).post(
        reverse("campaigns:segment_builder"),
        builder_post(**{"c-0-field": "purchased", "builder": "field:0"}),
        headers={"HX-Request": "true"},
    )
    text = response.content.decode()
    assert 'value="within_days"' in text
    assert 'value="not_within_days"' in text


def test_live_count_counts_the_customers_matching_the_conditions(marketer, client_for):
    CustomerFactory.create_batch(3, lifecycle_stage="customer")
    CustomerFactory(lifecycle_stage="lead")
    client = client_for(marketer)
    response = client.post(reverse("campaigns:segment_count"), builder_post())
    assert 'data-count="3"' in response.content.decode()
    assert b"3</strong> customers match now" in response.content
    unfinished = client.post(reverse("campaigns:segment_count"), builder_post(**{"c-0-value": []}))
    assert b"data-count" not in unfinished.content
    assert b"needs at least one value" in unfinished.content


def test_a_segment_used_by_a_live_campaign_cannot_change(marketer, client_for):
    campaign = CampaignFactory(status=CampaignStatus.SCHEDULED)
    segment = campaign.segment
    response = client_for(marketer).post(
        reverse("campaigns:segment", args=[segment.pk]), builder_post()
    )
    assert response.status_code == 400
    segment.refresh_from_db()
    assert segment.definition == {"match": "all", "conditions": []}


# --- the editor --------------------------------------------------------------------------------


def test_marketer_creates_a_draft_campaign(marketer, client_for):
    segment = SegmentFactory()
    response = client_for(marketer).post(reverse("campaigns:new"), campaign_post(segment))
    campaign = Campaign.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("campaigns:detail", args=[campaign.pk])
    assert campaign.status == CampaignStatus.DRAFT
    assert campaign.owner == marketer
    assert campaign.topics == ["router", "upgrade"]


def test_an_invalid_campaign_shows_errors_next_to_fields_and_stores_nothing(marketer, client_for):
    segment = SegmentFactory()
    response = client_for(marketer).post(
        reverse("campaigns:new"),
        campaign_post(segment, name="", content="Hi {{ customer.password }}", channel="pigeon"),
    )
    assert response.status_code == 400
    text = response.content.decode()
    assert 'id="campaign-name-error"' in text
    assert 'id="campaign-channel-error"' in text
    assert not Campaign.objects.exists()
    response = client_for(marketer).post(
        reverse("campaigns:new"), campaign_post(segment, content="Hi {{ customer.password }}")
    )
    assert response.status_code == 400
    assert "Unknown placeholder: {{ customer.password }}" in response.content.decode()
    assert not Campaign.objects.exists()


def test_preview_fills_placeholders_for_the_first_customer_of_the_segment(marketer, client_for):
    CustomerFactory(display_name="Zed Last")
    CustomerFactory(display_name="Ann <b>Bold</b> Lee", lifecycle_stage="customer")
    segment = SegmentFactory(definition=STAGE_CUSTOMER)
    response = client_for(marketer).post(
        reverse("campaigns:preview"),
        {"segment": segment.pk, "subject": "Hi", "content": "Dear {{ customer.first_name }}!"},
    )
    text = response.content.decode()
    assert "Dear Ann!" in text
    assert "&lt;b&gt;Bold&lt;/b&gt;" in text  # the name is escaped where it is shown


def test_only_the_owner_edits_a_draft_and_only_while_it_is_a_draft(make_user, client_for):
    owner, other = make_user("marketer"), make_user("marketer")
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, owner=owner, name="Mine")
    url = reverse("campaigns:edit", args=[campaign.pk])
    client = client_for(other)
    assert client.get(url).status_code == 403
    assert client.post(url, campaign_post(campaign.segment, name="Theirs")).status_code == 403
    campaign.refresh_from_db()
    assert campaign.name == "Mine"
    client = client_for(owner)
    assert client.get(url).status_code == 200
    response = client.post(url, campaign_post(campaign.segment, name="Renamed"))
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.name == "Renamed"
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.SCHEDULED)
    response = client.post(url, campaign_post(campaign.segment, name="Sneaky"))
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.name == "Renamed"


# --- preflight and scheduling ------------------------------------------------------------------


def test_preflight_shows_counts_by_outcome_with_the_policy_version(marketer, client_for):
    reachable_customer(display_name="Sendable Sue")
    held = reachable_customer(display_name="Promised Pat")
    CommitmentFactory(case__customer=held, customer=held)
    CustomerFactory(display_name="Unreachable Ursula")
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, owner=marketer, topics=[])
    client = client_for(marketer)
    response = client.post(
        reverse("campaigns:preflight", args=[campaign.pk]), headers={"HX-Request": "true"}
    )
    text = response.content.decode()
    assert "contact policy <strong>v1</strong>" in text
    assert '<tr data-outcome="open_commitment"' in text
    assert "Open service commitment" in text
    assert "service has promised this customer something" in text
    drill = client.get(
        reverse("campaigns:preflight_customers", args=[campaign.pk, "open_commitment"])
    )
    assert b"Promised Pat" in drill.content
    assert b"Sendable Sue" not in drill.content


def test_preflight_drill_down_pages_by_50(marketer, client_for):
    for _ in range(51):
        CustomerFactory()  # no identity on email
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, owner=marketer)
    client = client_for(marketer)
    url = reverse("campaigns:preflight_customers", args=[campaign.pk, "no_identity"])
    first = client.get(url).content.decode()
    assert first.count("<li hx-disable>") == 50
    assert "Show more" in first
    after = first.split("?after=")[1].split('"')[0]
    second = client.get(f"{url}?after={after}", headers={"HX-Request": "true"}).content.decode()
    assert second.count("<li hx-disable>") == 1
    assert "Show more" not in second


def test_owner_schedules_the_draft(marketer, client_for):
    campaign = CampaignFactory(
        status=CampaignStatus.DRAFT,
        owner=marketer,
        schedule_mode="at",
        scheduled_at=timezone.now() + timedelta(hours=1),
    )
    response = client_for(marketer).post(
        reverse("campaigns:action", args=[campaign.pk, "schedule"]), headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("campaigns:detail", args=[campaign.pk])
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.SCHEDULED


def test_another_marketer_cannot_schedule_or_cancel_the_draft(make_user, client_for):
    owner, other = make_user("marketer"), make_user("marketer")
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, owner=owner, schedule_mode="now")
    client = client_for(other)
    for action in ("schedule", "cancel"):
        url = reverse("campaigns:action", args=[campaign.pk, action])
        assert client.post(url).status_code == 403
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.DRAFT


def test_scheduling_twice_says_why_and_changes_nothing(marketer, client_for):
    campaign = CampaignFactory(status=CampaignStatus.CANCELLED, owner=marketer)
    url = reverse("campaigns:action", args=[campaign.pk, "schedule"])
    response = client_for(marketer).post(url)
    assert response.status_code == 400
    assert b"cannot be scheduled" in response.content
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.CANCELLED


def test_an_unknown_action_is_404(marketer, client_for):
    campaign = CampaignFactory(status=CampaignStatus.DRAFT, owner=marketer)
    url = reverse("campaigns:action", args=[campaign.pk, "launch"])
    assert client_for(marketer).post(url).status_code == 404


# --- the live campaign page --------------------------------------------------------------------


def live_campaign(owner):
    campaign = CampaignFactory(status=CampaignStatus.SENDING, owner=owner)
    Touch.objects.create(campaign=campaign, customer=CustomerFactory(), status="sent")
    Touch.objects.create(campaign=campaign, customer=CustomerFactory(), status="pending")
    for _ in range(2):
        Touch.objects.create(
            campaign=campaign, customer=CustomerFactory(), status="held", reason="open_commitment"
        )
    Touch.objects.create(
        campaign=campaign, customer=CustomerFactory(), status="suppressed", reason="no_consent"
    )
    return campaign


def test_live_page_shows_progress_holds_by_reason_and_subscribes_to_the_campaign(
    marketer, client_for
):
    campaign = live_campaign(marketer)
    page = client_for(marketer).get(reverse("campaigns:detail", args=[campaign.pk]))
    text = page.content.decode()
    assert '<span data-field="sent">1</span> sent' in text
    assert '<span data-field="held">2</span> held' in text
    assert '<span data-field="remaining">1</span> remaining' in text
    assert '<span class="count" data-count="2">2</span> customers' in text
    assert "Ask the CCO for an override" in text
    assert f"campaign.{campaign.pk}" in text  # the websocket joins the campaign's group


def test_pushed_progress_equals_the_refetched_fragment(marketer, client_for):
    campaign = live_campaign(marketer)
    pushed = render_campaign_progress(marketer, campaign_id=campaign.pk)
    fetched = client_for(marketer).get(reverse("campaigns:progress", args=[campaign.pk]))
    assert pushed == fetched.content.decode()
    assert 'id="campaign-progress"' in pushed and 'id="campaign-holds"' in pushed


def test_the_pushed_progress_is_empty_for_service(agent):
    campaign = live_campaign(None)
    assert render_campaign_progress(agent, campaign_id=campaign.pk) == ""


def test_marketer_asks_the_cco_for_an_override_from_the_campaign_page(marketer, client_for):
    campaign = live_campaign(marketer)
    client = client_for(marketer)
    url = reverse("campaigns:override_request", args=[campaign.pk])
    refused = client.post(url, {"reason": "open_commitment", "justification": "  "})
    assert refused.status_code == 400
    assert b"justification-open_commitment-error" in refused.content
    assert not Override.objects.exists()
    inline = client.post(
        url, {"reason": "open_commitment", "justification": ""}, headers={"HX-Request": "true"}
    )
    assert inline.status_code == 200
    assert b'id="campaign-holds"' in inline.content
    assert b"justification-open_commitment-error" in inline.content
    assert not Override.objects.exists()
    response = client.post(
        url, {"reason": "open_commitment", "justification": "They asked for the offer."}
    )
    assert response.status_code == 302
    assert response["Location"].endswith("#overrides")
    override = Override.objects.get()
    assert (override.reason, override.status, override.requested_by) == (
        "open_commitment",
        "pending",
        marketer,
    )
    page = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "Override: Waiting for the CCO" in page


def test_seed_demo_adds_a_segment_a_draft_and_a_scheduled_campaign_once(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=False):
        call_command("seed_demo", stdout=StringIO())
        call_command("seed_demo", stdout=StringIO())
    campaigns = dict(Campaign.objects.values_list("name", "status"))
    assert campaigns == {
        "Kettle descaler offer": "draft",
        "Spring toaster upgrade": "scheduled",
    }
    assert Segment.objects.get().name == "Paying customers"
