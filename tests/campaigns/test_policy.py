"""The contact policy: each rule held, suppressed or delayed with its reason, and released when it
clears; precedence, overrides, preflight, materialisation and the re-check when service acts."""

from datetime import UTC, datetime, time, timedelta

import pytest
from django.db import transaction
from django.utils.timezone import now as timezone_now

from campaigns.models import CommitmentHoldScope, ContactPolicy, Touch
from campaigns.policy import (
    current_policy,
    evaluate_touch,
    materialise_touches,
    preflight,
    preflight_customers,
    release_held_touches,
)
from cases.commitments import keep_commitment, pause_marketing, record_commitment
from cases.holds import lock_marketing_state
from cases.lifecycle import change_status
from tests.campaigns.factories import (
    CampaignFactory,
    ConsentFactory,
    IdentityFactory,
    OverrideFactory,
    SegmentFactory,
    SentTouchFactory,
    TouchFactory,
    reachable_customer,
)
from tests.cases.factories import (
    CaseFactory,
    CommitmentFactory,
    CustomerFactory,
    QueueFactory,
    ensure_case_events_render,
)
from workbench import realtime

# Noon UTC today: inside everyone's day in UTC, and "now" for factories' relative times.
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fragments_render():
    ensure_case_events_render()
    if realtime.fragment_for("campaign.progress") is None:
        realtime.register_fragment("campaign.progress", lambda viewer, **data: "")


@pytest.fixture
def campaign():
    return CampaignFactory(topics=["upgrade"])


def verdict_for(campaign, customer, *, now=NOW, policy=None):
    touch, _ = Touch.objects.get_or_create(campaign=campaign, customer=customer)
    return evaluate_touch(touch=touch, now=now, policy=policy)


def new_policy(**changes) -> ContactPolicy:
    """An unsaved next version of the policy with `changes`."""
    policy = current_policy()
    policy.pk, policy.version = None, policy.version + 1
    for name, value in changes.items():
        setattr(policy, name, value)
    return policy


def test_a_reachable_customer_may_be_sent_to(campaign):
    assert verdict_for(campaign, reachable_customer()) is None


# --- 1. open commitment ------------------------------------------------------------------------


def test_an_open_commitment_holds_the_customer_until_it_is_kept(campaign, agent):
    customer = reachable_customer()
    commitment = CommitmentFactory(
        case=CaseFactory(customer=customer, status="open", queue=QueueFactory(members=[agent])),
        due_at=datetime(2026, 12, 3, 10, tzinfo=UTC),
    )
    touch = TouchFactory(campaign=campaign, customer=customer)

    assert evaluate_touch(touch=touch, now=NOW) == (
        "open_commitment",
        f"Refund promised on case #{commitment.case_id}, due 3 Dec 2026",
    )
    keep_commitment(commitment=commitment, actor=agent, now=NOW)
    assert evaluate_touch(touch=touch, now=NOW) is None


def test_with_overlapping_topics_scope_only_a_commitment_on_the_campaigns_topics_holds(campaign):
    scoped = new_policy(commitment_hold_scope=CommitmentHoldScope.OVERLAPPING_TOPICS)
    billing, upgrade, unknown = (reachable_customer() for _ in range(3))
    CommitmentFactory(case=CaseFactory(customer=billing), topics=["billing"])
    CommitmentFactory(case=CaseFactory(customer=upgrade), topics=["upgrade", "billing"])
    CommitmentFactory(case=CaseFactory(customer=unknown), topics=[])

    assert verdict_for(campaign, billing, policy=scoped) is None
    assert verdict_for(campaign, upgrade, policy=scoped)[0] == "open_commitment"
    # A promise about nothing in particular holds everything: service wins when unsure.
    assert verdict_for(campaign, unknown, policy=scoped)[0] == "open_commitment"


def test_with_the_commitment_hold_off_an_open_commitment_holds_nothing(campaign):
    customer = reachable_customer()
    CommitmentFactory(case=CaseFactory(customer=customer))
    policy = new_policy(commitment_hold_scope=CommitmentHoldScope.OFF)
    assert verdict_for(campaign, customer, policy=policy) is None


# --- 2. open complaint and 3. cool-off ---------------------------------------------------------


