"""@mentions in internal notes, the notifications they create, the nav badge and its live update."""

import asyncio
import re

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cases import replies
from cases.mentions import mentioned_usernames, notify_mentions
from customers.models import Interaction
from tests.cases.test_queue_page import make_case, make_customer, make_queue
from tests.live import until_subscribed
from workbench import notifications, realtime
from workbench.consumers import HubConsumer
from workbench.models import Notification

PAGE = "/notifications/"


@pytest.fixture
def support(agent):
    return make_queue("Support", members=[agent])


@pytest.fixture
def case(support):
    return make_case(support, make_customer("Ann Lee"), subject="Refund <b>now</b>")


@pytest.fixture
def bob(make_user, support):
    """A second agent of the case's queue, the one being mentioned."""
    user = make_user("agent", username="bob", first_name="Bob", last_name="Stone")
    support.members.add(user)
    return user


def note(case, author, body):
    return replies.add_note(case=case, author=author, body=body)


def badge(html: str) -> str | None:
    found = re.search(r'<span class="badge" data-unread="(\d+)">', html)
    return found[1] if found else None


# --- what is a mention --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("@bob can you check?", ["bob"]),
        ("Thanks @bob, and @sam.", ["bob", "sam"]),
        ("(@bob) @Bob @BOB", ["bob"]),  # once each, whatever the case
        ("mail ann@example.com or bob@x.org", []),  # email addresses are not mentions
        ("a@b.com", []),
        ("@@bob and x@bob", []),
        ("@ alone, or @", []),
        ("@first.last-2+x!", ["first.last-2+x"]),
    ],
)
def test_mentioned_usernames(text, names):
    assert mentioned_usernames(text) == names


# --- who is told --------------------------------------------------------------------------------


def test_mentioning_an_agent_of_the_queue_notifies_them_once(agent, bob, case):
    agent.first_name, agent.last_name = "Ada", "Lovelace"
    agent.save(update_fields=["first_name", "last_name"])
    interaction = note(case, agent, "@bob please call her back, @bob!")
    [told] = Notification.objects.all()
    assert (told.recipient, told.actor, told.read_at) == (bob, agent, None)
    assert told.verb == (
        f"Ada Lovelace mentioned you in a note on case #{case.pk}: Refund <b>now</b>"
    )
    assert told.url == f"/cases/{case.pk}/#interaction-{interaction.pk}"
    # The same note told again (a retried caller) stores nothing twice.
    notify_mentions(note_interaction=interaction, author=agent)
    assert Notification.objects.count() == 1


def test_the_mentioned_agent_sees_the_badge_on_their_next_page(client_for, agent, bob, case):
    client = client_for(agent)
    response = client.post(f"/cases/{case.pk}/note/", {"body": "Over to you @bob"})
    assert response.status_code == 302
    assert Notification.objects.filter(recipient=bob).count() == 1
    assert badge(client_for(bob).get("/cases/").text) == "1"
    assert badge(client_for(agent).get("/cases/").text) is None  # the author was not told


@pytest.mark.parametrize("role", ["supervisor", "cco"])
def test_the_queues_supervisor_and_the_cco_read_the_case_so_they_are_told(
    make_user, agent, case, role
):
    boss = make_user(role, username="boss")
    if role == "supervisor":
        case.queue.members.add(boss)  # a supervisor's team is their queues; the CCO reads all
    note(case, agent, "FYI @boss")
    assert list(Notification.objects.values_list("recipient", flat=True)) == [boss.pk]


def test_mentioning_a_marketer_an_unknown_name_or_an_outsider_tells_nobody(
    make_user, agent, marketer, case
):
    outsider = make_user("agent", username="olga")
    make_queue("Billing", members=[outsider])
    make_user(None, username="norole")
    inactive = make_user("agent", username="gone", is_active=False)
    case.queue.members.add(inactive)
    result = notify_mentions(
        note_interaction=note(case, agent, "@mia @nobody @olga @norole @gone @ada"),
        author=agent,
    )
    assert not Notification.objects.exists()
    assert result.notified == []
    assert result.ignored == ["mia", "nobody", "olga", "norole", "gone", "ada"]


def test_an_agent_assigned_the_case_outside_its_queue_is_told(make_user, agent, case):
    helper = make_user("agent", username="helper")
    case.assignee = helper
    case.save(update_fields=["assignee"])
    note(case, agent, "@helper see above")
    assert Notification.objects.get().recipient == helper


def test_an_email_address_is_not_a_mention(agent, bob, case):
    note(case, agent, "Customer wrote from bob@example.com, not our @-handle")
    assert not Notification.objects.exists()


def test_a_refused_note_tells_nobody(agent, bob, case):
    with pytest.raises(ValidationError):
        replies.add_note(case=case, author=agent, body="@bob look", set_status="nonsense")
    assert not Interaction.objects.exists()
    assert not Notification.objects.exists()


