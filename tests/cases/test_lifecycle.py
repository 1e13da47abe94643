"""A case's life: opening, every status transition, who may move it, reopening and auto-close."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from cases.lifecycle import (
    TRANSITIONS,
    assign_case,
    change_status,
    close_solved_cases,
    open_case,
    reopen_on_customer_reply,
)
from cases.models import Case, Status
from cases.tasks import close_solved_cases_task
from customers.models import Interaction, Kind
from tests.cases.factories import (
    CaseFactory,
    CustomerFactory,
    QueueFactory,
    SlaPolicyFactory,
    ensure_case_events_render,
)
from workbench import realtime

MONDAY_10 = datetime(2025, 1, 6, 10, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _case_events_render():
    ensure_case_events_render()


@pytest.fixture
def queue(agent):
    queue = QueueFactory(members=[agent])
    SlaPolicyFactory(queue=queue, priority="normal")
    return queue


@pytest.fixture
def ann(db):
    return CustomerFactory(display_name="Ann Lee")


def case_events(case) -> list[tuple[str, str]]:
    """(title, actor label) of the case's timeline entries, oldest first."""
    return list(
        Interaction.objects.filter(kind=Kind.CASE_EVENT, subject_id=case.pk)
        .order_by("id")
        .values_list("title", "actor_label")
    )


def seq(kind: str, pk: int) -> int:
    return realtime.current_seq(realtime.group_name(kind, pk))


# --- Opening -------------------------------------------------------------------------------


def test_a_marketer_cannot_open_a_case_and_nothing_is_stored(marketer, queue, ann):
    with pytest.raises(PermissionDenied):
        open_case(customer=ann, queue=queue, subject="Refund", channel="email", actor=marketer)

    assert Case.objects.count() == 0
    assert Interaction.objects.count() == 0


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"subject": "   "}, "subject"),
        ({"priority": "whenever"}, "priority"),
        ({"channel": "pigeon"}, "channel"),
    ],
)
def test_an_invalid_case_is_refused_naming_the_field(agent, queue, ann, fields, error):
    values = {"subject": "Refund", "channel": "email", "priority": "normal"} | fields

    with pytest.raises(ValidationError) as refused:
        open_case(customer=ann, queue=queue, actor=agent, **values)

    assert list(refused.value.message_dict) == [error]
    assert Case.objects.count() == 0


def test_opening_a_case_computes_its_sla_records_it_and_publishes_after_commit(
    agent, queue, ann, django_capture_on_commit_callbacks
):
    queue_seq = seq("queue", queue.pk)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        case = open_case(
            customer=ann,
            queue=queue,
            subject=" Parcel lost ",
            channel="email",
            topics=["Shipping", "shipping ", ""],
            actor=agent,
            now=MONDAY_10,
        )
    assert seq("queue", queue.pk) == queue_seq  # nothing sent before the commit
    case_seq = seq("case", case.pk)
    for callback in callbacks:
        callback()

    assert (case.status, case.subject, case.topics, case.priority_rank) == (
        "new",
        "Parcel lost",
        ["shipping"],
        2,
    )
    assert case.first_response_due_at == datetime(2025, 1, 6, 14, tzinfo=UTC)
    assert case.sla_due_at == case.first_response_due_at
    assert case_events(case) == [(f"Case #{case.pk} opened: Parcel lost", str(agent))]
    assert seq("case", case.pk) == case_seq + 1
    assert seq("queue", queue.pk) == queue_seq + 1


def test_routing_opens_a_case_as_the_system_on_the_surviving_customer(queue, ann):
    merged = CustomerFactory(merged_into=ann)

    case = open_case(customer=merged, queue=queue, subject="Hi", channel="chat", priority="urgent")

    assert case.customer == ann
    assert case.priority_rank == 0
    assert case_events(case) == [(f"Case #{case.pk} opened: Hi", "Workbench")]


# --- Transitions ---------------------------------------------------------------------------

ALLOWED = sorted((before, after) for before, afters in TRANSITIONS.items() for after in afters)
REFUSED = sorted(
    (before, after)
    for before in Status.values
    for after in Status.values
    if after not in TRANSITIONS[before]
)


def test_the_transition_table_is_the_documented_flow():
    assert (
        sorted(
            [
                ("new", "open"),
                ("new", "pending"),
                ("new", "solved"),
                ("open", "pending"),
                ("open", "solved"),
                ("pending", "open"),
                ("pending", "solved"),
                ("solved", "open"),
                ("solved", "closed"),
            ]
        )
        == ALLOWED
    )


