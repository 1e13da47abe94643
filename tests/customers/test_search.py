"""Customer search (names, emails, phones, @handles) and the customer list that shows it."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customers.models import Customer, Identity
from customers.search import search_customers

HTMX = {"HTTP_HX_REQUEST": "true"}


def customer(name, *handles, **fields):
    """A customer with identities given as "channel:handle" (already normalised)."""
    person = Customer.objects.create(display_name=name, **fields)
    for spec in handles:
        channel, handle = spec.split(":", 1)
        Identity.objects.create(customer=person, channel=channel, handle=handle)
    return person


def names(query, **kwargs):
    return [c.display_name for c in search_customers(query, **kwargs)]


@pytest.fixture
def people(db):
    return {
        "ann": customer("Ann O'Brien", "email:ann.obrien@example.com", "phone:+447700900123"),
        "annabel": customer("Annabel Lee", "x:@annabel_tweets", "instagram:@bel.pics"),
        "bob": customer("Bob Annson", "whatsapp:+14155552671", "facebook:1234567890123"),
        "zed": customer("Zed Smith", "email:zed@example.org", "chat:visitor-Zx81-token"),
    }


# --- the search service -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("ann", ["Ann O'Brien", "Annabel Lee", "Bob Annson"]),  # the start of any name word
        ("ANN", ["Ann O'Brien", "Annabel Lee", "Bob Annson"]),
        ("brie ann", ["Ann O'Brien"]),  # word order does not matter
        ("O'Brien", ["Ann O'Brien"]),
        ("lee annab", ["Annabel Lee"]),
        ("smi", ["Zed Smith"]),
        ("brien", ["Ann O'Brien"]),
        ("rien", []),  # names match by the start of a word, not the middle
        ("ann zed", []),
    ],
)
def test_search_finds_customers_by_the_start_of_name_words(people, query, found):
    assert names(query) == found


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("ann.obrien@example.com", ["Ann O'Brien"]),
        ("Ann.OBrien@Exa", ["Ann O'Brien"]),  # the start of an email, any case
        ("zed@", ["Zed Smith"]),
        ("07700 900123", ["Ann O'Brien"]),  # a phone in national format
        ("07700900123", ["Ann O'Brien"]),
        ("07700 900", ["Ann O'Brien"]),  # …or its beginning
        ("+44 7700 900123", ["Ann O'Brien"]),
        ("0044 7700 900123", ["Ann O'Brien"]),
        ("+1 (415) 555", ["Bob Annson"]),
        ("14155552671", ["Bob Annson"]),
        ("@Annabel_Tw", ["Annabel Lee"]),  # @handles without case
        ("ANNABEL_T", ["Annabel Lee"]),  # …and without their @
        ("@bel.p", ["Annabel Lee"]),
        ("12345678", ["Bob Annson"]),  # a Messenger id
        ("visitor-Zx81", ["Zed Smith"]),
        ("visitor-zx81", []),  # chat tokens keep their case
    ],
)
def test_search_finds_customers_by_the_start_of_any_handle(people, query, found):
    assert names(query) == found


def test_search_finds_a_customer_once_when_name_and_handle_both_match(db):
    customer("Ann Lee", "email:ann@example.com", "x:@ann")
    assert names("ann") == ["Ann Lee"]


def test_search_leaves_out_merged_customers(people):
    tombstone = customer("Ann Merged", "email:ann.merged@example.com", merged_into=people["zed"])

    assert "Ann Merged" not in names("ann")
    assert names("ann.merged@") == []
    assert tombstone.pk not in [c.pk for c in search_customers("Merged")]


def test_search_returns_at_most_the_limit_ordered_by_name(db):
    for n in reversed(range(30)):
        customer(f"Ann {n:02d}")

    found = names("ann", limit=25)

    assert len(found) == 25
    assert found == sorted(found)
    assert found[0] == "Ann 00"


@pytest.mark.parametrize(
    "query",
    ["", "   ", "!!!", "'", "&|!():*", "ann & | ! ( ) :*", "'; DROP TABLE customers_customer; --",
     "\\", "ann:*B", "+", "-", "@", "a" * 500, "ann\x00"],
)  # fmt: skip
def test_odd_input_is_harmless(people, query):
    result = names(query)  # never a database error
    assert isinstance(result, list)
    assert Customer.objects.count() == 4


def test_search_is_one_sql_query(people, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert names("ann") == ["Ann O'Brien", "Annabel Lee", "Bob Annson"]


# --- the customer list page -------------------------------------------------------------------


def test_the_list_with_no_customers_says_so(client_for, marketer):
    response = client_for(marketer).get("/customers/")
    assert response.status_code == 200
    assert "<h1>Customers</h1>" in response.text
    assert "No customers yet" in response.text


def test_signed_out_visitor_is_sent_to_sign_in(client, db):
    response = client.get("/customers/?q=ann")
    assert response["Location"] == "/accounts/login/?next=/customers/%3Fq%3Dann"


def test_user_without_role_cannot_search(client_for, no_role_user, people):
    response = client_for(no_role_user).get("/customers/?q=ann")
    assert response.status_code == 403
    assert "Ann O&#x27;Brien" not in response.text


def test_the_search_box_is_labelled_and_focused(client_for, agent, db):
    text = client_for(agent).get("/customers/").text
    assert '<label for="customer-search">' in text
    field = re.search(r'<input type="text" id="customer-search" name="q"[^>]*>', text)[0]
    assert " autofocus " in field
    assert 'hx-trigger="input changed delay:300ms"' in field
    assert 'hx-target="#results"' in field


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer", "cco"])
def test_each_role_finds_a_customer_and_opens_their_page(client_for, make_user, people, role):
    text = client_for(make_user(role)).get("/customers/?q=07700 900123").text
    assert f'<a href="/customers/{people["ann"].pk}/">Ann O&#x27;Brien</a>' in text
    assert "1 match for" in text
    assert "Zed " not in text  # a name, not three letters a random CSRF token may hold


def test_a_search_without_match_says_so_escaped(client_for, agent, people):
    text = client_for(agent).get("/customers/", {"q": "<b>nobody</b>"}).text
    assert "No match for \u2018&lt;b&gt;nobody&lt;/b&gt;\u2019" in text
    assert "<b>nobody</b>" not in text


def test_the_live_search_returns_only_the_results(client_for, agent, people):
    response = client_for(agent).get("/customers/?q=annab", **HTMX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="results"')
    assert "<html" not in response.text
    assert "Annabel Lee" in response.text
    assert "HX-Request" in response["Vary"]


def test_going_back_in_history_gets_the_whole_page(client_for, agent, people):
    headers = {**HTMX, "HTTP_HX_HISTORY_RESTORE_REQUEST": "true"}
    response = client_for(agent).get("/customers/?q=annab", **headers)
    assert "<html" in response.text


def test_the_list_shows_identities_stage_and_creation(client_for, agent, people):
    text = client_for(agent).get("/customers/?q=ann.obrien").text
    row = text.split("<tbody hx-disable>")[1].split("</tbody>")[0]
    assert "ann.obrien@example.com" in row
    assert "+447700900123" in row
    assert "Lead" in row


def test_the_list_shows_the_newest_first_with_an_older_link(client_for, agent, db):
    made = [customer(f"Person {n:03d}") for n in range(60)]
    client = client_for(agent)

    first = client.get("/customers/").text
    older_href = re.search(r'<a href="(/customers/\?before=\d+)">Older customers', first)[1]
    older = client.get(older_href).text

    first_names = re.findall(r">(Person \d+)</a>", first)
    older_names = re.findall(r">(Person \d+)</a>", older)
    assert first_names == [c.display_name for c in reversed(made)][:50]
    assert older_names == [c.display_name for c in reversed(made)][50:]
    assert "Older customers" not in older
    assert "Newest customers" in older


def test_the_list_leaves_out_merged_customers(client_for, agent, db):
    survivor = customer("Ann Survivor")
    customer("Ann Tombstone", merged_into=survivor)
    text = client_for(agent).get("/customers/").text
    assert "Ann Survivor" in text
    assert "Ann Tombstone" not in text


def test_a_malformed_list_position_is_a_400_naming_it(client_for, agent, db):
    response = client_for(agent).get("/customers/?before=abc")
    assert response.status_code == 400
    assert response.text == "before: not a position in the customer list"


def test_list_query_count_does_not_grow_with_customers(
    client_for, agent, db, django_assert_num_queries
):
    client = client_for(agent)
    for n in range(5):
        customer(f"Few {n}", f"email:few{n}@example.com", f"x:@few{n}")
    client.get("/customers/")
    with CaptureQueriesContext(connection) as with_five:
        client.get("/customers/")
        client.get("/customers/?q=few")

    for n in range(60):
        customer(f"Many {n}", f"email:many{n}@example.com", f"x:@many{n}", f"chat:visitor-{n:06d}")
    with django_assert_num_queries(len(with_five.captured_queries)):
        client.get("/customers/")
        client.get("/customers/?q=many")
