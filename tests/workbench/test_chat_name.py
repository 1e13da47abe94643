"""A chat visitor's optional name: validated on the socket, naming the customer made for them (never
renaming one who exists, never matching an identity), shown escaped to agents."""

import pytest
from asgiref.sync import async_to_sync

from cases.models import Case
from customers.identity import resolve_customer
from customers.models import Customer, Identity
from tests.workbench.test_chat import counts, hear, messages, open_socket, say
from workbench.connectors import chat

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_chat")]


def chat_as(*frames, token=None, hello_name=None) -> list[dict]:
    """Say hello (with `hello_name` when given), send each frame, return every frame heard."""

    async def scenario():
        socket = await open_socket()
        greeting = {"type": "hello", "token": token, "last_seen": None}
        if hello_name is not None:
            greeting["name"] = hello_name
        await say(socket, **greeting)
        heard = [await hear(socket)]
        if heard[0]["type"] == "error":
            heard.append(await hear(socket))
        for frame in frames:
            await say(socket, **frame)
            heard.append(await hear(socket))
            if frame["type"] == "email" and heard[-1]["type"] == "message":
                heard.append(await hear(socket))
        await socket.disconnect()
        return heard

    return async_to_sync(scenario)()


def test_a_visitor_who_gives_a_name_gets_a_customer_of_that_name(support):
    heard = chat_as(
        {"type": "message", "id": "11111111-name", "text": "Hello", "name": "  Grace Hopper "}
    )

    assert heard[-1]["type"] == "message"
    customer = Customer.objects.get()
    assert customer.display_name == "Grace Hopper"
    entry = messages().get()
    assert entry.actor_label == "Grace Hopper"
    assert Identity.objects.get(channel="chat").display_name == "Grace Hopper"


def test_a_visitor_without_a_name_is_a_chat_visitor_with_a_short_handle(support):
    heard = chat_as({"type": "message", "id": "11111111-anon", "text": "Hello"})

    visitor = heard[0]["visitor"]
    assert Customer.objects.get().display_name == f"Chat visitor {visitor[2:8]}"


def test_the_name_given_in_the_hello_names_the_first_message(support):
    chat_as({"type": "message", "id": "11111111-helo", "text": "Hi"}, hello_name="Ada L.")

    assert Customer.objects.get().display_name == "Ada L."


def test_the_name_given_with_an_email_names_the_customer_who_waits_for_email(support):
    heard = chat_as(
        {
            "type": "email",
            "id": "11111111-mail",
            "email": "grace@example.com",
            "text": "My kettle leaks.",
            "name": "Grace",
        }
    )

    assert heard[-1] == {"type": "email_saved", "email": "grace@example.com"}
    customer = Customer.objects.get()
    assert customer.display_name == "Grace"
    assert set(customer.identities.values_list("channel", flat=True)) == {"chat", "email"}


def test_a_name_of_80_characters_is_taken_whole(support):
    name = "G" * 80

    chat_as({"type": "message", "id": "11111111-long", "text": "Hi", "name": name})

    assert Customer.objects.get().display_name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("G" * 81, "Keep your name to 80 characters or fewer."),
        ("Grace\nHopper", "Your name has characters we cannot show; type it plainly."),
        ("Grace\x07", "Your name has characters we cannot show; type it plainly."),
        ("\u202eeciffo tsop", "Your name has characters we cannot show; type it plainly."),
        (42, "Your name must be text."),
    ],
)
def test_a_malformed_name_is_refused_with_an_error_frame_and_nothing_is_stored(
    support, name, reason
):
    heard = chat_as({"type": "message", "id": "11111111-badn", "text": "Hello", "name": name})

    assert heard[-1] == {"type": "error", "code": "invalid_name", "message": reason}
    assert counts() == (0, 0, 0)


def test_a_malformed_name_in_the_hello_is_refused_and_the_session_goes_on_unnamed(support):
    heard = chat_as(
        {"type": "message", "id": "11111111-goon", "text": "Hello"}, hello_name="Bad\x00name"
    )

    assert heard[0]["code"] == "invalid_name" and heard[1]["type"] == "welcome"
    assert heard[-1]["type"] == "message"
    assert Customer.objects.get().display_name.startswith("Chat visitor ")


def test_a_name_never_renames_a_customer_who_exists(support):
    token, visitor = chat.issue_token()
    known = resolve_customer(channel="chat", handle=visitor, display_name="Grace Hopper").customer

    chat_as({"type": "message", "id": "11111111-keep", "text": "Hi", "name": "Bob"}, token=token)

    known.refresh_from_db()
    assert known.display_name == "Grace Hopper"
    assert Customer.objects.count() == 1 and messages().get().customer_id == known.pk


def test_a_name_is_never_used_to_find_a_customer(support):
    existing = Customer.objects.create(display_name="Grace Hopper")

    chat_as({"type": "message", "id": "11111111-twin", "text": "Hi", "name": "Grace Hopper"})

    visitor_customer = Identity.objects.get(channel="chat").customer
    assert visitor_customer.pk != existing.pk
    assert Customer.objects.filter(display_name="Grace Hopper").count() == 2


def test_agents_see_the_name_escaped_on_the_case_and_its_timeline(support, ada, client_for):
    chat_as({"type": "message", "id": "11111111-html", "text": "Hi", "name": "Grace <b>Hopper</b>"})
    case = Case.objects.get()

    html = client_for(ada).get(f"/cases/{case.pk}/").text

    assert "Grace &lt;b&gt;Hopper&lt;/b&gt;" in html
    assert "<b>Hopper</b>" not in html
