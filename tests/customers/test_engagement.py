"""Engagement and value: each formula against hand-computed numbers, the nightly job (set-based,
safe to run twice, tombstones left out), and the console's macro and micro views."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from customers import engagement
from customers.models import Customer, Engagement, Interaction
from tests.campaigns.factories import SegmentFactory
from tests.cases.factories import CustomerFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def entry(customer, kind, *, direction="in", channel="web", days_ago=1, body="", **data):
    return Interaction.objects.create(
        customer=customer,
        channel=channel,
        kind=kind,
        direction=direction,
        occurred_at=NOW - timedelta(days=days_ago),
        body_text=body,
        data=data,
    )


@pytest.fixture
def ann():
    """Hand-computed, over the 365-day window: 3 visits + 1 open = involvement 4; 2 inbound
    messages + 3 purchases = interaction 5; words: thanks, great, love (P=3) and slow (N=1) →
    (3-1)/(3+1+1) = 0.4; 2 public posts reaching 1500 + 500 → 2 + 2000/1000 = 4.0; value, ever:
    30.50 + 19.50 - 5 (a refund) = 45.00 (an amount that is not a number counts 0)."""
    ann = CustomerFactory(display_name="Ann", lifecycle_stage="loyal")
    entry(ann, "visit")
    entry(ann, "visit")
    entry(ann, "visit", days_ago=400)  # outside the window
    entry(ann, "campaign_touch", direction="out", channel="email", opened=True)
    entry(ann, "campaign_touch", direction="out", channel="email")  # not opened
    entry(ann, "message", channel="email", body="Thanks, great service! I love it.")
    entry(ann, "message", channel="x", body="Delivery was slow", public=True, reach=1500)
    entry(ann, "message", direction="out", channel="email", body="terrible awful")  # ours
    entry(ann, "note", direction="internal", channel="system", public=True, reach=10**6)
    entry(ann, "purchase", amount="30.50")
    entry(ann, "purchase", amount=19.5)
    entry(ann, "purchase", days_ago=500, amount=-5)  # value counts ever, not the window
    entry(ann, "visit", channel="facebook", public=True, reach=500)
    entry(ann, "purchase", amount="not a number")
    return ann


def test_formulas_match_hand_computed_values():
    assert engagement.word_counts("Thanks, great service! I love it. Slow though") == (3, 1)
    assert engagement.intimacy_score(3, 1) == 0.4
    assert engagement.intimacy_score(0, 0) == 0.0
    assert engagement.intimacy_score(0, 4) == -0.8
    assert engagement.influence_score(2, 2000) == 4.0
    assert engagement.influence_score(1, 250) == 1.25


def test_the_job_computes_each_measure_from_the_timeline(ann):
    run = engagement.compute_engagement(now=NOW)
    assert run.customers == 1
    assert run.interactions == Interaction.objects.count()
    row = Engagement.objects.get(customer=ann)
    assert (row.visits, row.opens, row.involvement) == (3, 1, 4)
    assert (row.messages, row.purchases, row.interaction) == (2, 3, 5)
    assert (row.positive_words, row.negative_words, row.intimacy) == (3, 1, 0.4)
    assert (row.public_mentions, row.reach, row.influence) == (2, 2000, 4.0)
    assert row.lifetime_value == Decimal("45.00")


def test_running_twice_writes_the_same_numbers_and_leaves_tombstones_out(ann):
    engagement.compute_engagement(now=NOW)
    quiet = CustomerFactory()
    gone = CustomerFactory()
    engagement.compute_engagement(now=NOW)
    Customer.objects.filter(pk=gone.pk).update(merged_into=ann)
    engagement.compute_engagement(now=NOW)
    assert sorted(Engagement.objects.values_list("customer_id", flat=True)) == sorted(
        [ann.pk, quiet.pk]
    )
    assert Engagement.objects.get(customer=quiet).lifetime_value == 0
    assert Engagement.objects.get(customer=ann).involvement == 4


def test_the_celery_task_runs_the_job(ann):
    from customers.tasks import compute_engagement_task

    result = compute_engagement_task()
    assert result["customers"] == 1
    assert Engagement.objects.get(customer=ann).interaction == 5


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer"])
def test_engagement_page_is_the_ccos_alone(client_for, make_user, role):
    assert client_for(make_user(role)).get("/console/engagement/").status_code == 403


def test_console_shows_averages_and_equity_per_stage_and_segment(client_for, cco, ann):
    bob = CustomerFactory(display_name="Bob", lifecycle_stage="loyal")
    entry(bob, "purchase", amount="100")
    CustomerFactory(display_name="Cy", lifecycle_stage="lead")
    SegmentFactory(name="Loyal ones", definition={"match": "all", "conditions": [
        {"field": "lifecycle_stage", "op": "in", "value": ["loyal"]}]})  # fmt: skip
    engagement.compute_engagement(now=NOW)
    page = client_for(cco).get("/console/engagement/").text
    loyal = page.split('data-group="stage:loyal"')[1].split("</tr>")[0]
    # Ann 45 + Bob 100: equity 145, average value 72.50, average involvement (4+0)/2 = 2.0.
    assert 'data-testid="equity">145.00<' in loyal
    assert '<td class="num">72.50</td>' in loyal
    assert '<td class="num">2.0</td>' in loyal
    lead = page.split('data-group="stage:lead"')[1].split("</tr>")[0]
    assert 'data-testid="equity">0.00<' in lead
    segment = page.split('id="by-segment"')[1].split("</section>")[0]
    assert "Loyal ones" in segment
    assert 'data-testid="equity">145.00<' in segment
    assert "How is this computed?" in page
    assert "÷ (P + N + 1)" in page


def test_drill_down_lists_customers_by_value_in_keyset_pages(client_for, cco, monkeypatch):
    from workbench.console import engagement_pages

    monkeypatch.setattr(engagement_pages, "PAGE_SIZE", 2)
    for name, amount in (("Low", "5"), ("High", "500"), ("Mid", "50")):
        entry(
            CustomerFactory(display_name=name, lifecycle_stage="customer"),
            "purchase",
            amount=amount,
        )
    engagement.compute_engagement(now=NOW)
    client = client_for(cco)
    first = client.get("/console/engagement/?group=stage:customer").text
    # Names between tags: three letters alone could sit in the page's random CSRF token.
    assert first.index(">High<") < first.index(">Mid<")
    assert ">Low<" not in first
    next_url = first.split('<a href="')[-1].split('" rel="next"')[0].replace("&amp;", "&")
    second = client.get("/console/engagement/" + next_url).text
    assert ">Low<" in second and ">High<" not in second
    assert client.get("/console/engagement/?group=stage:nonsense").status_code == 404


def test_before_the_first_run_the_page_says_so(client_for, cco):
    page = client_for(cco).get("/console/engagement/").text
    assert "the nightly job has not run" in page
    assert "it has not run yet" in page


def test_engagement_pages_do_not_query_per_customer(client_for, cco, django_assert_num_queries):
    for index in range(3):
        entry(CustomerFactory(lifecycle_stage="customer"), "purchase", amount=str(index))
    SegmentFactory(name="Everyone")
    engagement.compute_engagement(now=NOW)
    client = client_for(cco)
    client.get("/console/engagement/")
    with django_assert_num_queries(8) as macro:
        client.get("/console/engagement/")
    with django_assert_num_queries(6):
        client.get("/console/engagement/?group=stage:customer")
    for index in range(5):
        entry(CustomerFactory(lifecycle_stage="customer"), "purchase", amount=str(index))
    engagement.compute_engagement(now=NOW)
    with django_assert_num_queries(len(macro)):
        client.get("/console/engagement/")
    with django_assert_num_queries(6):
        client.get("/console/engagement/?group=stage:customer")
