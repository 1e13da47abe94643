"""Commitments: recorded, kept, broken, withdrawn, flagged when overdue; pausing marketing."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from cases.commitments import (
    break_commitment,
    flag_overdue_commitments,
    keep_commitment,
    pause_marketing,
    record_commitment,
    withdraw_commitment,
)
from cases.models import Case, Commitment
from cases.tasks import flag_overdue_commitments_task
from customers.models import Interaction, Kind
from tests.cases.factories import (
    CaseFactory,
    CommitmentFactory,
    QueueFactory,
    SlaPolicyFactory,
    ensure_case_events_render,
)
from workbench import realtime

DUE = datetime(2025, 1, 10, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _case_events_render():
    ensure_case_events_render()


@pytest.fixture
def queue(agent):
    queue = QueueFactory(members=[agent])
    SlaPolicyFactory(queue=queue, priority="normal", commitment_grace_hours=6)
    return queue


@pytest.fixture
def case(queue):
    return CaseFactory(queue=queue, status="open")


def commitment_events(commitment) -> list[tuple[str, str, str]]:
    """(title, status, actor label) of the commitment's timeline entries, oldest first."""
    return list(
        Interaction.objects.filter(kind=Kind.COMMITMENT_EVENT, subject_id=commitment.pk)
        .order_by("id")
        .values_list("title", "status", "actor_label")
    )


def record(case, actor, **fields):
    values = {"kind": "refund", "text": "Refund £20 to the card", "due_at": DUE} | fields
    return record_commitment(case=case, actor=actor, **values)


# --- Recording -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["marketer", "cco", None])
def test_only_service_records_a_commitment_and_a_refusal_stores_nothing(make_user, case, role):
    with pytest.raises(PermissionDenied):
        record(case, make_user(role))

    assert Commitment.objects.count() == 0
    assert Interaction.objects.count() == 0


def test_an_agent_outside_the_queue_cannot_record_a_commitment(make_user, case):
    with pytest.raises(PermissionDenied):
        record(case, make_user("agent"))

    assert Commitment.objects.count() == 0


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"kind": "hug"}, "kind"),
        ({"text": "  "}, "text"),
        ({"text": "x" * 1001}, "text"),
        ({"due_at": datetime(2025, 1, 10, 12)}, "due_at"),
        ({"due_at": None}, "due_at"),
    ],
)
def test_an_invalid_commitment_is_refused_naming_the_field(agent, case, fields, error):
    with pytest.raises(ValidationError) as refused:
        record(case, agent, **fields)

    assert list(refused.value.message_dict) == [error]
    assert Commitment.objects.count() == 0


def test_a_closed_case_takes_no_new_commitment(agent, queue):
    closed = CaseFactory(queue=queue, status="closed")

    with pytest.raises(ValidationError, match="closed"):
        record(closed, agent)

    assert Commitment.objects.count() == 0


def test_a_recorded_commitment_is_open_on_the_timeline_and_published_after_commit(
    agent, case, django_capture_on_commit_callbacks
):
    group = realtime.group_name("case", case.pk)
    before = realtime.current_seq(group)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        commitment = record(case, agent, topics=["Billing", " billing"])
    assert realtime.current_seq(group) == before
    for callback in callbacks:
        callback()

    assert (commitment.status, commitment.customer, commitment.topics) == (
        "open",
        case.customer,
        ["billing"],
    )
    assert commitment.created_by == agent
    assert commitment_events(commitment) == [
        ("Commitment recorded: Refund, due 10 Jan 2025 12:00", "open", str(agent))
    ]
    entry = Interaction.objects.get(subject_id=commitment.pk)
    assert (entry.customer, entry.body_text) == (case.customer, "Refund £20 to the card")
    assert realtime.current_seq(group) == before + 1


# --- Keeping, breaking, withdrawing --------------------------------------------------------

RESOLVERS = [
    (keep_commitment, "kept"),
    (break_commitment, "broken"),
    (withdraw_commitment, "withdrawn"),
]


@pytest.mark.parametrize(("resolve", "status"), RESOLVERS)
def test_resolving_a_commitment_stores_its_status_and_a_timeline_entry(
    agent, case, resolve, status
):
    commitment = record(case, agent)
    now = datetime(2025, 1, 9, 8, tzinfo=UTC)

    resolved = resolve(commitment=commitment, actor=agent, now=now)

    commitment.refresh_from_db()
    assert (commitment.status, commitment.resolved_at) == (status, now)
    assert resolved.status == status
    assert commitment_events(commitment)[-1] == (
        f"Commitment {status}: Refund, due 10 Jan 2025 12:00",
        status,
        str(agent),
    )


@pytest.mark.parametrize(("resolve", "status"), RESOLVERS)
def test_a_commitment_is_resolved_only_once(agent, case, resolve, status):
    commitment = record(case, agent)
    keep_commitment(commitment=commitment, actor=agent)

    with pytest.raises(ValidationError, match="already kept"):
        resolve(commitment=commitment, actor=agent)

    commitment.refresh_from_db()
    assert commitment.status == "kept"
    assert len(commitment_events(commitment)) == 2