def test_an_open_complaint_holds_then_cools_off_for_the_policys_days_after_it_is_solved(
    campaign, agent
):
    customer = reachable_customer()
    case = CaseFactory(
        customer=customer, status="open", priority="high", queue=QueueFactory(members=[agent])
    )
    touch = TouchFactory(campaign=campaign, customer=customer)
    assert evaluate_touch(touch=touch, now=NOW) == (
        "open_complaint",
        f"Open complaint: case #{case.pk} (high priority)",
    )

    change_status(case=case, status="solved", actor=agent, now=NOW)

    reason, detail = evaluate_touch(touch=touch, now=NOW + timedelta(hours=1))
    assert reason == "cool_off"
    assert detail.startswith("Cool-off until ") and f"complaint case #{case.pk}" in detail
    assert evaluate_touch(touch=touch, now=NOW + timedelta(days=6, hours=23)) is not None
    assert evaluate_touch(touch=touch, now=NOW + timedelta(days=7, minutes=1)) is None


def test_a_case_with_a_complaint_topic_holds_and_a_normal_case_does_not(campaign):
    complaining, asking = reachable_customer(), reachable_customer()
    CaseFactory(customer=complaining, status="pending", topics=["complaint"])
    CaseFactory(customer=asking, status="open", topics=["delivery"])
    assert verdict_for(campaign, complaining)[0] == "open_complaint"
    assert verdict_for(campaign, asking) is None


def test_a_broken_commitment_starts_a_cool_off(campaign):
    customer = reachable_customer()
    CommitmentFactory(
        case=CaseFactory(customer=customer, status="solved", solved_at=NOW - timedelta(days=30)),
        status="broken",
        resolved_at=NOW - timedelta(days=2),
    )
    reason, detail = verdict_for(campaign, customer)
    assert reason == "cool_off"
    assert "after a broken refund commitment" in detail
    touch = Touch.objects.get(customer=customer)
    assert evaluate_touch(touch=touch, now=NOW + timedelta(days=6)) is None


# --- 4. topic conflict -------------------------------------------------------------------------


def test_an_open_case_about_the_campaigns_topic_suppresses_it(campaign):
    customer = reachable_customer()
    case = CaseFactory(customer=customer, status="open", topics=["billing", "upgrade"])
    assert verdict_for(campaign, customer) == (
        "topic_conflict",
        f"Open case #{case.pk} is about upgrade",
    )
    other = CampaignFactory(topics=["newsletter"])
    assert verdict_for(other, customer) is None


def test_with_topic_conflict_off_the_case_topic_does_not_suppress(campaign):
    customer = reachable_customer()
    CaseFactory(customer=customer, status="open", topics=["upgrade"])
    assert verdict_for(campaign, customer, policy=new_policy(is_topic_conflict_on=False)) is None


# --- 5. consent --------------------------------------------------------------------------------


def test_without_consent_for_the_channels_purpose_nothing_is_sent(campaign):
    customer = CustomerFactory(timezone="UTC")
    IdentityFactory(customer=customer)
    ConsentFactory(customer=customer, purpose="marketing_sms")
    assert verdict_for(campaign, customer) == ("no_consent", "No consent to marketing by email")


def test_the_latest_consent_row_wins_withdrawal_at_once_and_a_new_grant_after(campaign):
    customer = reachable_customer()
    touch = TouchFactory(campaign=campaign, customer=customer)
    ConsentFactory(customer=customer, is_granted=False, recorded_at=NOW - timedelta(minutes=1))
    assert evaluate_touch(touch=touch, now=NOW)[0] == "no_consent"
    ConsentFactory(customer=customer, is_granted=True, recorded_at=NOW - timedelta(seconds=1))
    assert evaluate_touch(touch=touch, now=NOW) is None


def test_a_social_campaign_needs_social_consent_and_an_identity_on_its_channel():
    customer = reachable_customer()
    campaign = CampaignFactory(channel="whatsapp", topics=[])
    assert verdict_for(campaign, customer) == ("no_identity", "No WhatsApp identity")
    IdentityFactory(customer=customer, channel="whatsapp", handle="+447700900123")
    assert Touch.objects.get(customer=customer).pk
    touch = Touch.objects.get(customer=customer)
    assert evaluate_touch(touch=touch, now=NOW)[0] == "no_consent"
    ConsentFactory(customer=customer, purpose="marketing_whatsapp")
    assert evaluate_touch(touch=touch, now=NOW) is None


# --- 6. frequency cap --------------------------------------------------------------------------