@pytest.mark.parametrize(("before", "after"), ALLOWED)
def test_an_allowed_transition_is_stored_with_a_timeline_entry_by_its_actor(
    agent, queue, before, after
):
    case = CaseFactory(queue=queue, status=before)

    moved = change_status(case=case, status=after, actor=agent, now=MONDAY_10)

    case.refresh_from_db()
    assert (moved.status, case.status) == (after, after)
    assert case_events(case) == [(f"Case #{case.pk} {before} → {after}", str(agent))]
    entry = Interaction.objects.get(subject_id=case.pk, kind=Kind.CASE_EVENT)
    assert (entry.actor, entry.status, entry.data["from"], entry.data["to"]) == (
        agent,
        after,
        before,
        after,
    )


@pytest.mark.parametrize(("before", "after"), REFUSED)
def test_a_refused_transition_stores_and_publishes_nothing(
    agent, queue, before, after, django_capture_on_commit_callbacks
):
    case = CaseFactory(queue=queue, status=before)

    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(ValidationError) as refused,
    ):
        change_status(case=case, status=after, actor=agent)

    assert refused.value.message_dict == {"status": [f"a {before} case cannot become {after}"]}
    case.refresh_from_db()
    assert case.status == before
    assert case_events(case) == []
    assert callbacks == []


def test_an_unknown_status_is_refused(agent, queue):
    case = CaseFactory(queue=queue)

    with pytest.raises(ValidationError, match="unknown status"):
        change_status(case=case, status="archived", actor=agent)


@pytest.mark.parametrize("role", ["marketer", "cco", None])
def test_only_service_may_change_a_status_and_a_refusal_stores_nothing(make_user, queue, role):
    case = CaseFactory(queue=queue)

    with pytest.raises(PermissionDenied):
        change_status(case=case, status="open", actor=make_user(role))

    case.refresh_from_db()
    assert case.status == "new"
    assert case_events(case) == []


def test_an_agent_outside_the_queue_may_not_move_a_case_unless_it_is_theirs(make_user, queue):
    outsider = make_user("agent")
    case = CaseFactory(queue=queue)

    with pytest.raises(PermissionDenied):
        change_status(case=case, status="open", actor=outsider)

    mine = CaseFactory(queue=queue, assignee=outsider)
    assert change_status(case=mine, status="open", actor=outsider).status == "open"


def test_a_supervisor_may_move_any_case_of_their_queues(supervisor, queue):
    queue.members.add(supervisor)  # a supervisor's team is their queues
    case = CaseFactory(queue=queue)

    assert change_status(case=case, status="open", actor=supervisor).status == "open"


def test_pending_pauses_the_clock_and_open_resumes_it(agent, queue, ann):
    case = open_case(customer=ann, queue=queue, subject="Hi", channel="email", now=MONDAY_10)

    paused = change_status(
        case=case, status="pending", actor=agent, now=MONDAY_10 + timedelta(hours=2)
    )
    assert (paused.sla_minutes_used, paused.sla_due_at) == (120, None)

    resumed = change_status(
        case=case, status="open", actor=agent, now=datetime(2025, 1, 7, 9, tzinfo=UTC)
    )
    resumed.refresh_from_db()
    assert resumed.sla_due_at == datetime(2025, 1, 7, 11, tzinfo=UTC)


def test_a_status_change_is_published_to_the_case_and_its_queue_after_commit(
    agent, queue, django_capture_on_commit_callbacks
):
    case = CaseFactory(queue=queue)
    case_seq, queue_seq = seq("case", case.pk), seq("queue", queue.pk)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        change_status(case=case, status="open", actor=agent)
    assert (seq("case", case.pk), seq("queue", queue.pk)) == (case_seq, queue_seq)

    for callback in callbacks:
        callback()
    assert (seq("case", case.pk), seq("queue", queue.pk)) == (case_seq + 1, queue_seq + 1)


def test_solving_stamps_solved_at_and_reopening_clears_it(agent, queue):
    case = CaseFactory(queue=queue, status="open")

    solved = change_status(case=case, status="solved", actor=agent, now=MONDAY_10)
    assert solved.solved_at == MONDAY_10

    reopened = change_status(case=case, status="open", actor=agent)
    assert reopened.solved_at is None


# --- Customer replies ----------------------------------------------------------------------


def test_a_customer_reply_reopens_a_solved_case_as_the_system(queue):
    case = CaseFactory(queue=queue, status="solved", solved_at=MONDAY_10)

    reopened = reopen_on_customer_reply(case=case)

    assert (reopened.status, reopened.solved_at) == ("open", None)
    assert reopened.sla_clock_started_at is not None
    assert case_events(case) == [(f"Case #{case.pk} solved → open (automatically)", "Workbench")]