def test_only_notes_carry_mentions(agent, case):
    message = Interaction.objects.create(
        customer=case.customer, channel="email", kind="message", direction="in",
        occurred_at=case.created_at, body_text="@bob hi",
    )  # fmt: skip
    with pytest.raises(ValueError, match="only internal notes"):
        notify_mentions(note_interaction=message, author=agent)


# --- the notifications page ---------------------------------------------------------------------


def test_the_page_lists_newest_first_links_to_the_case_and_marks_all_read(
    client_for, agent, bob, case, support
):
    other = make_case(support, subject="Second case")
    first = note(case, agent, "@bob one")
    second = note(other, agent, "@bob two")
    client = client_for(bob)
    page = client.get(PAGE).text
    ids = [int(pk) for pk in re.findall(r'<li id="notification-(\d+)"', page)]
    newest, oldest = Notification.objects.order_by("-id")
    assert ids == [newest.pk, oldest.pk]
    assert page.count("<strong>New</strong>") == 2
    assert "Refund &lt;b&gt;now&lt;/b&gt;" in page  # the case subject is user text: escaped
    assert badge(page) == "2"

    response = client.get(f"/notifications/{oldest.pk}/")
    assert response.status_code == 302
    assert response["Location"] == f"/cases/{case.pk}/#interaction-{first.pk}"
    oldest.refresh_from_db()
    assert oldest.read_at is not None
    assert badge(client.get(PAGE).text) == "1"

    response = client.post("/notifications/read-all/", follow=True)
    assert "Marked 1 notification read." in response.text
    assert badge(response.text) is None
    assert not Notification.objects.filter(read_at__isnull=True).exists()
    assert "Mark all read" not in response.text
    assert second.pk  # both notes stay on the timeline


def test_someone_elses_notification_is_404_and_stays_unread(client_for, agent, bob, case):
    note(case, agent, "@bob private")
    told = Notification.objects.get()
    assert client_for(agent).get(f"/notifications/{told.pk}/").status_code == 404
    told.refresh_from_db()
    assert told.read_at is None


def test_the_empty_page_says_how_mentions_work(client_for, agent):
    page = client_for(agent).get(PAGE).text
    assert "Nothing yet" in page and "@ada" in page
    assert "Mark all read" not in page


def test_a_bad_page_position_is_a_400(client_for, agent):
    assert client_for(agent).get(PAGE + "?before=abc").status_code == 400


def test_the_page_query_count_does_not_grow(
    client_for, agent, bob, case, django_assert_num_queries
):
    client = client_for(bob)
    for n in range(3):
        note(case, agent, f"@bob {n}")
    client.get(PAGE)
    with CaptureQueriesContext(connection) as three:
        assert client.get(PAGE).text.count('<li id="notification-') == 3
    for n in range(20):
        note(case, agent, f"@bob more {n}")
    with django_assert_num_queries(len(three.captured_queries)):
        assert client.get(PAGE).text.count('<li id="notification-') == 23


def test_marketers_have_no_badge_but_an_empty_page(client_for, marketer):
    client = client_for(marketer)
    assert 'id="nav-notifications"' not in client.get("/campaigns/").text
    assert client.get(PAGE).status_code == 200


# --- live ---------------------------------------------------------------------------------------


def test_live_pages_listen_on_the_viewers_own_group(client_for, agent, bob, case):
    page = client_for(bob).get(f"/cases/{case.pk}/").text
    groups = f"group=case.{case.pk}&amp;group=customer.{case.customer_id}&amp;group=user.{bob.pk}"
    assert f'ws-connect="/ws/hub/?{groups}"' in page


def test_only_the_user_may_join_their_own_group(agent, bob):
    assert realtime.can_subscribe(bob, f"user.{bob.pk}")
    assert not realtime.can_subscribe(agent, f"user.{bob.pk}")


@pytest.mark.django_db(transaction=True)
def test_a_mention_pushes_the_badge_to_the_mentioned_user(client_for, agent, bob, case):
    def note_in_a_thread():
        try:
            note(case, agent, "@bob live")
        finally:
            connection.close()  # this thread's own connection, so the test database can go

    async def scenario():
        communicator = WebsocketCommunicator(HubConsumer.as_asgi(), f"/ws/hub/?group=user.{bob.pk}")
        communicator.scope["user"] = bob
        connected, _ = await communicator.connect()
        assert connected
        await until_subscribed(f"user.{bob.pk}")
        await asyncio.to_thread(note_in_a_thread)
        text = await communicator.receive_from(timeout=2)
        await communicator.disconnect()
        return text

    pushed = async_to_sync(scenario)()
    seq = realtime.current_seq(f"user.{bob.pk}")
    assert pushed == f"<!--wb:user.{bob.pk}:{seq}-->" + notifications.render_badge(
        bob, is_live=True
    )
    assert 'data-unread="1"' in pushed and 'hx-swap-oob="true"' in pushed
    http = client_for(bob).get("/notifications/badge/").text
    assert http == notifications.render_badge(bob)
    assert 'data-unread="1"' in http