def test_the_frequency_cap_holds_after_n_touches_in_the_window_and_releases_after(campaign):
    customer = reachable_customer()
    for days_ago in (1, 3, 6):
        SentTouchFactory(customer=customer, sent_at=NOW - timedelta(days=days_ago))
    touch = TouchFactory(campaign=campaign, customer=customer)
    assert evaluate_touch(touch=touch, now=NOW) == (
        "frequency_cap",
        "3 marketing touches sent in the last 7 days",
    )
    # The oldest one leaves the rolling window a day later.
    assert evaluate_touch(touch=touch, now=NOW + timedelta(days=1, minutes=1)) is None


def test_two_touches_in_the_window_do_not_reach_a_cap_of_three(campaign):
    customer = reachable_customer()
    SentTouchFactory(customer=customer, sent_at=NOW - timedelta(days=1))
    SentTouchFactory(customer=customer, sent_at=NOW - timedelta(days=2))
    SentTouchFactory(customer=customer, sent_at=NOW - timedelta(days=9))
    TouchFactory(customer=customer, status="held", reason="open_commitment")
    assert verdict_for(campaign, customer) is None


# --- 7. quiet hours ----------------------------------------------------------------------------


def test_quiet_hours_delay_the_touch_until_they_end_in_the_customers_timezone(campaign):
    customer = reachable_customer(timezone="Asia/Tokyo")  # noon UTC is 21:00 in Tokyo
    touch = TouchFactory(campaign=campaign, customer=customer)
    assert evaluate_touch(touch=touch, now=NOW) == (
        "quiet_hours",
        "Quiet hours until 08:00 local time (Asia/Tokyo)",
    )
    assert touch.not_before == NOW + timedelta(hours=11)  # 08:00 JST is 23:00 UTC
    assert evaluate_touch(touch=touch, now=NOW + timedelta(hours=11)) is None


@pytest.mark.parametrize("zone", ["", "Mars/Olympus_Mons"])
def test_a_customer_without_a_known_timezone_has_quiet_hours_in_utc(campaign, zone):
    customer = reachable_customer(timezone=zone)
    touch = TouchFactory(campaign=campaign, customer=customer)
    assert evaluate_touch(touch=touch, now=NOW) is None
    late = NOW.replace(hour=22)
    assert evaluate_touch(touch=touch, now=late)[0] == "quiet_hours"
    assert touch.not_before == (late + timedelta(days=1)).replace(hour=8)


# --- 8. agent pause ----------------------------------------------------------------------------


def test_an_agent_pause_holds_until_the_case_is_solved(campaign, agent):
    customer = reachable_customer()
    case = CaseFactory(customer=customer, status="open", queue=QueueFactory(members=[agent]))
    touch = TouchFactory(campaign=campaign, customer=customer)
    pause_marketing(case=case, actor=agent)
    assert evaluate_touch(touch=touch, now=NOW) == (
        "agent_pause",
        f"Marketing paused by an agent until case #{case.pk} is solved",
    )
    change_status(case=case, status="solved", actor=agent, now=NOW)
    assert evaluate_touch(touch=touch, now=NOW) is None


# --- identity, precedence, overrides, tombstones -----------------------------------------------


def test_no_identity_on_the_channel_suppresses(campaign):
    customer = CustomerFactory()
    ConsentFactory(customer=customer)
    assert verdict_for(campaign, customer) == ("no_identity", "No Email identity")


def test_suppressions_come_before_holds_and_holds_in_a_fixed_order(campaign):
    no_consent = CustomerFactory(timezone="UTC")
    IdentityFactory(customer=no_consent)
    CommitmentFactory(case=CaseFactory(customer=no_consent))
    both_holds = reachable_customer()
    CaseFactory(customer=both_holds, status="open", priority="urgent", pauses_marketing=True)
    CommitmentFactory(case=CaseFactory(customer=both_holds))

    assert verdict_for(campaign, no_consent)[0] == "no_consent"
    assert verdict_for(campaign, both_holds)[0] == "agent_pause"
    without_pause = new_policy(is_agent_pause_on=False)
    assert verdict_for(campaign, both_holds, policy=without_pause)[0] == "open_commitment"


def test_an_approved_override_lifts_its_hold_for_that_campaign_only(campaign):
    customer = reachable_customer()
    CommitmentFactory(case=CaseFactory(customer=customer))
    OverrideFactory(campaign=campaign, reason="open_commitment", status="approved")
    other = CampaignFactory()
    OverrideFactory(campaign=other, reason="open_commitment", status="pending")

    assert verdict_for(campaign, customer) is None
    assert verdict_for(other, customer)[0] == "open_commitment"