def test_a_customer_reply_reopens_a_pending_case_and_restarts_its_clock(queue):
    case = CaseFactory(queue=queue, status="pending")

    reopened = reopen_on_customer_reply(case=case)

    assert reopened.status == "open"
    assert reopened.sla_clock_started_at is not None
    assert case_events(case) == [(f"Case #{case.pk} pending → open (automatically)", "Workbench")]


@pytest.mark.parametrize("status", ["new", "open", "closed"])
def test_a_customer_reply_leaves_any_other_status_alone(queue, status):
    case = CaseFactory(queue=queue, status=status)

    assert reopen_on_customer_reply(case=case).status == status
    assert case_events(case) == []


# --- Auto-close ----------------------------------------------------------------------------


def test_solved_cases_close_after_their_queues_auto_close_days_once(queue):
    now = datetime(2025, 2, 1, 12, tzinfo=UTC)
    quick = QueueFactory(auto_close_days=2)
    old = CaseFactory(queue=queue, status="solved", solved_at=now - timedelta(days=7))
    recent = CaseFactory(queue=queue, status="solved", solved_at=now - timedelta(days=6, hours=23))
    quick_old = CaseFactory(queue=quick, status="solved", solved_at=now - timedelta(days=2))
    still_open = CaseFactory(queue=queue, status="open")

    assert close_solved_cases(now=now) == 2
    assert close_solved_cases(now=now) == 0

    statuses = dict(Case.objects.values_list("pk", "status"))
    assert statuses == {
        old.pk: "closed",
        recent.pk: "solved",
        quick_old.pk: "closed",
        still_open.pk: "open",
    }
    assert Case.objects.get(pk=old.pk).closed_at == now
    assert case_events(old) == [(f"Case #{old.pk} solved → closed (automatically)", "Workbench")]


# --- Assignment ----------------------------------------------------------------------------


def test_a_supervisor_assigns_a_case_and_it_is_on_the_timeline(supervisor, make_user, queue):
    queue.members.add(supervisor)  # their team's queue
    bea = make_user("agent", username="bea", first_name="Bea", last_name="Ng")
    case = CaseFactory(queue=queue)

    assigned = assign_case(case=case, assignee=bea, actor=supervisor)

    assert assigned.assignee == bea
    assert case_events(case) == [(f"Case #{case.pk} assigned to Bea Ng", str(supervisor))]


def test_assigning_the_same_person_again_records_nothing(supervisor, agent, queue):
    queue.members.add(supervisor)
    case = CaseFactory(queue=queue, assignee=agent)

    assign_case(case=case, assignee=agent, actor=supervisor)

    assert case_events(case) == []


def test_an_agent_takes_a_case_of_their_queue_and_may_give_it_back(agent, queue):
    case = CaseFactory(queue=queue)

    assert assign_case(case=case, assignee=agent, actor=agent).assignee == agent
    assert assign_case(case=case, assignee=None, actor=agent).assignee is None
    assert [title for title, _ in case_events(case)] == [
        f"Case #{case.pk} assigned to {agent.get_full_name()}",
        f"Case #{case.pk} unassigned",
    ]


def test_an_agent_may_not_assign_others_or_take_cases_outside_their_queues(agent, make_user, queue):
    colleague = make_user("agent")
    elsewhere = CaseFactory(queue=QueueFactory())
    case = CaseFactory(queue=queue)

    with pytest.raises(PermissionDenied):
        assign_case(case=case, assignee=colleague, actor=agent)
    with pytest.raises(PermissionDenied):
        assign_case(case=elsewhere, assignee=agent, actor=agent)

    assert Case.objects.filter(assignee__isnull=False).count() == 0
    assert Interaction.objects.count() == 0


@pytest.mark.parametrize("role", ["marketer", "cco"])
def test_marketers_and_the_cco_cannot_assign_and_nothing_is_stored(make_user, agent, queue, role):
    case = CaseFactory(queue=queue)

    with pytest.raises(PermissionDenied):
        assign_case(case=case, assignee=agent, actor=make_user(role))

    case.refresh_from_db()
    assert case.assignee is None
    assert Interaction.objects.count() == 0


def test_a_case_cannot_be_assigned_to_a_marketer(supervisor, marketer, queue):
    case = CaseFactory(queue=queue)

    with pytest.raises(ValidationError, match="does not work cases"):
        assign_case(case=case, assignee=marketer, actor=supervisor)


def test_the_beat_task_closes_with_the_current_time(queue):
    CaseFactory(queue=queue, status="solved", solved_at=timezone.now() - timedelta(days=8))

    assert close_solved_cases_task() == 1
    assert close_solved_cases_task() == 0
