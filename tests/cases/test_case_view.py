"""The case view: who may open it and act, header, customer card, timeline, and its action forms."""

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cases.fragments import render_case_header
from cases.models import Commitment
from customers.models import Identity, Interaction
from customers.timeline import record_interaction
from tests.cases.test_queue_page import make_case, make_customer, make_queue

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def support(agent):
    return make_queue("Support", members=[agent])


@pytest.fixture
def ann(db):
    customer = make_customer("Ann <i>Lee</i>")
    Identity.objects.create(customer=customer, channel="email", handle="ann@example.com")
    return customer


@pytest.fixture
def case(support, ann):
    return make_case(support, ann, subject="Refund for order 42", topics=["billing"], due_in=60)


def url(case, action=""):
    return f"/cases/{case.pk}/" + (f"{action}/" if action else "")


def open_commitment(case, author, text="Refund 20 EUR"):
    due_at = timezone.now() + timedelta(days=2)
    return Commitment.objects.create(
        case=case,
        customer=case.customer,
        kind="refund",
        text=text,
        due_at=due_at,
        created_by=author,
    )


def entry_ids(html: str, marked: bool | None = None) -> list[int]:
    found = re.findall(r'<li id="interaction-(\d+)" class="([^"]*)"', html)
    return [int(pk) for pk, cls in found if marked is None or ("this-case" in cls) == marked]


# --- who may open it and act -------------------------------------------------------------------


def test_marketer_cannot_open_a_case(client_for, marketer, case):
    assert client_for(marketer).get(url(case)).status_code == 403


def test_an_unknown_case_is_404(client_for, agent, support):
    assert client_for(agent).get("/cases/999999/").status_code == 404


def test_agent_outside_the_queue_cannot_open_or_act(client_for, make_user, case):
    stranger = make_user("agent")
    client = client_for(stranger)
    assert client.get(url(case)).status_code == 403
    assert client.post(url(case, "note"), {"body": "hi"}).status_code == 403
    assert client.post(url(case, "status"), {"status": "open"}).status_code == 403
    assert not Interaction.objects.exists()
    case.refresh_from_db()
    assert case.status == "new"


def test_agent_assigned_outside_their_queues_may_open_the_case(client_for, make_user, ann):
    elsewhere = make_queue("Elsewhere")
    helper = make_user("agent")
    case = make_case(elsewhere, ann, assignee=helper)
    assert client_for(helper).get(url(case)).status_code == 200


def test_a_supervisor_of_the_queue_and_the_cco_read_the_case(client_for, make_user, case):
    supervisor = make_user("supervisor")
    case.queue.members.add(supervisor)  # a supervisor's team is their queues
    assert client_for(supervisor).get(url(case)).status_code == 200
    assert client_for(make_user("cco")).get(url(case)).status_code == 200


def test_cco_reads_without_forms_and_every_post_is_refused(client_for, cco, case, agent):
    commitment = open_commitment(case, agent)
    client = client_for(cco)
    html = client.get(url(case)).text
    assert "Work on this case" not in html and '<form method="post" action="/cases/' not in html
    posts = [
        (url(case, "status"), {"status": "open"}),
        (url(case, "assign"), {"assignee": "me"}),
        (url(case, "note"), {"body": "cco note"}),
        (url(case, "commitments"), {"kind": "refund", "text": "x", "due_at": "2099-01-01T10:00"}),
        (url(case, f"commitments/{commitment.pk}/keep"), {}),
        (url(case, "pause-marketing"), {}),
    ]
    for path, data in posts:
        assert client.post(path, data).status_code == 403, path
    case.refresh_from_db()
    commitment.refresh_from_db()
    assert (case.status, case.assignee_id, case.pauses_marketing) == ("new", None, False)
    assert commitment.status == "open" and Commitment.objects.count() == 1
    assert not Interaction.objects.exists()


def test_actions_need_csrf(agent, case):
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)
    assert client.post(url(case, "note"), {"body": "hi"}).status_code == 403
    assert not Interaction.objects.exists()


# --- what it shows -----------------------------------------------------------------------------


def test_header_shows_status_priority_queue_assignee_topics_and_due_in_viewer_zone(
    client_for, make_user, support, ann
):
    viewer = make_user("supervisor", timezone="America/New_York")
    case = make_case(support, ann, priority="high", topics=["router"], assignee=viewer)
    case.first_response_due_at = datetime(2030, 1, 15, 17, 0, tzinfo=UTC)
    case.resolution_due_at = datetime(2030, 1, 16, 17, 0, tzinfo=UTC)
    case.save()
    html = client_for(viewer).get(url(case)).text
    header = html.split('<section id="case-header"')[1].split("</section>")[0]
    assert ">New<" in header and ">High<" in header and ">Support<" in header
    assert viewer.get_full_name() in header and "router" in header
    assert "15 Jan 2030, 12:00" in header and "16 Jan 2030, 12:00" in header  # 17:00 UTC in NY
    assert "America/New_York" in header and "overdue" not in header