def test_an_override_cannot_lift_a_suppression(campaign):
    customer = CustomerFactory(timezone="UTC")
    IdentityFactory(customer=customer)
    OverrideFactory(campaign=campaign, reason="no_consent", status="approved")
    assert verdict_for(campaign, customer)[0] == "no_consent"


def test_a_merged_customer_is_never_in_the_audience_nor_sent_to(campaign):
    survivor, merged = reachable_customer(), reachable_customer()
    merged.merged_into = survivor
    merged.save(update_fields=["merged_into"])

    assert preflight(campaign=campaign, now=NOW).total == 1
    assert verdict_for(campaign, merged) == ("no_identity", "The customer was merged or erased")


# --- preflight, drill-down, materialisation ----------------------------------------------------


def build_audience() -> dict[str, list]:
    """One customer per outcome (two who may be sent to), keyed by outcome."""
    people = {
        "send": [reachable_customer(), reachable_customer(display_name="Zed Zulu")],
        "quiet_hours": [reachable_customer(timezone="Asia/Tokyo")],
        "no_identity": [CustomerFactory()],
        "no_consent": [CustomerFactory()],
        "open_commitment": [reachable_customer()],
        "open_complaint": [reachable_customer()],
        "topic_conflict": [reachable_customer()],
        "frequency_cap": [reachable_customer()],
    }
    IdentityFactory(customer=people["no_consent"][0])
    CommitmentFactory(case=CaseFactory(customer=people["open_commitment"][0]), kind="callback")
    CaseFactory(customer=people["open_complaint"][0], priority="urgent")
    CaseFactory(customer=people["topic_conflict"][0], topics=["upgrade"])
    for days_ago in (1, 2, 3):
        SentTouchFactory(
            customer=people["frequency_cap"][0], sent_at=NOW - timedelta(days=days_ago)
        )
    return people


def test_preflight_splits_the_audience_by_outcome_with_the_policy_version(campaign):
    build_audience()
    result = preflight(campaign=campaign, now=NOW)
    assert result.total == 9
    assert result.counts == {
        "send": 2,
        "quiet_hours": 1,
        "no_identity": 1,
        "no_consent": 1,
        "open_commitment": 1,
        "open_complaint": 1,
        "topic_conflict": 1,
        "frequency_cap": 1,
    }
    assert result.policy_version == current_policy().version


def test_preflight_counts_equal_the_send_time_check_of_every_touch(campaign):
    build_audience()
    result = preflight(campaign=campaign, now=NOW)
    materialise_touches(campaign=campaign, now=NOW)
    outcomes: dict[str, int] = {}
    for touch in Touch.objects.filter(campaign=campaign):
        verdict = evaluate_touch(touch=touch, now=NOW)
        outcome = "send" if verdict is None else verdict[0]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes == result.counts


def test_preflight_previews_an_unsaved_policy_and_stores_nothing(campaign):
    build_audience()
    versions = list(ContactPolicy.objects.values_list("version", flat=True))
    touches = Touch.objects.count()
    proposed = new_policy(
        commitment_hold_scope="off", frequency_cap_touches=0, complaint_priorities=[]
    )
    result = preflight(campaign=campaign, now=NOW, policy=proposed)
    assert result.policy_version == versions[-1] + 1
    assert result.count("send") == 5
    assert result.count("open_commitment") == result.count("frequency_cap") == 0
    assert list(ContactPolicy.objects.values_list("version", flat=True)) == versions
    assert Touch.objects.count() == touches


def test_the_drill_down_lists_names_and_the_rule_never_the_case_text(campaign):
    people = build_audience()
    held = people["open_commitment"][0]
    rows = preflight_customers(campaign=campaign, outcome="open_commitment", now=NOW)
    assert len(rows) == 1
    customer_id, name, detail = rows[0]
    assert (customer_id, name) == (held.pk, held.display_name)
    assert detail.startswith("Callback promised on case #")
    assert "Refund of" not in detail

    senders = people["send"]
    first = preflight_customers(campaign=campaign, outcome="send", limit=1, now=NOW)
    assert [row[0] for row in first] == [senders[0].pk]
    rest = preflight_customers(campaign=campaign, outcome="send", after_id=senders[0].pk, now=NOW)
    assert [(row[0], row[1]) for row in rest] == [(senders[1].pk, "Zed Zulu")]


