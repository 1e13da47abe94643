"""Property test of the contact policy: for random customers, cases, commitments, consents, past
touches and policies, every touch the send check lets through satisfies every rule, as an
independent Python reading of DESIGN.md's rules says; and every other touch carries the first
reason that reading finds. NULLs are in the data (solved cases without `solved_at`, broken
commitments without `resolved_at`, sent touches without `sent_at`, customers without a time zone)
so a NOT IN could not hide among the NOT EXISTS."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, time, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.models import ContactPolicy, Touch
from campaigns.policy import evaluate_touch, materialise_touches, preflight
from tests.campaigns.factories import (
    CampaignFactory,
    ConsentFactory,
    IdentityFactory,
    SentTouchFactory,
)
from tests.cases.factories import CaseFactory, CommitmentFactory, CustomerFactory, QueueFactory

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
TOPICS = ("upgrade", "billing", "complaint")
ZONES = ("", "UTC", "Asia/Tokyo", "America/New_York", "Not/AZone")
OPEN = ("new", "open", "pending")

topic_lists = st.lists(st.sampled_from(TOPICS), max_size=2, unique=True)
days_ago = st.one_of(st.none(), st.integers(min_value=0, max_value=12))

cases = st.fixed_dictionaries({
    "status": st.sampled_from(("new", "open", "pending", "solved", "closed")),
    "priority": st.sampled_from(("low", "normal", "high", "urgent")),
    "topics": topic_lists,
    "pauses_marketing": st.booleans(),
    "solved_days_ago": days_ago,
})  # fmt: skip
commitments = st.fixed_dictionaries({
    "status": st.sampled_from(("open", "kept", "broken", "withdrawn")),
    "topics": topic_lists,
    "resolved_days_ago": days_ago,
})  # fmt: skip
customers = st.fixed_dictionaries({
    "timezone": st.sampled_from(ZONES),
    # Mostly reachable people, so the rules after identity and consent get their turn.
    "has_identity": st.sampled_from((True, True, True, True, False)),
    # (granted, minutes ago), in any order: the latest recorded wins.
    "consents": st.lists(st.tuples(st.sampled_from((True, True, True, False)),
                                   st.integers(0, 5)), min_size=1, max_size=3),
    "cases": st.lists(cases, max_size=2),
    "commitments": st.lists(commitments, max_size=1),
    "sent_days_ago": st.lists(days_ago, max_size=3),
})  # fmt: skip
policies = st.fixed_dictionaries({
    "commitment_hold_scope": st.sampled_from(("all", "overlapping_topics", "off")),
    "complaint_priorities": st.lists(st.sampled_from(("high", "urgent")), unique=True),
    "complaint_topics": st.sampled_from(([], ["complaint"])),
    "cool_off_days": st.sampled_from((0, 3, 7)),
    "is_topic_conflict_on": st.booleans(),
    "frequency_cap_touches": st.sampled_from((0, 1, 2)),
    "frequency_cap_days": st.sampled_from((1, 7)),
    "quiet_hours_start": st.sampled_from((time(21), time(9), time(0))),
    "quiet_hours_end": st.sampled_from((time(8), time(17), time(0))),
    "is_agent_pause_on": st.booleans(),
})  # fmt: skip


def build(people: list[dict], queue) -> list:
    built = []
    for number, person in enumerate(people):
        customer = CustomerFactory(timezone=person["timezone"])
        if person["has_identity"]:
            IdentityFactory(customer=customer, handle=f"p{customer.pk}-{number}@example.test")
        for granted, minutes in person["consents"]:
            ConsentFactory(customer=customer, is_granted=granted,
                           recorded_at=NOW - timedelta(minutes=minutes))  # fmt: skip
        for case in person["cases"]:
            solved_at = None
            if case["status"] in ("solved", "closed") and case["solved_days_ago"] is not None:
                solved_at = NOW - timedelta(days=case["solved_days_ago"], hours=1)
            CaseFactory(customer=customer, queue=queue, status=case["status"],
                        priority=case["priority"], topics=case["topics"],
                        pauses_marketing=case["pauses_marketing"], solved_at=solved_at)  # fmt: skip
        for commitment in person["commitments"]:
            resolved_at = None
            if commitment["status"] != "open" and commitment["resolved_days_ago"] is not None:
                resolved_at = NOW - timedelta(days=commitment["resolved_days_ago"], hours=1)
            CommitmentFactory(case=CaseFactory(customer=customer, queue=queue, status="solved"),
                              status=commitment["status"], topics=commitment["topics"],
                              resolved_at=resolved_at)  # fmt: skip
        for days in person["sent_days_ago"]:
            sent_at = None if days is None else NOW - timedelta(days=days, hours=1)
            SentTouchFactory(customer=customer, sent_at=sent_at)
        built.append(customer)
    return built


def expected_reasons(customer, campaign, policy: ContactPolicy) -> list[str]:
    """Every rule that stops the touch now, in the documented precedence, read from the rows."""
    reasons = []
    consents = sorted(customer.consents.filter(purpose="marketing_email"),
                      key=lambda c: (c.recorded_at, c.pk))  # fmt: skip
    open_cases = [c for c in case_rows(customer) if c.status in OPEN]
    all_cases = case_rows(customer)
    commitments = list(commitment_rows(customer))
    campaign_topics = set(campaign.topics)

    def is_complaint(case) -> bool:
        return case.priority in policy.complaint_priorities or bool(
            set(case.topics) & set(policy.complaint_topics)
        )

    if not customer.identities.filter(channel="email").exists():
        reasons.append("no_identity")
    if not consents or not consents[-1].is_granted:
        reasons.append("no_consent")
    if policy.is_topic_conflict_on and any(set(c.topics) & campaign_topics for c in open_cases):
        reasons.append("topic_conflict")
    if policy.is_agent_pause_on and any(c.pauses_marketing for c in open_cases):
        reasons.append("agent_pause")
    if policy.commitment_hold_scope != "off":
        for commitment in commitments:
            overlaps = (not commitment.topics or not campaign_topics
                        or set(commitment.topics) & campaign_topics)  # fmt: skip
            if commitment.status == "open" and (policy.commitment_hold_scope == "all" or overlaps):
                reasons.append("open_commitment")
                break
    if any(is_complaint(c) for c in open_cases):
        reasons.append("open_complaint")
    if policy.cool_off_days:
        since = NOW - timedelta(days=policy.cool_off_days)
        cooling = any(
            c.status in ("solved", "closed") and c.solved_at and c.solved_at > since
            and is_complaint(c) for c in all_cases
        ) or any(
            m.status == "broken" and m.resolved_at and m.resolved_at > since for m in commitments
        )  # fmt: skip
        if cooling:
            reasons.append("cool_off")
    if policy.frequency_cap_touches:
        since = NOW - timedelta(days=policy.frequency_cap_days)
        sent = Touch.objects.filter(customer=customer, status="sent", sent_at__gt=since).count()
        if sent >= policy.frequency_cap_touches:
            reasons.append("frequency_cap")
    if in_quiet_hours(customer.timezone, policy):
        reasons.append("quiet_hours")
    return reasons


def case_rows(customer):
    from cases.models import Case

    return list(Case.objects.filter(customer=customer))


def commitment_rows(customer):
    from cases.models import Commitment

    return Commitment.objects.filter(customer=customer)


def in_quiet_hours(zone: str, policy: ContactPolicy) -> bool:
    try:
        tz = zoneinfo.ZoneInfo(zone) if zone else UTC
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = UTC
    local = NOW.astimezone(tz).time()
    start, end = policy.quiet_hours_start, policy.quiet_hours_end
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end


@pytest.mark.django_db
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(people=st.lists(customers, min_size=1, max_size=6), rules=policies,
       campaign_topics=topic_lists)  # fmt: skip
def test_every_touch_the_send_check_lets_through_satisfies_every_rule(
    people, rules, campaign_topics
):
    with transaction.atomic():
        ContactPolicy.objects.create(version=ContactPolicy.objects.count() + 100, **rules)
        policy = ContactPolicy.objects.order_by("-version").first()
        queue = QueueFactory()
        built = build(people, queue)
        campaign = CampaignFactory(topics=campaign_topics)

        counts = preflight(campaign=campaign, now=NOW).counts
        assert materialise_touches(campaign=campaign, now=NOW) == len(built)
        touches = {t.customer_id: t for t in Touch.objects.filter(campaign=campaign)}
        seen: dict[str, int] = {}
        for customer in built:
            touch = touches[customer.pk]
            verdict = evaluate_touch(touch=touch, now=NOW, policy=policy)
            reasons = expected_reasons(customer, campaign, policy)
            if verdict is None:
                # The guarantee: nothing that any rule forbids is sent.
                assert reasons == [], (customer.pk, reasons)
                assert touch.status == "pending"
                seen["send"] = seen.get("send", 0) + 1
            else:
                assert verdict[0] == reasons[0], (verdict, reasons)
                seen[verdict[0]] = seen.get(verdict[0], 0) + 1
                expected_status = (
                    "pending" if verdict[0] == "quiet_hours"
                    else "suppressed" if verdict[0] in ("no_identity", "no_consent",
                                                        "topic_conflict")
                    else "held"
                )  # fmt: skip
                assert (touch.status, touch.reason or "quiet_hours") == (
                    expected_status,
                    verdict[0],
                )
        assert seen == counts
        transaction.set_rollback(True)
