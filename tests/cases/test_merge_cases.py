"""Merging cases: refusals first, then what moves, the closed case's link, timeline, audit, page."""

from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cases.commitments import pause_marketing, record_commitment
from cases.lifecycle import change_status, open_case
from cases.merging import merge_cases, preview_case_merge
from cases.models import Case, Commitment
from customers.models import Interaction, Kind
from customers.timeline import record_interaction
from tests.cases.factories import QueueFactory, SlaPolicyFactory
from tests.cases.test_queue_page import make_case, make_customer, make_queue
from workbench import realtime
from workbench.models import AuditEntry


@pytest.fixture
def support(agent):
    queue = QueueFactory(name="Support", members=[agent], calendar__working_hours={})
    SlaPolicyFactory(queue=queue, priority="normal")
    return queue


@pytest.fixture
def ann(db):
    return make_customer("Ann Lee")


def open_for(customer, queue, subject, actor, **kw):
    return open_case(
        customer=customer, queue=queue, subject=subject, channel="email", actor=actor, **kw
    )


def note_on(case, text, actor):
    interaction, _ = record_interaction(
        customer=case.customer,
        channel="system",
        kind=Kind.NOTE,
        direction="internal",
        body_text=text,
        actor=actor,
        subject=case,
        is_private=True,
    )
    return interaction


def promise(case, actor, text="Refund 20 EUR"):
    return record_commitment(
        case=case,
        kind="refund",
        text=text,
        due_at=timezone.now() + timedelta(days=2),
        actor=actor,
    )


def about(case) -> list[str]:
    """Titles (or bodies) of the entries whose subject is the case, oldest first."""
    case_type = ContentType.objects.get_for_model(Case)
    return [
        title or body
        for title, body in Interaction.objects.filter(subject_type=case_type, subject_id=case.pk)
        .order_by("id")
        .values_list("title", "body_text")
    ]


def snapshot():
    return (
        list(Interaction.objects.order_by("id").values_list("id", "subject_type_id", "subject_id")),
        list(Commitment.objects.order_by("id").values_list("id", "case_id", "status")),
        list(Case.objects.order_by("id").values_list("id", "status", "merged_into_id")),
        AuditEntry.objects.filter(action="case.merge").count(),
    )


def seq(kind: str, pk: int) -> int:
    return realtime.current_seq(realtime.group_name(kind, pk))


@pytest.fixture
def pair(agent, support, ann):
    """Two open cases of Ann: the duplicate (with a note and a commitment) and the original."""
    original = open_for(ann, support, "Router keeps rebooting", agent)
    duplicate = open_for(ann, support, "Router still broken", agent)
    note_on(duplicate, "Customer says it reboots hourly", agent)
    commitment = promise(duplicate, agent)
    return duplicate, original, commitment


# --- refusals: nothing moves ------------------------------------------------------------------


def test_cases_of_two_customers_are_refused_and_nothing_moves(agent, support, pair):
    duplicate, _, _ = pair
    bob_case = open_for(make_customer("Bob Stone"), support, "Bob's router", agent)
    before = snapshot()

    with pytest.raises(ValidationError) as refused:
        merge_cases(source=duplicate, target=bob_case, actor=agent)

    assert refused.value.message_dict == {
        "target": [
            f"Case #{bob_case.pk} is for another customer: only cases of the same customer "
            f"can be merged."
        ]
    }
    assert snapshot() == before


def test_a_case_cannot_be_merged_into_itself(agent, pair):
    duplicate, _, _ = pair
    before = snapshot()

    with pytest.raises(ValidationError) as refused:
        merge_cases(source=duplicate, target=duplicate, actor=agent)

    assert refused.value.messages == ["A case cannot be merged into itself: pick another case."]
    assert snapshot() == before


@pytest.mark.parametrize("closed", ["source", "target"])
def test_a_closed_case_is_refused_on_either_side(agent, pair, closed):
    duplicate, original, _ = pair
    victim = duplicate if closed == "source" else original
    change_status(case=victim, status="solved", actor=agent)
    change_status(case=victim, status="closed", actor=agent)
    duplicate.refresh_from_db()
    original.refresh_from_db()
    before = snapshot()

    with pytest.raises(ValidationError) as refused:
        merge_cases(source=duplicate, target=original, actor=agent)

    assert refused.value.message_dict == {closed: [f"Case #{victim.pk} is closed."]}
    assert snapshot() == before