def test_materialising_creates_one_touch_each_with_its_status_once(campaign):
    people = build_audience()
    assert materialise_touches(campaign=campaign, now=NOW) == 9
    assert materialise_touches(campaign=campaign, now=NOW) == 0

    touches = {t.customer_id: t for t in Touch.objects.filter(campaign=campaign)}
    assert len(touches) == 9
    campaign.refresh_from_db()
    assert campaign.materialised_at == NOW
    for outcome, customers in people.items():
        for customer in customers:
            touch = touches[customer.pk]
            if outcome in ("send", "quiet_hours"):
                assert (touch.status, touch.reason) == ("pending", "")
            elif outcome in ("no_identity", "no_consent", "topic_conflict"):
                assert (touch.status, touch.reason) == ("suppressed", outcome)
            else:
                assert (touch.status, touch.reason) == ("held", outcome)
                assert touch.held_at == NOW
    assert touches[people["send"][0].pk].not_before is None
    assert touches[people["quiet_hours"][0].pk].not_before == NOW + timedelta(hours=11)
    assert touches[people["open_commitment"][0].pk].reason_detail.startswith("Callback promised")


def test_a_local_window_campaign_waits_for_each_customers_window():
    campaign = CampaignFactory(schedule_mode="local_window", window_start_hour=9,
                               window_end_hour=17)  # fmt: skip
    london, tokyo = reachable_customer(timezone="Europe/London"), reachable_customer()
    early = NOW.replace(hour=6)
    materialise_touches(campaign=campaign, now=early)
    touches = {t.customer_id: t for t in Touch.objects.filter(campaign=campaign)}
    local_nine = datetime.combine(early.date(), time(9), tzinfo=__import__("zoneinfo").ZoneInfo(
        "Europe/London"))  # fmt: skip
    assert touches[london.pk].not_before == local_nine
    assert touches[tokyo.pk].not_before == early.replace(hour=9)  # UTC customer


def test_a_segment_decides_who_gets_a_touch():
    segment = SegmentFactory(
        definition={"match": "all",
                    "conditions": [{"field": "lifecycle_stage", "op": "in", "value": ["loyal"]}]}
    )  # fmt: skip
    campaign = CampaignFactory(segment=segment)
    loyal, _lead = reachable_customer(lifecycle_stage="loyal"), reachable_customer()
    assert materialise_touches(campaign=campaign, now=NOW) == 1
    assert Touch.objects.get(campaign=campaign).customer_id == loyal.pk


def midday_zone_now() -> str:
    """A fixed-offset zone where the wall clock reads about noon right now."""
    offset = 12 - timezone_now().astimezone(UTC).hour  # -11 … +12
    # POSIX-style names invert the sign: Etc/GMT-3 is three hours ahead of UTC.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


# --- the re-check when service acts ------------------------------------------------------------


def test_recording_a_commitment_turns_a_pending_touch_into_a_hold_at_once(
    campaign, agent, django_capture_on_commit_callbacks
):
    # The release re-checks at the real clock: give the customer a zone where it is midday
    # now, so quiet hours (a separate rule) cannot add their note whatever time CI runs.
    customer = reachable_customer(timezone=midday_zone_now())
    case = CaseFactory(customer=customer, status="open", queue=QueueFactory(members=[agent]))
    materialise_touches(campaign=campaign, now=NOW)
    touch = Touch.objects.get(customer=customer)
    assert touch.status == "pending"

    with django_capture_on_commit_callbacks(execute=True):
        commitment = record_commitment(
            case=case, kind="refund", text="Refund £20", due_at=NOW + timedelta(days=2),
            actor=agent,
        )  # fmt: skip
    touch.refresh_from_db()
    assert (touch.status, touch.reason) == ("held", "open_commitment")
    assert touch.reason_detail.startswith(f"Refund promised on case #{case.pk}")

    with django_capture_on_commit_callbacks(execute=True):
        keep_commitment(commitment=commitment, actor=agent)
    touch.refresh_from_db()
    assert (touch.status, touch.reason, touch.reason_detail) == ("pending", "", "")


def test_touches_of_campaigns_no_longer_live_are_left_alone(
    agent, django_capture_on_commit_callbacks
):
    campaign = CampaignFactory(status="paused")
    customer = reachable_customer()
    touch = TouchFactory(campaign=campaign, customer=customer)
    case = CaseFactory(customer=customer, status="open", queue=QueueFactory(members=[agent]))
    with django_capture_on_commit_callbacks(execute=True):
        pause_marketing(case=case, actor=agent)
    touch.refresh_from_db()
    assert touch.status == "pending"