@pytest.mark.parametrize(("resolve", "status"), RESOLVERS)
def test_a_marketer_cannot_resolve_a_commitment_and_nothing_is_stored(
    agent, marketer, case, resolve, status
):
    commitment = record(case, agent)

    with pytest.raises(PermissionDenied):
        resolve(commitment=commitment, actor=marketer)

    commitment.refresh_from_db()
    assert (commitment.status, commitment.resolved_at) == ("open", None)
    assert len(commitment_events(commitment)) == 1


# --- Overdue -------------------------------------------------------------------------------


def test_an_overdue_commitment_is_flagged_once_then_broken_after_the_grace(
    case, django_capture_on_commit_callbacks
):
    commitment = CommitmentFactory(case=case, due_at=DUE)
    group = realtime.group_name("case", case.pk)

    assert flag_overdue_commitments(now=DUE - timedelta(seconds=1)) == 0
    assert flag_overdue_commitments(now=DUE + timedelta(hours=1)) == 1
    assert flag_overdue_commitments(now=DUE + timedelta(hours=2)) == 0
    commitment.refresh_from_db()
    assert (commitment.status, commitment.overdue_flagged_at) == ("open", DUE + timedelta(hours=1))

    before_break = realtime.current_seq(group)
    with django_capture_on_commit_callbacks(execute=True):
        assert flag_overdue_commitments(now=DUE + timedelta(hours=6)) == 1  # the policy's grace
    assert realtime.current_seq(group) == before_break + 1
    assert flag_overdue_commitments(now=DUE + timedelta(hours=7)) == 0

    commitment.refresh_from_db()
    assert (commitment.status, commitment.resolved_at) == ("broken", DUE + timedelta(hours=6))
    assert commitment_events(commitment) == [
        ("Commitment overdue: Refund, due 10 Jan 2025 12:00", "overdue", "Workbench"),
        (
            "Commitment broken (not kept within the grace period): Refund, due 10 Jan 2025 12:00",
            "broken",
            "Workbench",
        ),
    ]


def test_a_commitment_found_long_past_its_grace_is_broken_with_one_entry(queue):
    no_policy_case = CaseFactory(queue=queue, priority="low", status="open")  # 24 h default grace
    late = CommitmentFactory(case=no_policy_case, due_at=DUE)
    within_default_grace = CommitmentFactory(case=no_policy_case, due_at=DUE + timedelta(hours=2))

    assert flag_overdue_commitments(now=DUE + timedelta(hours=25)) == 2

    statuses = dict(Commitment.objects.values_list("pk", "status"))
    assert statuses == {late.pk: "broken", within_default_grace.pk: "open"}
    assert [status for _, status, _ in commitment_events(late)] == ["broken"]
    assert [status for _, status, _ in commitment_events(within_default_grace)] == ["overdue"]


def test_kept_and_withdrawn_commitments_are_never_flagged(case):
    CommitmentFactory(case=case, due_at=DUE, status="kept")
    CommitmentFactory(case=case, due_at=DUE, status="withdrawn")

    assert flag_overdue_commitments(now=DUE + timedelta(days=30)) == 0
    assert Interaction.objects.count() == 0


def test_the_beat_task_flags_with_the_current_time(case):
    CommitmentFactory(case=case, due_at=timezone.now() - timedelta(minutes=5))

    assert flag_overdue_commitments_task() == 1
    assert flag_overdue_commitments_task() == 0


# --- Pausing marketing ---------------------------------------------------------------------


def case_events(case) -> list[tuple[str, str]]:
    return list(
        Interaction.objects.filter(kind=Kind.CASE_EVENT, subject_id=case.pk)
        .order_by("id")
        .values_list("title", "actor_label")
    )


def test_an_agent_pauses_marketing_until_the_case_is_solved_and_it_is_on_the_timeline(
    agent, case, django_capture_on_commit_callbacks
):
    group = realtime.group_name("case", case.pk)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        paused = pause_marketing(case=case, actor=agent)
    before = realtime.current_seq(group)
    for callback in callbacks:
        callback()

    assert paused.pauses_marketing is True
    assert Case.objects.get(pk=case.pk).pauses_marketing is True
    assert case_events(case) == [(f"Marketing paused until case #{case.pk} is solved", str(agent))]
    assert realtime.current_seq(group) == before + 1


def test_pausing_twice_records_once(agent, case):
    pause_marketing(case=case, actor=agent)
    pause_marketing(case=case, actor=agent)

    assert len(case_events(case)) == 1


@pytest.mark.parametrize("role", ["marketer", "cco"])
def test_only_service_pauses_marketing_and_a_refusal_stores_nothing(make_user, case, role):
    with pytest.raises(PermissionDenied):
        pause_marketing(case=case, actor=make_user(role))

    assert Case.objects.get(pk=case.pk).pauses_marketing is False
    assert Interaction.objects.count() == 0


def test_a_solved_case_cannot_pause_marketing(agent, queue):
    solved = CaseFactory(queue=queue, status="solved")

    with pytest.raises(ValidationError, match="solved"):
        pause_marketing(case=solved, actor=agent)

    assert Case.objects.get(pk=solved.pk).pauses_marketing is False