def test_a_case_merged_already_cannot_be_merged_again(agent, support, ann, pair):
    duplicate, original, _ = pair
    third = open_for(ann, support, "Router, third time", agent)
    merge_cases(source=duplicate, target=original, actor=agent)
    before = snapshot()

    with pytest.raises(ValidationError) as refused:
        merge_cases(source=duplicate, target=third, actor=agent)

    assert refused.value.message_dict == {
        "source": [f"Case #{duplicate.pk} was already merged into case #{original.pk}."]
    }
    assert snapshot() == before


def test_a_stale_copy_is_checked_again_under_the_lock(agent, pair):
    duplicate, original, _ = pair
    stale = Case.objects.get(pk=original.pk)
    change_status(case=original, status="solved", actor=agent)
    change_status(case=original, status="closed", actor=agent)
    before = snapshot()

    with pytest.raises(ValidationError, match="is closed"):
        merge_cases(source=duplicate, target=stale, actor=agent)

    assert snapshot() == before


@pytest.mark.parametrize("role", ["marketer", "cco"])
def test_roles_that_do_not_work_cases_cannot_merge(make_user, pair, role):
    duplicate, original, _ = pair
    before = snapshot()

    with pytest.raises(PermissionDenied):
        merge_cases(source=duplicate, target=original, actor=make_user(role))

    assert snapshot() == before


def test_an_agent_cannot_merge_into_a_case_outside_their_queues(agent, ann, pair):
    duplicate, _, _ = pair
    elsewhere = make_case(make_queue("Billing"), ann, subject="Invoice wrong")
    before = snapshot()

    with pytest.raises(PermissionDenied):
        merge_cases(source=duplicate, target=elsewhere, actor=agent)

    assert snapshot() == before


# --- what a merge does ------------------------------------------------------------------------


def test_preview_counts_what_would_move_and_changes_nothing(agent, pair):
    duplicate, original, commitment = pair
    promise(duplicate, agent, text="Call back on Monday")
    Commitment.objects.filter(pk=commitment.pk).update(status="kept")
    before = snapshot()

    preview = preview_case_merge(source=duplicate, target=original)

    # "opened" and the note are about the case; commitment events are about the commitment.
    assert (preview.interactions, preview.commitments, preview.open_commitments) == (2, 2, 1)
    assert preview.total == 4
    assert snapshot() == before


def test_preview_refuses_what_the_merge_would_refuse(agent, support, pair):
    duplicate, _, _ = pair
    other = open_for(make_customer("Bob Stone"), support, "Other", agent)

    with pytest.raises(ValidationError, match="another customer"):
        preview_case_merge(source=duplicate, target=other)


def test_merge_moves_interactions_and_commitments_and_closes_the_source_with_a_link(agent, pair):
    duplicate, original, commitment = pair

    survivor = merge_cases(source=duplicate, target=original, actor=agent)

    duplicate.refresh_from_db()
    commitment.refresh_from_db()
    assert survivor.pk == original.pk
    assert (duplicate.status, duplicate.merged_into_id) == ("closed", original.pk)
    assert duplicate.closed_at is not None and duplicate.sla_due_at is None
    assert commitment.case_id == original.pk and commitment.status == "open"
    assert about(original) == [
        f"Case #{original.pk} opened: Router keeps rebooting",
        f"Case #{duplicate.pk} opened: Router still broken",
        "Customer says it reboots hourly",
        f"Case #{duplicate.pk} merged into #{original.pk}: 2 interactions and 1 commitment "
        f"moved here",
    ]
    assert about(duplicate) == [f"Case #{duplicate.pk} merged into #{original.pk}"]
    merged_entries = Interaction.objects.filter(status="merged")
    assert {entry.actor_id for entry in merged_entries} == {agent.pk}


def test_merge_is_audited_with_what_moved(agent, pair):
    duplicate, original, _ = pair

    merge_cases(source=duplicate, target=original, actor=agent)

    audit = AuditEntry.objects.get(action="case.merge")
    assert (audit.actor_id, audit.target_type, audit.target_id) == (
        agent.pk,
        "cases.case",
        str(original.pk),
    )
    assert audit.details == {
        "source_id": duplicate.pk,
        "target_id": original.pk,
        "source_status": "new",
        "moved": {"interactions": 2, "commitments": 1},
    }


