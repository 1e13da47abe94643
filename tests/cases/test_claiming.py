"""Take next: the most urgent unassigned case of my queues, never the same case for two agents."""

import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.test import Client

from cases.claiming import claim_next_case
from cases.lifecycle import record_case_event
from cases.models import Case
from customers.models import Interaction
from tests.cases.test_queue_page import make_case, make_queue
from workbench import realtime


@pytest.fixture
def support(agent):
    return make_queue("Support", members=[agent])


def test_nothing_waiting_returns_none_and_changes_nothing(agent, support):
    make_case(support, status="pending")
    assert claim_next_case(agent=agent) is None
    assert not Case.objects.filter(assignee=agent).exists()


def test_claims_the_most_urgent_case_of_my_queues(agent, make_user, support):
    other_queue = make_queue("Elsewhere")
    make_case(other_queue, priority="urgent", due_in=1)
    make_case(support, priority="high", due_in=5, assignee=make_user("agent"))
    make_case(support, priority="normal", due_in=1)
    paused_clock = make_case(support, priority="high", due_in=None)
    soonest_high = make_case(support, priority="high", due_in=30)

    first = claim_next_case(agent=agent)
    second = claim_next_case(agent=agent)

    assert (first.pk, second.pk) == (soonest_high.pk, paused_clock.pk)
    first.refresh_from_db()
    assert first.assignee_id == agent.pk


def test_a_claim_is_on_the_customers_timeline_about_the_case(agent, support):
    case = make_case(support)
    claim_next_case(agent=agent)
    entry = Interaction.objects.get(customer=case.customer)
    assert entry.kind == "case_event" and entry.subject_id == case.pk
    assert entry.actor_id == agent.pk and "taken by" in entry.title


def test_the_claims_entry_is_the_one_record_case_event_writes(agent, support):
    # The claim writes its entry in its own statement; it must be the same row the timeline's
    # service writes for any other case event (a column added later must not drift).
    case = make_case(support)
    claim_next_case(agent=agent)
    claimed = Interaction.objects.get(customer=case.customer)
    reference = record_case_event(
        case=case,
        title=f"Case #{case.pk} taken by {agent.get_full_name() or agent}",
        actor=agent,
        status="assigned",
        data={"assignee_id": agent.pk},
    )
    reference.refresh_from_db()
    fields = [
        f.attname
        for f in Interaction._meta.concrete_fields
        if f.attname not in ("id", "occurred_at", "created_at")
    ]
    assert {f: getattr(claimed, f) for f in fields} == {f: getattr(reference, f) for f in fields}
    assert claimed.occurred_at == claimed.created_at == Case.objects.get(pk=case.pk).updated_at


def test_a_claim_tells_the_case_the_queue_and_the_customers_timeline(
    agent, support, monkeypatch, django_capture_on_commit_callbacks
):
    case = make_case(support)
    sent = []
    monkeypatch.setattr(realtime, "send_now", lambda name, event, data: sent.append((name, data)))
    monkeypatch.setattr(
        realtime, "send_many", lambda events: sent.extend((n, data) for n, _, data in events)
    )
    with django_capture_on_commit_callbacks(execute=True):
        claim_next_case(agent=agent)
    entry = Interaction.objects.get(customer=case.customer)
    assert sorted(sent, key=str) == sorted(
        [
            (f"case.{case.pk}", {"case_id": case.pk}),
            (f"queue.{support.pk}", {"queue_id": support.pk, "case_id": case.pk}),
            (f"customer.{case.customer_id}", {"interaction_id": entry.pk}),
        ],
        key=str,
    )


@pytest.mark.parametrize("role", ["marketer", "cco"])
def test_roles_that_do_not_work_cases_cannot_claim(make_user, support, role):
    user = make_user(role)
    support.members.add(user)
    make_case(support)
    with pytest.raises(PermissionDenied):
        claim_next_case(agent=user)
    assert not Case.objects.filter(assignee__isnull=False).exists()


def test_take_next_button_opens_the_claimed_case(client_for, agent, support):
    case = make_case(support)
    response = client_for(agent).post("/cases/take-next/")
    assert response.status_code == 302
    assert response["Location"] == f"/cases/{case.pk}/"


