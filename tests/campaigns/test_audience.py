"""Segments: each condition selects the right customers in one query; bad definitions are refused
with one message per bad condition; merged and erased customers never count."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns.audience import FIELDS, customers_in_segment, segment_count, validate_definition
from tests.campaigns.factories import ConsentFactory, IdentityFactory, PurchaseFactory
from tests.cases.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def ids(condition, match="all") -> set[int]:
    definition = {"match": match, "conditions": [condition] if condition else []}
    return set(customers_in_segment(definition).values_list("pk", flat=True))


def test_an_empty_definition_is_every_live_customer_and_never_a_tombstone_or_erased():
    live, merged, erased = CustomerFactory(), CustomerFactory(), CustomerFactory()
    merged.merged_into = live
    merged.save(update_fields=["merged_into"])
    erased.erased_at = timezone.now()
    erased.save(update_fields=["erased_at"])
    assert ids(None) == {live.pk}
    assert segment_count({"match": "all", "conditions": []}) == 1


def test_attribute_equals_contains_and_in():
    pro = CustomerFactory(attributes={"plan": "pro", "products": ["router", "modem"]})
    team = CustomerFactory(attributes={"plan": "team", "note": "Big Router fan"})
    CustomerFactory(attributes={})
    assert ids({"field": "attribute", "key": "plan", "op": "equals", "value": "pro"}) == {pro.pk}
    assert ids({"field": "attribute", "key": "plan", "op": "in", "value": ["pro", "team"]}) == {
        pro.pk,
        team.pk,
    }
    assert ids({"field": "attribute", "key": "products", "op": "contains", "value": "router"}) == {
        pro.pk
    }
    assert ids({"field": "attribute", "key": "note", "op": "contains", "value": "router"}) == {
        team.pk
    }


def test_lifecycle_stage_timezone_and_region():
    loyal = CustomerFactory(lifecycle_stage="loyal", timezone="Europe/Paris")
    lead = CustomerFactory(lifecycle_stage="lead", timezone="America/New_York")
    CustomerFactory(lifecycle_stage="churned", timezone="")
    assert ids({"field": "lifecycle_stage", "op": "in", "value": ["loyal", "lead"]}) == {
        loyal.pk,
        lead.pk,
    }
    assert ids({"field": "timezone", "op": "in", "value": ["America/New_York"]}) == {lead.pk}
    assert ids({"field": "region", "op": "in", "value": ["Europe"]}) == {loyal.pk}


def test_consent_is_the_latest_row_and_not_granted_includes_never_asked():
    granted, withdrawn, never = CustomerFactory(), CustomerFactory(), CustomerFactory()
    now = timezone.now()
    ConsentFactory(customer=granted, recorded_at=now - timedelta(days=2))
    ConsentFactory(customer=withdrawn, recorded_at=now - timedelta(days=2))
    ConsentFactory(customer=withdrawn, is_granted=False, recorded_at=now - timedelta(days=1))
    condition = {"field": "consent", "value": "marketing_email"}
    assert ids(condition | {"op": "granted"}) == {granted.pk}
    assert ids(condition | {"op": "not_granted"}) == {withdrawn.pk, never.pk}


def test_identity_on_a_channel():
    on_x, off_x = CustomerFactory(), CustomerFactory()
    IdentityFactory(customer=on_x, channel="x", handle="@on_x")
    assert ids({"field": "identity", "op": "has", "value": "x"}) == {on_x.pk}
    assert ids({"field": "identity", "op": "has_not", "value": "x"}) == {off_x.pk}


def test_behaviour_from_the_timeline():
    recent, old, silent = CustomerFactory(), CustomerFactory(), CustomerFactory()
    PurchaseFactory(customer=recent, occurred_at=timezone.now() - timedelta(days=10))
    PurchaseFactory(customer=old, occurred_at=timezone.now() - timedelta(days=100))
    PurchaseFactory(
        customer=old, kind="message", channel="whatsapp",
        occurred_at=timezone.now() - timedelta(days=5),
    )  # fmt: skip
    assert ids({"field": "purchased", "op": "within_days", "value": 90}) == {recent.pk}
    assert ids({"field": "purchased", "op": "not_within_days", "value": 90}) == {old.pk, silent.pk}
    assert ids({"field": "no_interaction", "op": "at_least_days", "value": 30}) == {silent.pk}
    on_whatsapp = {"field": "interaction_on_channel", "channel": "whatsapp", "op": "within_days"}
    assert ids(on_whatsapp | {"value": 7}) == {old.pk}


def test_match_any_combines_with_or():
    a = CustomerFactory(lifecycle_stage="loyal")
    b = CustomerFactory(attributes={"plan": "pro"})
    CustomerFactory()
    definition = {
        "match": "any",
        "conditions": [
            {"field": "lifecycle_stage", "op": "in", "value": ["loyal"]},
            {"field": "attribute", "key": "plan", "op": "equals", "value": "pro"},
        ],
    }
    assert set(customers_in_segment(definition).values_list("pk", flat=True)) == {a.pk, b.pk}


def test_a_segment_is_one_query(django_assert_num_queries):
    CustomerFactory()
    definition = {
        "match": "all",
        "conditions": [
            {"field": "consent", "op": "granted", "value": "marketing_email"},
            {"field": "purchased", "op": "within_days", "value": 30},
            {"field": "identity", "op": "has", "value": "email"},
        ],
    }
    with django_assert_num_queries(1):
        assert list(customers_in_segment(definition)) == []


def test_a_bad_definition_names_each_bad_condition():
    with pytest.raises(ValidationError) as error:
        validate_definition(
            {
                "match": "most",
                "conditions": [
                    {"field": "shoe_size", "op": "equals", "value": 9},
                    {"field": "lifecycle_stage", "op": "in", "value": ["vip"]},
                    {"field": "purchased", "op": "within_days", "value": "-3"},
                    {"field": "attribute", "key": "a__b", "op": "equals", "value": "x"},
                    {"field": "consent", "op": "granted", "value": "telepathy"},
                ],
            }
        )
    assert error.value.messages == [
        "Match must be 'all' or 'any', not 'most'.",
        "Condition 1: unknown field 'shoe_size'.",
        "Condition 2: lifecycle stage: unknown 'vip'.",
        "Condition 3: purchased needs a whole number of days from 1 to 3650.",
        "Condition 4: an attribute name is letters, digits and single underscores (e.g. plan).",
        "Condition 5: consent: 'telepathy' is not one of marketing_email, marketing_sms, "
        "marketing_social, marketing_whatsapp, profiling.",
    ]


def test_validation_cleans_values():
    cleaned = validate_definition(
        {"conditions": [{"field": "lifecycle_stage", "op": "in", "value": "lead, loyal,lead"},
                        {"field": "no_interaction", "op": "at_least_days", "value": "30"}]}
    )  # fmt: skip
    assert cleaned == {
        "match": "all",
        "conditions": [
            {"field": "lifecycle_stage", "op": "in", "value": ["lead", "loyal"]},
            {"field": "no_interaction", "op": "at_least_days", "value": 30},
        ],
    }


def test_fields_describe_every_condition_for_the_builder():
    keys = {spec["field"] for spec in FIELDS}
    assert keys == {"attribute", "lifecycle_stage", "consent", "identity", "timezone", "region",
                    "purchased", "no_interaction", "interaction_on_channel"}  # fmt: skip
    for spec in FIELDS:
        assert spec["label"] and spec["ops"] and spec["value_type"]
