"""A supervisor's team is the queues they belong to: they read and work those cases (and the cases
assigned to them), and nothing of the other queues: page, API, live groups, mentions, overdue
flags. The CCO still reads every case."""

import asyncio
import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from cases import replies
from cases.commitments import flag_overdue_commitments
from cases.fragments import may_be_present_on_case, render_case_header
from cases.lifecycle import assign_case, change_status
from cases.mentions import notify_mentions
from cases.models import Case, Commitment, Queue
from customers.models import Interaction
from tests.cases.test_queue_page import make_case, make_customer, make_queue
from tests.live import until_subscribed
from workbench import realtime
from workbench.consumers import HubConsumer
from workbench.models import Notification

API = "/api/cases/"


def send(client, path, payload):
    return client.post(path, data=json.dumps(payload), content_type="application/json")


def row_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="case-row-(\d+)"', html)]


def tab_count(html: str, tab: str) -> str:
    return re.search(rf'data-count="{tab}">([^<]*)<', html).group(1)


@pytest.fixture
def support(agent, supervisor):
    """Queue A: the supervisor's team."""
    return make_queue("Support", members=[agent, supervisor])


@pytest.fixture
def billing(make_user):
    """Queue B: someone else's team."""
    return make_queue("Billing", members=[make_user("agent", username="bea")])


@pytest.fixture
def ann(db):
    return make_customer("Ann Lee")


@pytest.fixture
def mine(support, ann):
    return make_case(support, ann, subject="In my team", due_in=30)


@pytest.fixture
def theirs(billing, ann):
    return make_case(billing, ann, subject="Not my team", due_in=10)


def snapshot():
    return (
        list(Case.objects.order_by("pk").values_list("pk", "status", "assignee_id")),
        Commitment.objects.count(),
        Interaction.objects.count(),
    )


# --- reading ----------------------------------------------------------------------------------


def test_a_supervisor_opens_the_cases_of_their_queues_and_not_the_others(
    client_for, supervisor, mine, theirs
):
    client = client_for(supervisor)

    assert client.get(f"/cases/{mine.pk}/").status_code == 200
    refused = client.get(f"/cases/{theirs.pk}/")
    assert refused.status_code == 403
    assert "Not my team" not in refused.text
    assert client.get(f"/cases/{theirs.pk}/header/").status_code == 403
    assert client.get(f"/cases/{theirs.pk}/merge/").status_code == 403


def test_the_cco_still_reads_a_case_of_any_queue(client_for, cco, mine, theirs):
    client = client_for(cco)
    assert client.get(f"/cases/{theirs.pk}/").status_code == 200
    assert client.get(f"{API}{theirs.pk}/").json()["subject"] == "Not my team"
    listed = [row["id"] for row in client.get(API).json()["results"]]
    assert listed == [theirs.pk, mine.pk]


def test_a_case_assigned_to_the_supervisor_in_another_queue_is_theirs_to_read_and_work(
    client_for, supervisor, theirs
):
    theirs.assignee = supervisor
    theirs.save(update_fields=["assignee"])
    client = client_for(supervisor)

    page = client.get(f"/cases/{theirs.pk}/")
    assert page.status_code == 200 and "Not my team" in page.text
    assert 'name="assignee" id=' not in page.text  # no "assign to others": not their queue
    assert client.get(f"{API}{theirs.pk}/").status_code == 200
    assert client.post(f"/cases/{theirs.pk}/note/", {"body": "On it"}).status_code == 302
    assert Interaction.objects.filter(kind="note", subject_id=theirs.pk).count() == 1


def test_the_api_lists_only_the_teams_cases_and_refuses_the_others(
    client_for, supervisor, support, billing, mine, theirs
):
    client = client_for(supervisor)

    listed = client.get(API).json()["results"]
    assert [row["id"] for row in listed] == [mine.pk]
    assert client.get(API, {"queue": billing.pk}).json()["results"] == []
    assert client.get(f"{API}{theirs.pk}/").status_code == 403
    assert client.get(f"{API}{theirs.pk}/commitments/").status_code == 403
    assert client.get(f"{API}{mine.pk}/").json()["subject"] == "In my team"
    queues = client.get(f"{API}queues/").json()
    assert [(q["name"], q["is_member"]) for q in queues] == [("Support", True)]


def test_a_supervisor_opens_cases_through_the_api_only_in_their_queues(
    client_for, supervisor, support, billing, ann
):
    client = client_for(supervisor)
    payload = {"customer": ann.pk, "subject": "Lost parcel", "channel": "email"}

    refused = send(client, API, {**payload, "queue": billing.pk})
    assert refused.status_code == 400
    assert refused.json() == {"queue": ["You may only open cases in your own queues."]}
    assert not Case.objects.exists()
    assert send(client, API, {**payload, "queue": support.pk}).status_code == 201


# --- the queue page ---------------------------------------------------------------------------


