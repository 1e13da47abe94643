"""The cases API: who may read and act, bad input named by field, SLA-ordered keyset pages."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token

from cases.lifecycle import open_case
from cases.models import Case, Commitment
from customers.models import Interaction
from tests.cases.test_queue_page import make_case, make_customer, make_queue
from workbench.models import AuditEntry

BASE = "/api/cases/"


def send(client, method, path, payload=None):
    body = json.dumps(payload) if payload is not None else None
    return getattr(client, method)(path, data=body, content_type="application/json")


def ids(response) -> list[int]:
    return [row["id"] for row in response.json()["results"]]


def stored():
    return (
        list(Case.objects.order_by("id").values_list("id", "status", "assignee_id", "merged_into")),
        list(Commitment.objects.order_by("id").values_list("id", "case_id", "status")),
        Interaction.objects.count(),
        AuditEntry.objects.filter(action="case.merge").count(),
    )


def due_in(days=2) -> str:
    return (timezone.now() + timedelta(days=days)).isoformat()


@pytest.fixture
def support(agent):
    return make_queue("Support", members=[agent], channels=["email"])


@pytest.fixture
def billing(db):
    return make_queue("Billing", channels=["chat"])


@pytest.fixture
def ann(db):
    return make_customer("Ann Lee")


@pytest.fixture
def case(support, ann):
    return make_case(support, ann, subject="Refund for order 42", due_in=60)


def endpoints(case, commitment):
    pk, cpk = case.pk, commitment.pk
    return [
        ("get", BASE, None),
        ("post", BASE, {"customer": case.customer_id, "queue": case.queue_id, "subject": "x",
                        "channel": "email"}),
        ("get", f"{BASE}{pk}/", None),
        ("post", f"{BASE}{pk}/status/", {"status": "open"}),
        ("post", f"{BASE}{pk}/assign/", {"assignee": None}),
        ("post", f"{BASE}take-next/", None),
        ("get", f"{BASE}{pk}/commitments/", None),
        ("post", f"{BASE}{pk}/commitments/", {"kind": "refund", "text": "x", "due_at": due_in()}),
        ("post", f"{BASE}{pk}/commitments/{cpk}/keep/", None),
        ("post", f"{BASE}{pk}/commitments/{cpk}/break/", None),
        ("post", f"{BASE}{pk}/merge/", {"target": pk}),
        ("get", f"{BASE}queues/", None),
    ]  # fmt: skip


@pytest.fixture
def commitment(case, agent):
    return Commitment.objects.create(
        case=case,
        customer=case.customer,
        kind="refund",
        text="Refund 20 EUR",
        due_at=timezone.now() + timedelta(days=2),
        created_by=agent,
    )


# --- who may call ----------------------------------------------------------------------------


def test_every_endpoint_refuses_anonymous_callers_with_401(client, case, commitment):
    before = stored()
    for method, path, payload in endpoints(case, commitment):
        response = send(client, method, path, payload)
        assert response.status_code == 401, (method, path)
    assert stored() == before


def test_every_endpoint_refuses_a_marketer_and_stores_nothing(
    client_for, marketer, case, commitment
):
    client = client_for(marketer)
    before = stored()
    for method, path, payload in endpoints(case, commitment):
        response = send(client, method, path, payload)
        assert response.status_code == 403, (method, path)
        assert response.json() == {"detail": "Your role does not allow this."}
    assert stored() == before


def test_a_token_works_like_a_session(client, agent, case):
    token = Token.objects.create(user=agent)
    response = client.get(BASE, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    assert ids(response) == [case.pk]


def test_cco_reads_every_case_and_queue_but_acts_on_none(
    client_for, cco, case, commitment, billing, ann
):
    elsewhere = make_case(billing, ann, subject="Invoice wrong")
    client = client_for(cco)
    before = stored()

    assert set(ids(client.get(BASE))) == {case.pk, elsewhere.pk}
    assert client.get(f"{BASE}{elsewhere.pk}/").json()["subject"] == "Invoice wrong"
    assert client.get(f"{BASE}{case.pk}/commitments/").json()[0]["text"] == "Refund 20 EUR"
    assert [q["name"] for q in client.get(f"{BASE}queues/").json()] == ["Billing", "Support"]
    for method, path, payload in endpoints(case, commitment):
        if method == "post":
            assert send(client, method, path, payload).status_code == 403, path
    assert stored() == before


def test_an_agent_lists_only_cases_of_their_queues_and_those_assigned_to_them(
    client_for, agent, case, billing, ann
):
    make_case(billing, ann, subject="Not theirs")
    mine_elsewhere = make_case(billing, ann, subject="Given to them", assignee=agent)

    response = client_for(agent).get(BASE)

    assert response.status_code == 200
    assert set(ids(response)) == {case.pk, mine_elsewhere.pk}


def test_an_agent_cannot_read_or_act_on_a_case_outside_their_queues(
    client_for, agent, billing, ann
):
    other = make_case(billing, ann, subject="Not theirs")
    client = client_for(agent)
    before = stored()

    assert client.get(f"{BASE}{other.pk}/").status_code == 403
    assert client.get(f"{BASE}{other.pk}/commitments/").status_code == 403
    assert send(client, "post", f"{BASE}{other.pk}/status/", {"status": "open"}).status_code == 403
    assert send(
        client, "post", f"{BASE}{other.pk}/assign/", {"assignee": agent.pk}
    ).status_code == (403)
    assert stored() == before


def test_an_unknown_case_is_404(client_for, agent, support):
    client = client_for(agent)
    assert client.get(f"{BASE}999999/").status_code == 404
    assert client.get(f"{BASE}99999999999999999999/").status_code == 404
    assert client.get(f"{BASE}abc/").status_code == 404


# --- the list: order, filters, pages ---------------------------------------------------------


def test_the_list_is_ordered_by_sla_due_time_with_paused_clocks_last(client_for, agent, support):
    later = make_case(support, due_in=90)
    paused = make_case(support, status="pending")
    soon = make_case(support, due_in=5)
    urgent_paused = make_case(support, status="pending", priority="urgent")

    response = client_for(agent).get(BASE)

    assert ids(response) == [soon.pk, later.pk, urgent_paused.pk, paused.pk]
    row = response.json()["results"][0]
    assert (row["status"], row["queue_name"], row["customer_name"]) == ("new", "Support", "Ann Lee")


def test_the_list_shows_open_cases_unless_asked_for_other_statuses(client_for, agent, support):
    new = make_case(support, due_in=1)
    solved = make_case(support, status="solved")
    closed = make_case(support, status="closed")
    client = client_for(agent)

    assert ids(client.get(BASE)) == [new.pk]
    assert ids(client.get(BASE, {"status": "solved,closed"})) == [solved.pk, closed.pk]
    assert ids(client.get(BASE, {"status": ["closed", "new"]})) == [new.pk, closed.pk]


def test_the_list_filters_by_queue_channel_assignee_and_topic(
    client_for, agent, make_user, support, billing, ann
):
    supervisor = make_user("supervisor")
    support.members.add(supervisor)  # a supervisor's team is their queues
    billing.members.add(supervisor)
    mine = make_case(support, ann, assignee=agent, due_in=1, topics=["router"])
    chat = make_case(billing, ann, channel="chat", due_in=2, topics=["billing"])
    someone_elses = make_case(billing, ann, assignee=supervisor, due_in=3)
    client = client_for(supervisor)

    assert ids(client.get(BASE, {"queue": billing.pk})) == [chat.pk, someone_elses.pk]
    assert ids(client.get(BASE, {"channel": "chat"})) == [chat.pk]
    assert ids(client.get(BASE, {"assignee": "me"})) == [someone_elses.pk]
    assert ids(client.get(BASE, {"assignee": "none"})) == [chat.pk]
    assert ids(client.get(BASE, {"assignee": agent.pk})) == [mine.pk]
    assert ids(client.get(BASE, {"topic": "Router"})) == [mine.pk]
    assert ids(client.get(BASE, {"topic": "router", "queue": billing.pk})) == []


def test_bad_filters_are_400_named_by_parameter(client_for, agent, support):
    client = client_for(agent)

    response = client.get(
        BASE,
        {"status": "new,lost", "queue": "x", "channel": "pigeon", "assignee": "you", "cursor": "?"},
    )

    assert response.status_code == 400
    assert response.json() == {
        "status": {"1": ['"lost" is not a valid choice.']},
        "queue": ["A valid integer is required."],
        "channel": ['"pigeon" is not a valid choice.'],
        "assignee": ["Use me, none or a user's id."],
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "n_x_1"}, "cursor"),
        ({"cursor": "1_2"}, "cursor"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "201"}, "page_size"),
    ],
)
def test_a_bad_cursor_or_page_size_is_a_400(client_for, agent, support, params, field):
    response = client_for(agent).get(BASE, params)
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_pages_follow_the_cursor_and_show_every_case_once(client_for, agent, support):
    cases = [make_case(support, due_in=n) for n in (5, 1, 3)]
    cases += [make_case(support, status="pending") for _ in range(2)]
    client = client_for(agent)
    seen, url, pages = [], f"{BASE}?page_size=2", 0

    while url:
        response = client.get(url)
        assert response.status_code == 200
        seen += ids(response)
        url = response.json()["next"]
        pages += 1

    assert pages == 3
    by_due = sorted(cases[:3], key=lambda case: case.sla_due_at)
    paused = sorted(cases[3:], key=lambda case: case.pk)
    assert seen == [case.pk for case in by_due + paused]


def test_the_list_costs_the_same_queries_however_many_cases_it_shows(
    client_for, agent, support, billing, django_assert_num_queries
):
    client = client_for(agent)
    make_case(support, due_in=1, assignee=agent)

    with CaptureQueriesContext(connection) as first:
        assert len(ids(client.get(BASE))) == 1
    for n in range(6):
        make_case(support if n % 2 else billing, due_in=n, assignee=agent if n % 2 else None)
        make_case(billing, due_in=n, assignee=agent)

    with django_assert_num_queries(len(first)):
        assert len(ids(client.get(BASE))) == 10


# --- opening a case --------------------------------------------------------------------------


def test_an_agent_opens_a_case_in_their_queue(client_for, agent, support, ann):
    payload = {
        "customer": ann.pk,
        "queue": support.pk,
        "subject": " Router broken ",
        "channel": "phone",
        "priority": "high",
        "topics": ["Router", " ", "router"],
    }

    response = send(client_for(agent), "post", BASE, payload)

    assert response.status_code == 201
    body = response.json()
    case = Case.objects.get()
    assert body["id"] == case.pk
    assert (body["subject"], body["status"], body["priority"], body["topics"]) == (
        "Router broken",
        "new",
        "high",
        ["router"],
    )
    assert (case.customer_id, case.queue_id, case.channel) == (ann.pk, support.pk, "phone")
    assert Interaction.objects.get().title == f"Case #{case.pk} opened: Router broken"


def test_opening_a_case_names_each_bad_field_and_stores_nothing(client_for, agent, support):
    payload = {"customer": 999999, "queue": 999999, "subject": "", "channel": "pigeon",
               "priority": "whenever", "topics": "billing"}  # fmt: skip

    response = send(client_for(agent), "post", BASE, payload)

    assert response.status_code == 400
    assert response.json() == {
        "customer": ["There is no customer 999999."],
        "queue": ["There is no queue 999999."],
        "subject": ["This field may not be blank."],
        "channel": ['"pigeon" is not a valid choice.'],
        "priority": ['"whenever" is not a valid choice.'],
        "topics": ['Expected a list of items but got type "str".'],
    }
    assert not Case.objects.exists() and not Interaction.objects.exists()


def test_opening_a_case_needs_its_fields(client_for, agent, support):
    response = send(client_for(agent), "post", BASE, {})

    assert response.status_code == 400
    assert set(response.json()) == {"customer", "queue", "subject", "channel"}


def test_an_agent_cannot_open_a_case_in_a_queue_they_are_not_in(client_for, agent, billing, ann):
    payload = {"customer": ann.pk, "queue": billing.pk, "subject": "x", "channel": "email"}

    response = send(client_for(agent), "post", BASE, payload)

    assert response.status_code == 400
    assert response.json() == {"queue": ["You may only open cases in your own queues."]}
    assert not Case.objects.exists()


def test_a_supervisor_opens_a_case_in_a_queue_of_their_team(client_for, supervisor, billing, ann):
    billing.members.add(supervisor)
    payload = {"customer": ann.pk, "queue": billing.pk, "subject": "x", "channel": "email"}
    assert send(client_for(supervisor), "post", BASE, payload).status_code == 201


def test_a_case_opened_for_a_merged_customer_goes_to_the_survivor(client_for, agent, support, ann):
    tombstone = make_customer("Ann (old)")
    tombstone.merged_into = ann
    tombstone.save(update_fields=["merged_into"])
    payload = {"customer": tombstone.pk, "queue": support.pk, "subject": "x", "channel": "email"}

    response = send(client_for(agent), "post", BASE, payload)

    assert response.status_code == 201
    assert response.json()["customer"] == ann.pk


def test_markup_in_a_subject_comes_back_as_inert_json_text(client_for, agent, support, ann):
    payload = {"customer": ann.pk, "queue": support.pk, "subject": "<script>x</script>",
               "channel": "email"}  # fmt: skip
    client = client_for(agent)
    pk = send(client, "post", BASE, payload).json()["id"]

    response = client.get(f"{BASE}{pk}/")

    assert response["Content-Type"] == "application/json"
    assert response.json()["subject"] == "<script>x</script>"


# --- status and assignment -------------------------------------------------------------------


def test_status_changes_through_the_lifecycle(client_for, agent, case):
    client = client_for(agent)

    response = send(client, "post", f"{BASE}{case.pk}/status/", {"status": "pending"})

    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    case.refresh_from_db()
    assert case.status == "pending"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"status": "closed"}, {"status": ["a new case cannot become closed"]}),
        ({"status": "lost"}, {"status": ['"lost" is not a valid choice.']}),
        ({}, {"status": ["This field is required."]}),
    ],
)
def test_a_bad_status_change_is_a_400_and_stores_nothing(client_for, agent, case, payload, error):
    before = stored()

    response = send(client_for(agent), "post", f"{BASE}{case.pk}/status/", payload)

    assert response.status_code == 400
    assert response.json() == error
    assert stored() == before


def test_an_agent_takes_a_case_and_gives_it_back(client_for, agent, case):
    client = client_for(agent)

    taken = send(client, "post", f"{BASE}{case.pk}/assign/", {"assignee": agent.pk})
    given_back = send(client, "post", f"{BASE}{case.pk}/assign/", {"assignee": None})

    assert (taken.status_code, taken.json()["assignee_username"]) == (200, "ada")
    assert (given_back.status_code, given_back.json()["assignee"]) == (200, None)


def test_an_agent_cannot_assign_a_case_to_someone_else(client_for, agent, make_user, case):
    colleague = make_user("agent")
    before = stored()

    response = send(
        client_for(agent), "post", f"{BASE}{case.pk}/assign/", {"assignee": colleague.pk}
    )

    assert response.status_code == 403
    assert stored() == before


def test_a_supervisor_assigns_to_service_only(client_for, supervisor, make_user, case):
    colleague, marketer = make_user("agent"), make_user("marketer")
    case.queue.members.add(supervisor, colleague, marketer)
    client = client_for(supervisor)

    refused = send(client, "post", f"{BASE}{case.pk}/assign/", {"assignee": marketer.pk})
    unknown = send(client, "post", f"{BASE}{case.pk}/assign/", {"assignee": 999999})
    done = send(client, "post", f"{BASE}{case.pk}/assign/", {"assignee": colleague.pk})

    assert refused.status_code == 400 and list(refused.json()) == ["assignee"]
    assert unknown.json() == {"assignee": ['Invalid pk "999999" - object does not exist.']}
    assert (done.status_code, done.json()["assignee"]) == (200, colleague.pk)


# --- take next -------------------------------------------------------------------------------


def test_take_next_never_gives_the_same_case_twice(client_for, agent, support):
    first_due, second_due = make_case(support, due_in=1), make_case(support, due_in=2)
    make_case(support, due_in=0, assignee=agent)  # already taken
    client = client_for(agent)

    first = client.post(f"{BASE}take-next/")
    second = client.post(f"{BASE}take-next/")
    third = client.post(f"{BASE}take-next/")

    assert (first.status_code, first.json()["id"]) == (200, first_due.pk)
    assert (second.status_code, second.json()["id"]) == (200, second_due.pk)
    assert first.json()["assignee"] == second.json()["assignee"] == agent.pk
    assert third.status_code == 204 and third.content == b""


# --- commitments -----------------------------------------------------------------------------


def test_recording_a_commitment(client_for, agent, case):
    payload = {"kind": "callback", "text": " Call back Monday ", "due_at": due_in(),
               "topics": ["Router"]}  # fmt: skip

    response = send(client_for(agent), "post", f"{BASE}{case.pk}/commitments/", payload)

    assert response.status_code == 201
    body = response.json()
    assert (body["kind"], body["text"], body["status"], body["topics"], body["created_by"]) == (
        "callback",
        "Call back Monday",
        "open",
        ["router"],
        "ada",
    )
    assert Commitment.objects.get().case_id == case.pk


def test_a_bad_commitment_names_each_field_and_stores_nothing(client_for, agent, case):
    payload = {
        "kind": "bribe",
        "text": "",
        "due_at": (timezone.now() - timedelta(hours=1)).isoformat(),
    }

    response = send(client_for(agent), "post", f"{BASE}{case.pk}/commitments/", payload)

    assert response.status_code == 400
    assert response.json() == {
        "kind": ['"bribe" is not a valid choice.'],
        "text": ["This field may not be blank."],
        "due_at": ["The due time must be in the future."],
    }
    assert not Commitment.objects.exists()


def test_a_commitment_on_a_closed_case_is_refused(client_for, agent, support):
    closed = make_case(support, status="closed")
    payload = {"kind": "refund", "text": "x", "due_at": due_in()}

    response = send(client_for(agent), "post", f"{BASE}{closed.pk}/commitments/", payload)

    assert response.status_code == 400
    assert response.json() == {"case": ["this case is closed"]}


def test_keeping_and_breaking_commitments(client_for, agent, case, commitment):
    other = Commitment.objects.create(
        case=case, customer=case.customer, kind="fix", text="Fix it", due_at=commitment.due_at
    )
    client = client_for(agent)

    kept = client.post(f"{BASE}{case.pk}/commitments/{commitment.pk}/keep/")
    again = client.post(f"{BASE}{case.pk}/commitments/{commitment.pk}/break/")
    broken = client.post(f"{BASE}{case.pk}/commitments/{other.pk}/break/")

    assert (kept.status_code, kept.json()["status"]) == (200, "kept")
    assert again.status_code == 400
    assert again.json() == {"status": ["this commitment is already kept"]}
    assert (broken.status_code, broken.json()["status"]) == (200, "broken")
    listed = client.get(f"{BASE}{case.pk}/commitments/").json()
    assert [(c["id"], c["status"]) for c in listed] == [
        (commitment.pk, "kept"),
        (other.pk, "broken"),
    ]


def test_a_commitment_of_another_case_is_404_here(client_for, agent, support, ann, commitment):
    other_case = make_case(support, ann)

    response = client_for(agent).post(f"{BASE}{other_case.pk}/commitments/{commitment.pk}/keep/")

    assert response.status_code == 404
    commitment.refresh_from_db()
    assert commitment.status == "open"


# --- queues ----------------------------------------------------------------------------------


def test_an_agent_and_a_supervisor_list_their_queues_and_the_cco_all(
    client_for, agent, supervisor, cco, support, billing
):
    billing.members.add(supervisor)
    mine = client_for(agent).get(f"{BASE}queues/").json()
    team = client_for(supervisor).get(f"{BASE}queues/").json()
    every = client_for(cco).get(f"{BASE}queues/").json()

    assert [(q["name"], q["is_member"]) for q in mine] == [("Support", True)]
    assert [(q["name"], q["is_member"]) for q in team] == [("Billing", True)]
    assert [(q["name"], q["is_member"]) for q in every] == [("Billing", False), ("Support", False)]
    assert mine[0]["default_for_channels"] == ["email"]


# --- merge -----------------------------------------------------------------------------------


def test_merging_through_the_api(client_for, agent, support, ann, case, commitment):
    original = open_case(customer=ann, queue=support, subject="First report", channel="email")

    response = send(client_for(agent), "post", f"{BASE}{case.pk}/merge/", {"target": original.pk})

    assert response.status_code == 200
    assert response.json()["id"] == original.pk
    case.refresh_from_db()
    commitment.refresh_from_db()
    assert (case.status, case.merged_into_id, commitment.case_id) == (
        "closed",
        original.pk,
        original.pk,
    )
    merged = client_for(agent).get(f"{BASE}{case.pk}/").json()
    assert (merged["status"], merged["merged_into"]) == ("closed", original.pk)


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("self", {"target": ["A case cannot be merged into itself: pick another case."]}),
        ("missing", {"target": ["There is no case 999999."]}),
        ("none", {"target": ["This field is required."]}),
    ],
)
def test_a_bad_merge_is_a_400_and_moves_nothing(client_for, agent, case, target, error):
    payload = {"self": {"target": case.pk}, "missing": {"target": 999999}, "none": {}}[target]
    before = stored()

    response = send(client_for(agent), "post", f"{BASE}{case.pk}/merge/", payload)

    assert response.status_code == 400
    assert response.json() == error
    assert stored() == before


def test_merging_cases_of_two_customers_is_a_400(client_for, agent, support, case):
    other = make_case(support, make_customer("Bob Stone"))
    before = stored()

    response = send(client_for(agent), "post", f"{BASE}{case.pk}/merge/", {"target": other.pk})

    assert response.status_code == 400
    assert list(response.json()) == ["target"]
    assert "another customer" in response.json()["target"][0]
    assert stored() == before


def test_an_agent_cannot_merge_into_a_case_outside_their_queues(
    client_for, agent, billing, ann, case
):
    elsewhere = make_case(billing, ann)
    before = stored()

    response = send(client_for(agent), "post", f"{BASE}{case.pk}/merge/", {"target": elsewhere.pk})

    assert response.status_code == 403
    assert stored() == before


# --- the schema ------------------------------------------------------------------------------


def test_the_schema_documents_the_case_endpoints_without_warnings(client_for, cco):
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    mine = [
        message
        for message in list(GENERATOR_STATS._warn_cache) + list(GENERATOR_STATS._error_cache)
        if "cases/api" in message or "CaseViewSet" in message or "QueueViewSet" in message
        or 'named "status"' in message or 'named "kind"' in message
    ]  # fmt: skip
    assert mine == []
    assert {"CaseStatusEnum", "CommitmentStatusEnum", "CommitmentKindEnum"} <= set(
        schema["components"]["schemas"]
    )

    paths = client_for(cco).get("/api/schema/?format=json").json()["paths"]
    assert set(paths[f"{BASE}"]) == {"get", "post"}
    assert set(paths[f"{BASE}{{id}}/"]) == {"get"}
    for path in [
        "{id}/status/",
        "{id}/assign/",
        "take-next/",
        "{id}/commitments/",
        "{id}/commitments/{commitment_pk}/keep/",
        "{id}/commitments/{commitment_pk}/break/",
        "{id}/merge/",
        "queues/",
    ]:
        assert f"{BASE}{path}" in paths