def test_target_keeps_its_sla_and_takes_the_sources_topics_and_marketing_pause(agent, support, ann):
    original = open_for(ann, support, "Router", agent, topics=["router"], priority="normal")
    duplicate = open_for(ann, support, "Refund", agent, topics=["billing", "router"])
    pause_marketing(case=duplicate, actor=agent)
    original.refresh_from_db()
    due = (original.first_response_due_at, original.resolution_due_at, original.sla_due_at)

    merge_cases(source=duplicate, target=original, actor=agent)

    original.refresh_from_db()
    assert (original.status, original.priority) == ("new", "normal")
    assert (
        original.first_response_due_at,
        original.resolution_due_at,
        original.sla_due_at,
    ) == due
    assert original.topics == ["billing", "router"]
    assert original.pauses_marketing is True


def test_merge_publishes_to_both_cases_and_queues_after_commit(
    agent, ann, support, django_capture_on_commit_callbacks
):
    other_queue = QueueFactory(name="Returns", members=[agent])
    original = open_for(ann, other_queue, "Router", agent)
    duplicate = open_for(ann, support, "Router again", agent)
    groups = [("case", duplicate.pk), ("case", original.pk), ("queue", support.pk)]
    groups.append(("queue", other_queue.pk))
    before = [seq(*group) for group in groups]

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        merge_cases(source=duplicate, target=original, actor=agent)
    assert [seq(*group) for group in groups] == before  # nothing before the commit
    for callback in callbacks:
        callback()

    assert [seq(*group) - was for group, was in zip(groups, before, strict=True)] == [1, 1, 1, 1]


def test_a_supervisor_merges_cases_across_the_queues_of_their_team(supervisor, agent, ann, pair):
    duplicate, _, _ = pair
    billing = make_queue("Billing", members=[supervisor])
    duplicate.queue.members.add(supervisor)  # a supervisor's team is their queues
    elsewhere = make_case(billing, ann, subject="Invoice wrong")

    merge_cases(source=duplicate, target=elsewhere, actor=supervisor)

    duplicate.refresh_from_db()
    assert duplicate.merged_into_id == elsewhere.pk


# --- the page --------------------------------------------------------------------------------


def page(case):
    return f"/cases/{case.pk}/merge/"


def test_marketer_cannot_open_or_post_the_merge_page(client_for, marketer, pair):
    duplicate, original, _ = pair
    client = client_for(marketer)
    before = snapshot()

    assert client.get(page(duplicate)).status_code == 403
    assert client.post(page(duplicate), {"target": original.pk, "confirm": "on"}).status_code == 403
    assert snapshot() == before


@pytest.mark.parametrize("role", ["cco", "stranger"])
def test_cco_and_an_agent_outside_the_queue_cannot_merge_from_the_page(
    client_for, make_user, pair, role
):
    duplicate, original, _ = pair
    user = make_user("cco") if role == "cco" else make_user("agent")
    client = client_for(user)
    before = snapshot()

    assert client.get(page(duplicate)).status_code == 403
    assert client.post(page(duplicate), {"target": original.pk, "confirm": "on"}).status_code == 403
    assert snapshot() == before


def test_the_case_page_links_to_merge_only_for_who_may_work_it(client_for, agent, cco, pair):
    duplicate, _, _ = pair

    assert "Merge into another case…" in client_for(agent).get(f"/cases/{duplicate.pk}/").text
    assert "Merge into another case…" not in client_for(cco).get(f"/cases/{duplicate.pk}/").text


def test_the_page_lists_only_the_customers_other_open_cases_the_agent_may_work(
    client_for, agent, support, ann, pair
):
    duplicate, original, _ = pair
    solved = open_for(ann, support, "Old router issue", agent)
    change_status(case=solved, status="solved", actor=agent)
    make_case(make_queue("Billing"), ann, subject="Invoice in another team")
    open_for(make_customer("Bob Stone"), support, "Bob's router", agent)

    html = client_for(agent).get(page(duplicate)).text

    assert f'id="target-{original.pk}"' in html
    assert html.count('type="radio" name="target"') == 1
    assert "Old router issue" not in html and "Invoice in another team" not in html
    assert "Bob&#x27;s router" not in html and "Bob's router" not in html


def test_the_page_says_when_there_is_nothing_to_merge_into(client_for, agent, support, ann):
    lonely = open_for(ann, support, "Only case", agent)

    response = client_for(agent).get(page(lonely))

    assert response.status_code == 200
    assert "Ann Lee has no other open case you may work on." in response.text
    assert 'name="confirm"' not in response.text