def test_all_open_lists_the_open_cases_of_the_team_with_their_count(
    client_for, supervisor, agent, support, billing, mine, theirs
):
    taken = make_case(support, subject="Taken by Ada", assignee=agent, due_in=60)
    make_case(support, subject="Done", status="solved")
    make_case(billing, subject="Also not mine", due_in=5)

    html = client_for(supervisor).get("/cases/", {"tab": "all"}).text

    assert row_ids(html) == [mine.pk, taken.pk]
    assert tab_count(html, "all") == "2"
    assert "Not my team" not in html and "Also not mine" not in html


def test_the_queue_filter_offers_only_the_teams_queues(client_for, supervisor, support, billing):
    client = client_for(supervisor)

    html = client.get("/cases/", {"tab": "all"}).text
    assert f'<option value="{support.pk}"' in html
    assert f'<option value="{billing.pk}"' not in html
    refused = client.get("/cases/", {"tab": "all", "queue": billing.pk})
    assert refused.status_code == 400 and 'class="field-error"' in refused.text


def test_a_supervisor_without_queues_sees_an_empty_all_open_tab(client_for, make_user, theirs):
    loner = make_user("supervisor", username="lone")
    html = client_for(loner).get("/cases/", {"tab": "all"}).text
    assert row_ids(html) == [] and tab_count(html, "all") == "0"


# --- working ----------------------------------------------------------------------------------


def test_a_supervisor_cannot_work_a_case_of_another_queue(client_for, supervisor, billing, theirs):
    [bea] = billing.members.all()
    commitment = Commitment.objects.create(
        case=theirs, customer=theirs.customer, kind="refund", text="£5",
        due_at=timezone.now() + timedelta(days=1),
    )  # fmt: skip
    client = client_for(supervisor)
    before = snapshot()

    posts = [
        ("status", {"status": "open"}),
        ("assign", {"assignee": "me"}),
        ("assign", {"assignee": bea.pk}),
        ("note", {"body": "Sneaky note"}),
        ("compose", {"mode": "reply", "channel": "email", "body": "Hello"}),
        ("commitments", {"kind": "refund", "text": "x", "due_at": "2099-01-01T10:00"}),
        (f"commitments/{commitment.pk}/keep", {}),
        ("pause-marketing", {}),
        ("merge", {"target": theirs.pk, "confirm": "on"}),
    ]
    for path, data in posts:
        assert client.post(f"/cases/{theirs.pk}/{path}/", data).status_code == 403, path
    api_posts = [
        ("status", {"status": "open"}),
        ("assign", {"assignee": bea.pk}),
        ("assign", {"assignee": supervisor.pk}),
        ("commitments", {"kind": "refund", "text": "x", "due_at": "2099-01-01T10:00:00Z"}),
        ("notes", {"body": "Sneaky note"}),
        ("replies", {"channel": "email", "body": "Hello"}),
    ]
    for path, payload in api_posts:
        assert send(client, f"{API}{theirs.pk}/{path}/", payload).status_code == 403, path

    with pytest.raises(PermissionDenied):
        change_status(case=theirs, status="open", actor=supervisor)
    with pytest.raises(PermissionDenied):
        replies.add_note(case=theirs, author=supervisor, body="Sneaky note")
    assert snapshot() == before
    commitment.refresh_from_db()
    assert commitment.status == "open"


def test_a_supervisor_assigns_a_case_of_their_queue_to_its_members_only(
    client_for, supervisor, agent, make_user, mine
):
    outsider = make_user("agent", username="otto")
    client = client_for(supervisor)

    page = client.get(f"/cases/{mine.pk}/").text
    assert f'<option value="{agent.pk}"' in page and f'<option value="{outsider.pk}"' not in page
    refused = send(client, f"{API}{mine.pk}/assign/", {"assignee": outsider.pk})
    assert refused.status_code == 400 and list(refused.json()) == ["assignee"]
    mine.refresh_from_db()
    assert mine.assignee_id is None

    assert client.post(f"/cases/{mine.pk}/assign/", {"assignee": agent.pk}).status_code == 302
    mine.refresh_from_db()
    assert mine.assignee_id == agent.pk


def test_the_assign_service_itself_refuses_a_supervisor_outside_the_queue(
    supervisor, agent, billing, theirs
):
    # Pages and API refuse first; the service must hold the rule on its own (tasks call it).
    with pytest.raises(PermissionDenied):
        assign_case(case=theirs, assignee=agent, actor=supervisor)
    with pytest.raises(PermissionDenied):
        assign_case(case=theirs, assignee=supervisor, actor=supervisor)
    theirs.refresh_from_db()
    assert theirs.assignee_id is None


def test_take_next_gives_a_supervisor_only_cases_of_their_queues(
    client_for, supervisor, billing, theirs
):
    response = client_for(supervisor).post(f"{API}take-next/")
    assert response.status_code == 204
    theirs.refresh_from_db()
    assert theirs.assignee_id is None