def test_an_overdue_due_time_says_so(client_for, agent, support, ann):
    case = make_case(support, ann)
    case.first_response_due_at = timezone.now() - timedelta(minutes=5)
    case.save()
    header = (
        client_for(agent).get(url(case)).text.split('id="case-header"')[1].split("</section>")[0]
    )
    assert "overdue" in header


def test_customer_card_links_the_customer_with_identities_and_open_commitments(
    client_for, agent, case, ann
):
    commitment = open_commitment(case, agent, text="Call back <b>Monday</b>")
    kept = open_commitment(case, agent, text="Old promise")
    Commitment.objects.filter(pk=kept.pk).update(status="kept")
    html = client_for(agent).get(url(case)).text
    card = html.split('id="customer-card"')[1].split("</section>")[0]
    assert f'href="/customers/{ann.pk}/">Ann &lt;i&gt;Lee&lt;/i&gt;</a>' in card
    assert "ann@example.com" in card
    assert (
        f'id="commitment-{commitment.pk}"' in card and "Call back &lt;b&gt;Monday&lt;/b&gt;" in card
    )
    assert "Old promise" not in card
    assert "Marketing for this customer" in card
    assert "No campaign is scheduled for this customer" in card


def test_no_open_commitments_says_what_one_would_do(client_for, agent, case):
    html = client_for(agent).get(url(case)).text
    assert "No open commitments." in html


def test_timeline_marks_the_entries_about_this_case(client_for, agent, support, case, ann):
    def event(kind, subject, channel="system", direction="internal"):
        return record_interaction(customer=ann, channel=channel, kind=kind, direction=direction,
                                  title=kind, subject=subject)[0]  # fmt: skip

    other_case = make_case(support, ann, subject="Other")
    about_this = event("case_event", case)
    about_commitment = event("commitment_event", open_commitment(case, agent))
    about_other = event("case_event", other_case)
    message = event("message", None, channel="email", direction="in")
    html = client_for(agent).get(url(case)).text
    assert entry_ids(html) == [message.pk, about_other.pk, about_commitment.pk, about_this.pk]
    assert entry_ids(html, marked=True) == [about_commitment.pk, about_this.pk]


def test_an_empty_timeline_says_so(client_for, agent, case):
    assert "No interactions yet." in client_for(agent).get(url(case)).text


def test_page_query_count_does_not_grow_with_the_timeline(
    client_for, agent, case, ann, django_assert_num_queries
):
    def add(count):
        start = timezone.now() - timedelta(days=1)
        Interaction.objects.bulk_create(
            Interaction(customer=ann, channel="email", kind="message", direction="in",
                        occurred_at=start + timedelta(seconds=n), title=f"m{n}", actor=agent)
            for n in range(count)
        )  # fmt: skip

    add(5)
    open_commitment(case, agent)
    client = client_for(agent)
    client.get(url(case))  # warm caches that are per process, not per page
    with CaptureQueriesContext(connection) as five:
        assert len(entry_ids(client.get(url(case)).text)) == 5
    add(55)
    with django_assert_num_queries(len(five.captured_queries)):
        assert len(entry_ids(client.get(url(case)).text)) == 50


# --- actions -----------------------------------------------------------------------------------


def test_change_status_offers_only_allowed_next_statuses_and_applies_one(client_for, agent, case):
    client = client_for(agent)
    select = client.get(url(case)).text.split('name="status"')[1].split("</select>")[0]
    assert re.findall(r'value="(\w+)"', select) == ["open", "pending", "solved"]
    response = client.post(url(case, "status"), {"status": "open"})
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.status == "open"


def test_a_status_not_allowed_next_is_a_400_next_to_the_field(client_for, agent, case):
    response = client_for(agent).post(url(case, "status"), {"status": "closed"})
    assert response.status_code == 400
    assert 'id="status-error"' in response.text
    case.refresh_from_db()
    assert case.status == "new"


def test_agent_assigns_the_case_to_themselves(client_for, agent, case):
    response = client_for(agent).post(url(case, "assign"), {"assignee": "me"})
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.assignee_id == agent.pk


def test_agent_cannot_assign_to_someone_else(client_for, agent, make_user, case, support):
    colleague = make_user("agent")
    support.members.add(colleague)
    assert (
        client_for(agent).post(url(case, "assign"), {"assignee": colleague.pk}).status_code == 403
    )
    case.refresh_from_db()
    assert case.assignee_id is None