def test_the_sweep_releases_held_touches_whose_cool_off_ended(campaign):
    customer = reachable_customer()
    CommitmentFactory(
        case=CaseFactory(customer=customer, status="solved", solved_at=NOW - timedelta(days=9)),
        status="broken",
        resolved_at=NOW - timedelta(days=1),
    )
    still = reachable_customer()
    CommitmentFactory(case=CaseFactory(customer=still))
    materialise_touches(campaign=campaign, now=NOW)
    assert Touch.objects.filter(campaign=campaign, status="held").count() == 2

    assert release_held_touches(campaign=campaign, now=NOW + timedelta(days=3)) == 0
    assert release_held_touches(campaign=campaign, now=NOW + timedelta(days=7)) == 1
    statuses = dict(Touch.objects.filter(campaign=campaign).values_list("customer_id", "status"))
    assert statuses == {customer.pk: "pending", still.pk: "held"}


@pytest.mark.django_db(transaction=True)
def test_the_marketing_state_lock_needs_a_transaction():
    customer = CustomerFactory()
    with pytest.raises(transaction.TransactionManagementError):
        lock_marketing_state(customer.pk)
    with transaction.atomic():
        lock_marketing_state(customer.pk)


# --- the lock: the send check and an agent's commitment never interleave -----------------------


def wait_until_someone_waits_for_a_lock(*threads) -> None:
    """Poll until another session of this database waits on a row lock (no timing assumed),
    or the threads have ended (failed: their error is asserted on)."""
    from django.db import connection as main

    while all(thread.is_alive() for thread in threads):
        with main.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return


def in_thread(target) -> tuple:
    """Run target in a thread with its own database connection; return (thread, result box)."""
    import threading

    from django.db import connection as own

    box: dict = {}

    def run():
        try:
            box["result"] = target()
        except BaseException as exc:  # surfaced by the test
            box["error"] = exc
        finally:
            own.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


@pytest.mark.django_db(transaction=True)
def test_a_commitment_recorded_during_a_send_waits_for_it_and_is_later(agent):
    import threading

    customer = reachable_customer()
    case = CaseFactory(customer=customer, status="open", queue=QueueFactory(members=[agent]))
    touch = TouchFactory(campaign=CampaignFactory(), customer=customer)
    checked, may_commit = threading.Event(), threading.Event()

    def send():
        try:
            with transaction.atomic():
                locked = Touch.objects.select_for_update().get(pk=touch.pk)
                lock_marketing_state(customer.pk)
                verdict = evaluate_touch(touch=locked, now=NOW)
                checked.set()
                may_commit.wait()
                Touch.objects.filter(pk=touch.pk).update(status="sent", sent_at=timezone_now())
            return verdict
        finally:
            checked.set()

    def promise():
        checked.wait()
        return record_commitment(case=case, kind="refund", text="Refund £20",
                                 due_at=NOW + timedelta(days=2), actor=agent)  # fmt: skip

    sender, sent = in_thread(send)
    recorder, recorded = in_thread(promise)
    wait_until_someone_waits_for_a_lock(sender, recorder)  # the agent waits for the sender
    may_commit.set()
    sender.join()
    recorder.join()

    assert "error" not in sent and "error" not in recorded, (sent, recorded)
    assert sent["result"] is None
    touch.refresh_from_db()
    assert touch.status == "sent"
    assert touch.sent_at <= recorded["result"].created_at


@pytest.mark.django_db(transaction=True)
def test_a_send_checked_while_a_commitment_is_being_recorded_sees_it(agent):
    import threading

    customer = reachable_customer()
    case = CaseFactory(customer=customer, status="open", queue=QueueFactory(members=[agent]))
    touch = TouchFactory(campaign=CampaignFactory(), customer=customer)
    recorded, may_commit = threading.Event(), threading.Event()

    def promise():
        try:
            with transaction.atomic():
                record_commitment(case=case, kind="callback", text="Call back tomorrow",
                                  due_at=NOW + timedelta(days=1), actor=agent)  # fmt: skip
                recorded.set()
                may_commit.wait()
        finally:
            recorded.set()

    def send():
        recorded.wait()
        with transaction.atomic():
            lock_marketing_state(customer.pk)
            return evaluate_touch(touch=touch, now=NOW)

    recorder, recording = in_thread(promise)
    sender, sent = in_thread(send)
    wait_until_someone_waits_for_a_lock(sender, recorder)  # the sender waits for the agent
    may_commit.set()
    recorder.join()
    sender.join()

    assert "error" not in sent and "error" not in recording, (sent, recording)
    assert sent["result"][0] == "open_commitment"
    assert sent["result"][1].startswith("Callback promised on case #")