def test_picking_a_case_previews_what_moves(client_for, agent, pair):
    duplicate, original, _ = pair

    response = client_for(agent).get(page(duplicate), {"target": original.pk})

    html = response.text
    assert response.status_code == 200
    assert '<tr data-label="interactions"><td>Timeline entries about case' in html
    assert f"#{duplicate.pk}</td><td>2</td>" in html
    assert "<td>1 <span" in html and "(1 open)" in html
    assert f"Merge case #{duplicate.pk} into #{original.pk}" in html
    assert f'value="{original.pk}" checked' in html


def test_picking_a_case_that_is_not_listed_is_a_400_next_to_the_choice(
    client_for, agent, support, pair
):
    duplicate, _, _ = pair
    other = open_for(make_customer("Bob Stone"), support, "Bob's router", agent)

    response = client_for(agent).get(page(duplicate), {"target": other.pk})

    assert response.status_code == 400
    assert '<p class="field-error" id="target-error">Pick one of the cases listed.</p>' in (
        response.text
    )
    assert 'name="confirm"' not in response.text


def test_merging_needs_the_confirmation_box_and_stores_nothing_without_it(client_for, agent, pair):
    duplicate, original, _ = pair
    before = snapshot()

    response = client_for(agent).post(page(duplicate), {"target": original.pk})

    assert response.status_code == 400
    assert (
        '<p class="field-error" id="merge-confirm-error">Tick the box to confirm: a merge cannot '
        "be undone.</p>" in response.text
    )
    assert 'aria-describedby="merge-confirm-error"' in response.text
    assert snapshot() == before


def test_confirming_merges_and_lands_on_the_surviving_case(client_for, agent, pair):
    duplicate, original, commitment = pair
    client = client_for(agent)

    response = client.post(page(duplicate), {"target": original.pk, "confirm": "on"}, follow=True)

    assert response.redirect_chain == [(f"/cases/{original.pk}/", 302)]
    assert f"Case #{duplicate.pk} was merged into this case" in response.text
    assert "Refund 20 EUR" in response.text  # the moved commitment is listed on this case
    duplicate.refresh_from_db()
    assert duplicate.merged_into_id == original.pk
    commitment.refresh_from_db()
    assert commitment.case_id == original.pk


def test_the_merged_case_page_links_to_the_surviving_case(client_for, agent, pair):
    duplicate, original, _ = pair
    merge_cases(source=duplicate, target=original, actor=agent)
    client = client_for(agent)

    html = client.get(f"/cases/{duplicate.pk}/").text
    merge_page = client.get(page(duplicate))

    assert f'Merged into <a href="/cases/{original.pk}/">case #{original.pk}</a>' in html
    assert "Merge into another case…" not in html
    assert merge_page.status_code == 200
    assert f"was already merged into case #{original.pk}" in merge_page.text
    assert 'name="target"' not in merge_page.text


def test_a_target_closed_after_the_preview_is_refused_with_a_message(client_for, agent, pair):
    duplicate, original, _ = pair
    client = client_for(agent)
    assert client.get(page(duplicate), {"target": original.pk}).status_code == 200
    change_status(case=original, status="solved", actor=agent)  # no longer listed
    before = snapshot()

    response = client.post(page(duplicate), {"target": original.pk, "confirm": "on"})

    assert response.status_code == 400
    assert "Pick one of the cases listed." in response.text
    assert snapshot() == before


def test_case_subjects_are_escaped_on_the_page(client_for, agent, support, ann):
    source = open_for(ann, support, "<script>alert(1)</script>", agent)
    target = open_for(ann, support, '<img src=x onerror="alert(2)">', agent)

    html = client_for(agent).get(page(source), {"target": target.pk}).text

    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in html


def test_the_page_costs_the_same_queries_however_many_cases_are_listed(
    client_for, agent, support, ann, django_assert_num_queries
):
    source = open_for(ann, support, "Source", agent)
    client = client_for(agent)
    make_case(support, ann, subject="One")
    with CaptureQueriesContext(connection) as first:
        assert client.get(page(source)).text.count('name="target"') == 1

    for n in range(4):
        make_case(support, ann, subject=f"More {n}", assignee=agent if n % 2 else None)
    with django_assert_num_queries(len(first)):
        assert client.get(page(source)).text.count('name="target"') == 5