def test_supervisor_assigns_to_a_queue_member(client_for, supervisor, agent, case):
    case.queue.members.add(supervisor)
    client = client_for(supervisor)
    assert f'<option value="{agent.pk}"' in client.get(url(case)).text
    assert client.post(url(case, "assign"), {"assignee": agent.pk}).status_code == 302
    case.refresh_from_db()
    assert case.assignee_id == agent.pk


def test_supervisor_assigning_to_a_non_member_is_a_400(client_for, supervisor, make_user, case):
    case.queue.members.add(supervisor)
    outsider = make_user("agent")
    response = client_for(supervisor).post(url(case, "assign"), {"assignee": outsider.pk})
    assert response.status_code == 400 and 'id="assignee-error"' in response.text
    case.refresh_from_db()
    assert case.assignee_id is None


def test_internal_note_is_a_private_note_about_the_case(client_for, agent, case, ann):
    response = client_for(agent).post(url(case, "note"), {"body": "Customer is upset"})
    assert response.status_code == 302
    note = Interaction.objects.get(customer=ann)
    assert (note.kind, note.is_private, note.subject_id, note.actor_id) == (
        "note", True, case.pk, agent.pk,
    )  # fmt: skip
    assert note.body_text == "Customer is upset"


def test_an_empty_note_is_a_400_and_stores_nothing(client_for, agent, case):
    response = client_for(agent).post(url(case, "note"), {"body": ""})
    assert response.status_code == 400 and 'id="composer-body-error"' in response.text
    assert not Interaction.objects.exists()


def test_record_a_commitment_due_on_the_agents_clock(client_for, make_user, support, ann):
    tokyo = make_user("agent", timezone="Asia/Tokyo")
    support.members.add(tokyo)
    case = make_case(support, ann)
    response = client_for(tokyo).post(url(case, "commitments"), {
        "kind": "callback", "text": "Call back about the router", "due_at": "2031-05-02T09:30",
        "topics": "Router, billing",
    })  # fmt: skip
    assert response.status_code == 302
    commitment = Commitment.objects.get(case=case)
    assert commitment.due_at == datetime(2031, 5, 2, 9, 30, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert (commitment.kind, commitment.topics, commitment.created_by_id) == (
        "callback", ["billing", "router"], tokyo.pk,
    )  # fmt: skip


def test_an_invalid_commitment_is_a_400_with_errors_next_to_fields(client_for, agent, case):
    response = client_for(agent).post(url(case, "commitments"), {
        "kind": "bribe", "text": "", "due_at": "2000-01-01T10:00",
    })  # fmt: skip
    assert response.status_code == 400
    for field in ("kind", "text", "due_at"):
        assert f'id="commitment-{field}-error"' in response.text
    assert not Commitment.objects.exists()


@pytest.mark.parametrize(("outcome", "status"), [("keep", "kept"), ("break", "broken")])
def test_keep_or_break_an_open_commitment(client_for, agent, case, outcome, status):
    commitment = open_commitment(case, agent)
    assert (
        client_for(agent).post(url(case, f"commitments/{commitment.pk}/{outcome}")).status_code
        == 302
    )
    commitment.refresh_from_db()
    assert commitment.status == status


def test_resolving_an_already_resolved_commitment_is_a_400(client_for, agent, case):
    commitment = open_commitment(case, agent)
    Commitment.objects.filter(pk=commitment.pk).update(status="kept")
    response = client_for(agent).post(url(case, f"commitments/{commitment.pk}/break"))
    assert response.status_code == 400 and "already kept" in response.text
    commitment.refresh_from_db()
    assert commitment.status == "kept"


def test_pause_marketing_until_solved(client_for, agent, case):
    client = client_for(agent)
    assert client.post(url(case, "pause-marketing")).status_code == 302
    case.refresh_from_db()
    assert case.pauses_marketing is True
    assert "paused for this customer until the case is solved" in client.get(url(case)).text


# --- live --------------------------------------------------------------------------------------


def test_page_subscribes_to_the_case_and_its_customer(client_for, agent, case, ann):
    html = client_for(agent).get(url(case)).text
    assert f"group=case.{case.pk}" in html and f"group=customer.{ann.pk}" in html


def test_pushed_header_is_the_pages_header_swapped_out_of_band(client_for, agent, case):
    http = client_for(agent).get(url(case, "header"), **HTMX).text.strip()
    pushed = render_case_header(agent, case_id=case.pk, queue_id=case.queue_id).strip()
    assert http.startswith('<section id="case-header"')
    # The refetch also carries who is here, out of band, after the header itself.
    header, presence_slot = http.split("</section>", 1)
    assert pushed.replace(' hx-swap-oob="true"', "") == header + "</section>"
    assert presence_slot.strip().startswith('<div id="case-presence"')
    assert 'hx-trigger="wb:resync from:body"' in http


def test_pushed_header_is_empty_for_an_agent_outside_the_queue(make_user, case):
    assert render_case_header(make_user("agent"), case_id=case.pk) == ""