def test_merge_offers_only_cases_the_supervisor_may_work(client_for, supervisor, mine, theirs):
    html = client_for(supervisor).get(f"/cases/{mine.pk}/merge/").text
    assert f'value="{theirs.pk}"' not in html
    refused = client_for(supervisor).post(
        f"/cases/{mine.pk}/merge/", {"target": theirs.pk, "confirm": "on"}
    )
    assert refused.status_code == 400
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.merged_into_id, theirs.status) == (None, "new")


# --- live groups, presence, mentions ----------------------------------------------------------


def test_the_hub_lets_a_supervisor_join_only_the_groups_of_their_team(
    supervisor, cco, marketer, support, billing, mine, theirs
):
    assert realtime.can_subscribe(supervisor, f"case.{mine.pk}")
    assert realtime.can_subscribe(supervisor, f"queue.{support.pk}")
    assert not realtime.can_subscribe(supervisor, f"case.{theirs.pk}")
    assert not realtime.can_subscribe(supervisor, f"queue.{billing.pk}")
    assert realtime.can_subscribe(cco, f"case.{theirs.pk}")
    assert realtime.can_subscribe(cco, f"queue.{billing.pk}")
    assert not realtime.can_subscribe(marketer, f"case.{mine.pk}")
    assert not realtime.can_subscribe(marketer, f"queue.{support.pk}")


def test_presence_on_a_case_is_for_its_team(supervisor, mine, theirs):
    assert may_be_present_on_case(supervisor, mine.pk)
    assert not may_be_present_on_case(supervisor, theirs.pk)
    assert render_case_header(supervisor, case_id=theirs.pk) == ""


def test_a_supervisor_is_mentioned_on_their_teams_cases_only(
    agent, billing, supervisor, mine, theirs
):
    [bea] = billing.members.all()

    on_mine = replies.add_note(case=mine, author=agent, body="@sam look")
    on_theirs = replies.add_note(case=theirs, author=bea, body="@sam look")

    assert list(Notification.objects.values_list("recipient_id", "url")) == [
        (supervisor.pk, f"/cases/{mine.pk}/#interaction-{on_mine.pk}")
    ]
    again = notify_mentions(note_interaction=on_theirs, author=bea)
    assert (again.notified, again.ignored) == ([], ["sam"])


@pytest.mark.django_db(transaction=True)
def test_a_supervisor_hears_of_overdue_commitments_in_their_queues_only(
    supervisor, support, billing, mine, theirs
):
    due = timezone.now() - timedelta(minutes=5)
    for case in (mine, theirs):
        Commitment.objects.create(
            case=case, customer=case.customer, kind="callback", text="Call back", due_at=due
        )
    groups = [f"case.{mine.pk}", f"queue.{support.pk}"]

    def flag_in_a_thread():
        try:
            assert flag_overdue_commitments(now=timezone.now()) == 2
        finally:
            connection.close()

    async def refused_code():
        path = f"/ws/hub/?group=case.{theirs.pk}"
        communicator = WebsocketCommunicator(HubConsumer.as_asgi(), path)
        communicator.scope["user"] = supervisor
        await communicator.connect()
        output = await communicator.receive_output(timeout=2)
        return output.get("code")

    async def scenario():
        query = "&".join(f"group={group}" for group in groups)
        communicator = WebsocketCommunicator(HubConsumer.as_asgi(), f"/ws/hub/?{query}")
        communicator.scope["user"] = supervisor
        connected, _ = await communicator.connect()
        assert connected
        for group in groups:
            await until_subscribed(group)
        await asyncio.to_thread(flag_in_a_thread)
        frames = []
        while not await communicator.receive_nothing(timeout=1):
            frames.append(await communicator.receive_from(timeout=1))
        await communicator.disconnect()
        return frames

    assert async_to_sync(refused_code)() == 4403
    frames = async_to_sync(scenario)()
    heard = sorted(re.match(r"<!--wb:([a-z]+\.\d+):\d+-->", frame).group(1) for frame in frames)
    assert heard == sorted(groups)
    header = next(frame for frame in frames if frame.startswith(f"<!--wb:case.{mine.pk}:"))
    assert 'id="case-header"' in header and "Support" in header
    assert not any("Billing" in frame for frame in frames)


# --- the demo ---------------------------------------------------------------------------------


def test_seed_demo_makes_the_demo_supervisor_a_member_of_every_demo_queue(db):
    call_command("seed_demo", stdout=StringIO())
    sam = get_user_model().objects.get(username="sam")
    demo = Queue.objects.filter(name__in=("Support", "Billing"))
    assert sorted(demo.filter(members=sam).values_list("name", flat=True)) == [
        "Billing",
        "Support",
    ]
    sam.queues.clear()  # a demo database seeded before teams were real

    call_command("seed_demo", stdout=StringIO())

    assert demo.filter(members=sam).count() == 2
    assert Queue.objects.filter(name__in=("Support", "Billing")).count() == 2