def test_take_next_with_nothing_waiting_says_so(client_for, agent, support):
    response = client_for(agent).post("/cases/take-next/", follow=True)
    assert response.redirect_chain[-1][0] == "/cases/"
    assert "Nothing waiting in your queues" in response.text


def test_take_next_needs_a_post_with_csrf(agent, support):
    make_case(support)
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)
    assert client.get("/cases/take-next/").status_code == 405
    assert client.post("/cases/take-next/").status_code == 403
    assert not Case.objects.filter(assignee=agent).exists()


@pytest.mark.parametrize("role", ["marketer", "cco"])
def test_take_next_refuses_roles_that_do_not_work_cases(client_for, make_user, support, role):
    make_case(support)
    assert client_for(make_user(role)).post("/cases/take-next/").status_code == 403
    assert not Case.objects.filter(assignee__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
def test_two_agents_claiming_at_once_never_get_the_same_case(make_user):
    ada, bob = make_user("agent", username="ada"), make_user("agent", username="bob")
    queue = make_queue("Support", members=[ada, bob])
    cases = [make_case(queue, due_in=n) for n in range(20)]
    start = threading.Barrier(2)
    claims = {ada.pk: [], bob.pk: []}
    errors = []

    def claim_all(agent):
        try:
            start.wait(timeout=10)
            while (case := claim_next_case(agent=agent)) is not None:
                claims[agent.pk].append(case.pk)
        except Exception as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim_all, args=(a,)) for a in (ada, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    everything = claims[ada.pk] + claims[bob.pk]
    assert len(everything) == 20 and set(everything) == {c.pk for c in cases}
    assert claims[ada.pk] and claims[bob.pk]  # both really competed
    stored = dict(Case.objects.values_list("pk", "assignee_id"))
    assert all(stored[pk] == ada.pk for pk in claims[ada.pk])
    assert all(stored[pk] == bob.pk for pk in claims[bob.pk])


def test_claims_the_most_urgent_case_across_all_my_queues(agent, support):
    billing = make_queue("Billing", members=[agent])
    make_case(support, priority="normal", due_in=1)
    later_urgent = make_case(support, priority="urgent", due_in=90)
    soonest_urgent = make_case(billing, priority="urgent", due_in=10)
    make_case(billing, priority="urgent", due_in=5, status="pending")

    claimed = [claim_next_case(agent=agent).pk for _ in range(2)]

    assert claimed == [soonest_urgent.pk, later_urgent.pk]


def test_an_agent_in_no_queue_claims_nothing(make_user, support):
    make_case(support)
    assert claim_next_case(agent=make_user("agent", username="loner")) is None
    assert not Case.objects.filter(assignee__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
def test_when_other_claimers_hold_every_candidate_the_next_free_case_is_still_found(
    make_user, monkeypatch
):
    # One candidate per queue, both held by a claimer mid-transaction: the case behind them in
    # the queue is still reached (the full sort), never skipped as "nothing waiting".
    monkeypatch.setattr("cases.claiming.CANDIDATES_PER_QUEUE", 1)
    ada = make_user("agent", username="ada")
    support, billing = make_queue("Support", members=[ada]), make_queue("Billing", members=[ada])
    held = [make_case(support, due_in=1), make_case(billing, due_in=2)]
    behind = make_case(support, due_in=30)
    holding, release = threading.Event(), threading.Event()

    def hold_rows():
        with transaction.atomic():
            list(Case.objects.select_for_update().filter(pk__in=[c.pk for c in held]))
            holding.set()
            release.wait(timeout=30)
        connection.close()

    holder = threading.Thread(target=hold_rows)
    holder.start()
    try:
        assert holding.wait(timeout=10)
        claimed = claim_next_case(agent=ada)
    finally:
        release.set()
        holder.join(timeout=30)

    assert claimed is not None and claimed.pk == behind.pk
    assert Case.objects.get(pk=behind.pk).assignee_id == ada.pk
    assert not Case.objects.filter(pk__in=[c.pk for c in held], assignee__isnull=False).exists()
