"""The customers API: who may read and write what, bad input named by field, keyset pages."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customers.consent import latest_consents, record_consent
from customers.identity import resolve_customer
from customers.models import Consent, Customer, Identity, Interaction, Kind
from customers.timeline import MAX_BODY_CHARS, PAGE_SIZE, record_interaction

BASE = "/api/customers/"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ann(db):
    return resolve_customer(
        channel="email", handle="ann@example.com", display_name="Ann Archer"
    ).customer


def send(client, method, path, payload=None):
    body = json.dumps(payload) if payload is not None else None
    return getattr(client, method)(path, data=body, content_type="application/json")


def note(customer, text, *, is_private=False, at=T0, channel="system", kind=Kind.NOTE):
    interaction, _ = record_interaction(
        customer=customer,
        channel=channel,
        kind=kind,
        direction="internal",
        title="Note",
        body_text=text,
        is_private=is_private,
        occurred_at=at,
    )
    return interaction


def counts():
    return (
        Customer.objects.count(),
        Identity.objects.count(),
        Consent.objects.count(),
        Interaction.objects.count(),
    )


def endpoints(pk):
    return [
        ("get", BASE, None),
        ("post", BASE, {"name": "Zed"}),
        ("get", f"{BASE}{pk}/", None),
        ("patch", f"{BASE}{pk}/", {"name": "Zed"}),
        ("get", f"{BASE}{pk}/identities/", None),
        ("post", f"{BASE}{pk}/identities/", {"channel": "email", "handle": "z@example.com"}),
        ("get", f"{BASE}{pk}/consents/", None),
        (
            "post",
            f"{BASE}{pk}/consents/",
            {"purpose": "marketing_email", "is_granted": True, "source": "api"},
        ),
        ("get", f"{BASE}{pk}/timeline/", None),
        (
            "post",
            f"{BASE}{pk}/interactions/",
            {"kind": "visit", "idempotency_key": "v-1"},
        ),
    ]


WRITES = [
    ("post", "", {"name": "Zed", "identities": [{"channel": "email", "handle": "z@example.com"}]}),
    ("patch", "{pk}/", {"name": "Zed"}),
    ("post", "{pk}/identities/", {"channel": "email", "handle": "z@example.com"}),
    ("post", "{pk}/interactions/", {"kind": "visit", "idempotency_key": "v-1"}),
]


# --- who may call --------------------------------------------------------------------------------


def test_anonymous_callers_get_401_everywhere_and_nothing_is_stored(client, ann):
    before = counts()
    for method, path, payload in endpoints(ann.pk):
        response = send(client, method, path, payload)
        assert response.status_code == 401, (method, path)
    assert counts() == before


def test_a_user_without_a_role_gets_403_everywhere_and_nothing_is_stored(
    client_for, no_role_user, ann
):
    client = client_for(no_role_user)
    before = counts()
    for method, path, payload in endpoints(ann.pk):
        response = send(client, method, path, payload)
        assert response.status_code == 403, (method, path)
    assert counts() == before


@pytest.mark.parametrize(("method", "path", "payload"), WRITES)
def test_marketers_read_but_may_not_write_and_nothing_is_stored(
    client_for, marketer, ann, method, path, payload
):
    client = client_for(marketer)
    before = counts()

    response = send(client, method, BASE + path.format(pk=ann.pk), payload)

    assert response.status_code == 403
    assert response.json() == {"detail": "Your role does not allow this."}
    assert counts() == before
    ann.refresh_from_db()
    assert ann.display_name == "Ann Archer"


def test_marketers_may_not_record_consent(client_for, marketer, ann):
    response = send(
        client_for(marketer),
        "post",
        f"{BASE}{ann.pk}/consents/",
        {"purpose": "marketing_email", "is_granted": True, "source": "email"},
    )

    assert response.status_code == 403
    assert Consent.objects.count() == 0


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer", "cco"])
def test_every_role_reads_customers(make_user, client_for, ann, role):
    client = client_for(make_user(role))
    for method, path, _ in endpoints(ann.pk):
        if method == "get":
            assert client.get(path).status_code == 200, path


def test_a_token_works_like_a_session(client, agent, ann):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=agent)
    response = client.get(f"{BASE}{ann.pk}/", HTTP_AUTHORIZATION=f"Token {token.key}")

    assert response.status_code == 200
    assert response.json()["name"] == "Ann Archer"


# --- list, search, read --------------------------------------------------------------------------


def test_the_list_is_keyset_paginated_newest_first_without_merged_customers(client_for, agent, db):
    people = [Customer.objects.create(display_name=f"Person {n}") for n in range(5)]
    Customer.objects.filter(pk=people[2].pk).update(merged_into=people[0])
    client = client_for(agent)

    first = client.get(BASE, {"page_size": 2}).json()
    second = client.get(first["next"]).json()

    names = [c["name"] for page in (first, second) for c in page["results"]]
    assert names == ["Person 4", "Person 3", "Person 1", "Person 0"]
    assert second["next"] is None
    assert "cursor=" in first["next"]
    assert "offset" not in first["next"]


def test_the_list_costs_the_same_queries_for_more_customers(client_for, agent, db):
    client = client_for(agent)
    resolve_customer(channel="email", handle="c0@example.com")
    client.get(BASE)
    with CaptureQueriesContext(connection) as few:
        assert len(client.get(BASE).json()["results"]) == 1
    for n in range(1, 12):
        resolve_customer(channel="email", handle=f"c{n}@example.com")
        resolve_customer(channel="x", handle=f"@c{n}")

    with CaptureQueriesContext(connection) as many:
        assert len(client.get(BASE).json()["results"]) == 23

    assert len(many.captured_queries) == len(few.captured_queries)


def test_search_finds_by_name_and_by_handle(client_for, marketer, ann):
    resolve_customer(channel="email", handle="bob@example.com", display_name="Bob Baker")
    client = client_for(marketer)

    by_name = client.get(BASE, {"q": "ann"}).json()
    by_handle = client.get(BASE, {"q": "BOB@exa"}).json()
    nothing = client.get(BASE, {"q": "zzz"}).json()

    assert [c["name"] for c in by_name["results"]] == ["Ann Archer"]
    assert [c["name"] for c in by_handle["results"]] == ["Bob Baker"]
    assert nothing == {"next": None, "previous": None, "results": []}


def test_a_customer_reads_with_identities(client_for, marketer, ann):
    response = client_for(marketer).get(f"{BASE}{ann.pk}/")

    body = response.json()
    assert body["name"] == "Ann Archer"
    assert body["lifecycle_stage"] == "lead"
    assert [(i["channel"], i["handle"]) for i in body["identities"]] == [
        ("email", "ann@example.com")
    ]
    assert body["merged_into"] is None
    assert client_for(marketer).get(f"{BASE}999999/").status_code == 404


# --- create --------------------------------------------------------------------------------------


def test_service_creates_a_customer_with_normalised_identities(client_for, agent, db):
    response = send(
        client_for(agent),
        "post",
        BASE,
        {
            "name": "Cleo Carter",
            "lifecycle_stage": "customer",
            "attributes": {"plan": "gold", "products": ["kettle"]},
            "identities": [
                {"channel": "email", "handle": "Cleo@Example.com"},
                {"channel": "phone", "handle": "+44 1632 960003"},
                {"channel": "instagram", "handle": "@Cleo.C"},
            ],
        },
    )

    assert response.status_code == 201
    body = response.json()
    customer = Customer.objects.get(pk=body["id"])
    assert (customer.display_name, customer.lifecycle_stage) == ("Cleo Carter", "customer")
    assert customer.attributes == {"plan": "gold", "products": ["kettle"]}
    assert sorted((i["channel"], i["handle"]) for i in body["identities"]) == [
        ("email", "cleo@example.com"),
        ("instagram", "@cleo.c"),
        ("phone", "+441632960003"),
    ]
    entry = Interaction.objects.get(customer=customer)
    assert (entry.kind, entry.title, entry.actor) == ("profile", "Customer created", agent)


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        (
            {"name": "Zed", "identities": [{"channel": "pigeon", "handle": "zed"}]},
            {"identities": {"0": {"channel": ['"pigeon" is not a valid choice.']}}},
        ),
        (
            {"name": "Zed", "identities": [{"channel": "email", "handle": "zed@"}]},
            {"identities": {"0": {"handle": ["'zed@' is not an email address"]}}},
        ),
        (
            {
                "name": "Zed",
                "identities": [
                    {"channel": "email", "handle": "zed@example.com"},
                    {"channel": "x", "handle": "not a handle!"},
                ],
            },
            {"identities": {"1": {"handle": ["'not a handle!' is not a valid @handle"]}}},
        ),
        ({"name": "Z" * 201}, {"name": ["Ensure this field has no more than 200 characters."]}),
        (
            {"name": "Zed", "lifecycle_stage": "vip"},
            {"lifecycle_stage": ['"vip" is not a valid choice.']},
        ),
        (
            {"name": "Zed", "timezone": "Mars/Olympus"},
            {"timezone": ["unknown time zone 'Mars/Olympus'"]},
        ),
        ({"name": "Zed", "attributes": ["not", "an", "object"]}, None),
        ({"name": "Zed", "attributes": {"blob": "x" * 70_000}}, None),
        ({}, {"name": ["This field is required."]}),
    ],
    ids=[
        "unknown-channel",
        "malformed-email",
        "second-handle-malformed",
        "long-name",
        "bad-stage",
        "bad-timezone",
        "attributes-not-object",
        "attributes-too-big",
        "no-name",
    ],
)
def test_bad_customers_are_refused_naming_the_field(client_for, agent, db, payload, errors):
    response = send(client_for(agent), "post", BASE, payload)

    assert response.status_code == 400
    if errors is not None:
        assert response.json() == errors
    else:
        assert list(response.json()) == ["attributes"]
    assert counts() == (0, 0, 0, 0)


def test_a_handle_that_belongs_to_someone_else_refuses_the_whole_customer(client_for, agent, ann):
    before = counts()
    response = send(
        client_for(agent),
        "post",
        BASE,
        {
            "name": "Impostor",
            "identities": [
                {"channel": "x", "handle": "@impostor"},
                {"channel": "email", "handle": "ANN@example.com"},
            ],
        },
    )

    assert response.status_code == 400
    assert response.json() == {
        "identities": {
            "1": {"handle": [f"'ann@example.com' belongs to another customer (#{ann.pk})"]}
        }
    }
    assert counts() == before


# --- update --------------------------------------------------------------------------------------


def test_service_updates_a_profile_and_the_timeline_says_so(client_for, supervisor, ann):
    ann.attributes = {"plan": "bronze", "region": "north"}
    ann.save(update_fields=["attributes"])

    response = send(
        client_for(supervisor),
        "patch",
        f"{BASE}{ann.pk}/",
        {
            "name": "Ann Archer-Baker",
            "lifecycle_stage": "loyal",
            "attributes": {"plan": "gold", "region": None},
            "timezone": "Europe/London",
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Ann Archer-Baker"
    assert body["lifecycle_stage"] == "loyal"
    assert body["attributes"] == {"plan": "gold"}
    assert body["timezone"] == "Europe/London"
    entry = Interaction.objects.get(customer=ann, kind="profile")
    assert entry.title == "Profile changed: name, lifecycle stage, attributes, timezone"
    assert entry.actor == supervisor


def test_a_patch_that_changes_nothing_adds_nothing_to_the_timeline(client_for, cco, ann):
    response = send(client_for(cco), "patch", f"{BASE}{ann.pk}/", {"name": "Ann Archer"})

    assert response.status_code == 200
    assert not Interaction.objects.filter(customer=ann).exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"lifecycle_stage": "vip"}, "lifecycle_stage"),
        ({"name": ""}, "name"),
        ({"name": "A" * 201}, "name"),
        ({"timezone": "Nowhere/Town"}, "timezone"),
        ({"attributes": "plan=gold"}, "attributes"),
    ],
)
def test_a_bad_patch_is_refused_naming_the_field(client_for, agent, ann, payload, field):
    response = send(client_for(agent), "patch", f"{BASE}{ann.pk}/", payload)

    assert response.status_code == 400
    assert list(response.json()) == [field]
    ann.refresh_from_db()
    assert (ann.display_name, ann.lifecycle_stage) == ("Ann Archer", "lead")


def test_put_is_not_offered(client_for, agent, ann):
    response = send(client_for(agent), "put", f"{BASE}{ann.pk}/", {"name": "Zed"})

    assert response.status_code == 405


def test_writes_to_a_merged_customer_name_the_survivor(client_for, agent, ann):
    survivor = Customer.objects.create(display_name="Survivor")
    Customer.objects.filter(pk=ann.pk).update(merged_into=survivor)

    response = send(client_for(agent), "patch", f"{BASE}{ann.pk}/", {"name": "Zed"})

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Customer {ann.pk} was merged into {survivor.pk}; use that one."
    }
    assert client_for(agent).get(f"{BASE}{ann.pk}/").json()["merged_into"] == survivor.pk


# --- identities ----------------------------------------------------------------------------------


def test_service_attaches_an_identity_once(client_for, agent, ann):
    client = client_for(agent)
    path = f"{BASE}{ann.pk}/identities/"

    first = send(client, "post", path, {"channel": "whatsapp", "handle": "+44 1632 960009"})
    again = send(client, "post", path, {"channel": "whatsapp", "handle": "+441632960009"})
    listed = client.get(path).json()

    assert first.status_code == 201
    assert again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["handle"] == "+441632960009"
    assert sorted(i["handle"] for i in listed["results"]) == ["+441632960009", "ann@example.com"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"channel": "telegram", "handle": "ann"}, "channel"),
        ({"channel": "api", "handle": "ann"}, "channel"),
        ({"channel": "phone", "handle": "12"}, "handle"),
        ({"channel": "email", "handle": "x" * 300}, "handle"),
        ({"channel": "email", "handle": "bob@example.com"}, "handle"),
    ],
    ids=["unknown-channel", "not-an-identity-channel", "bad-phone", "too-long", "taken"],
)
def test_a_bad_identity_is_refused_naming_the_field(client_for, agent, ann, payload, field):
    resolve_customer(channel="email", handle="bob@example.com")
    before = counts()

    response = send(client_for(agent), "post", f"{BASE}{ann.pk}/identities/", payload)

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert counts() == before


# --- consents ------------------------------------------------------------------------------------


def test_an_agent_records_consent_and_it_takes_effect_at_once(client_for, agent, ann):
    client = client_for(agent)
    path = f"{BASE}{ann.pk}/consents/"

    granted = send(
        client, "post", path, {"purpose": "marketing_email", "is_granted": True, "source": "chat"}
    )
    withdrawn = send(
        client,
        "post",
        path,
        {"purpose": "marketing_email", "is_granted": False, "source": "phone", "note": "Asked."},
    )

    assert granted.status_code == withdrawn.status_code == 201
    assert withdrawn.json()["recorded_by"] == "ada"
    assert latest_consents(ann.pk)["marketing_email"].is_granted is False
    history = client.get(path).json()["results"]
    assert [(c["is_granted"], c["source"]) for c in history] == [(False, "phone"), (True, "chat")]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"purpose": "telepathy", "is_granted": True, "source": "chat"}, "purpose"),
        ({"purpose": "marketing_email", "is_granted": True, "source": "pigeon"}, "source"),
        ({"purpose": "marketing_email", "source": "chat"}, "is_granted"),
        (
            {"purpose": "marketing_email", "is_granted": True, "source": "chat", "note": "n" * 501},
            "note",
        ),
    ],
)
def test_a_bad_consent_is_refused_naming_the_field(client_for, cco, ann, payload, field):
    response = send(client_for(cco), "post", f"{BASE}{ann.pk}/consents/", payload)

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert Consent.objects.count() == 0


# --- timeline ------------------------------------------------------------------------------------


def test_the_timeline_pages_by_keyset_without_gaps_or_repeats(client_for, agent, ann):
    for n in range(PAGE_SIZE + 10):
        # Pairs share a time: the id breaks the tie.
        note(ann, f"entry {n}", at=T0 + timedelta(minutes=n // 2))
    client = client_for(agent)

    first = client.get(f"{BASE}{ann.pk}/timeline/").json()
    second = client.get(first["next"]).json()

    bodies = [e["body_text"] for e in first["results"] + second["results"]]
    assert len(first["results"]) == PAGE_SIZE
    assert second["next"] is None
    assert sorted(bodies, key=lambda b: -int(b.split()[1])) == bodies
    assert len(set(bodies)) == PAGE_SIZE + 10


def test_the_timeline_filters_by_channel_and_kind(client_for, agent, ann):
    note(ann, "a note")
    note(ann, "an email", channel="email", kind=Kind.MESSAGE)
    note(ann, "a purchase", channel="api", kind=Kind.PURCHASE)
    client = client_for(agent)
    path = f"{BASE}{ann.pk}/timeline/"

    def bodies(query):
        return sorted(e["body_text"] for e in client.get(path + query).json()["results"])

    assert bodies("?channel=email") == ["an email"]
    assert bodies("?channel=email,api") == ["a purchase", "an email"]
    assert bodies("?kind=note&kind=purchase") == ["a note", "a purchase"]
    assert bodies("?channel=email&kind=note") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("channel=pigeon", "channel"), ("kind=gossip", "kind"), ("cursor=nonsense", "cursor")],
)
def test_bad_timeline_filters_are_refused_naming_them(client_for, agent, ann, query, field):
    response = client_for(agent).get(f"{BASE}{ann.pk}/timeline/?{query}")

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_marketers_see_that_a_private_note_exists_but_not_its_body(
    client_for, marketer, agent, ann
):
    note(ann, "Customer is upset about the refund", is_private=True)
    path = f"{BASE}{ann.pk}/timeline/"

    as_marketer = client_for(marketer).get(path).json()["results"][0]
    as_agent = client_for(agent).get(path).json()["results"][0]

    assert as_marketer["title"] == "Private note by service"
    assert as_marketer["body_text"] is None
    assert as_marketer["body_html"] is None
    assert as_marketer["is_private"] is True
    assert "upset" not in json.dumps(as_marketer)
    assert as_agent["body_text"] == "Customer is upset about the refund"


def test_the_timeline_costs_the_same_queries_for_a_full_page(client_for, agent, ann):
    client = client_for(agent)
    record_consent(customer=ann, purpose="profiling", is_granted=True, source="chat")
    client.get(f"{BASE}{ann.pk}/timeline/")
    with CaptureQueriesContext(connection) as one:
        client.get(f"{BASE}{ann.pk}/timeline/")
    for n in range(30):
        note(ann, f"entry {n}")
        record_consent(customer=ann, purpose="profiling", is_granted=n % 2 == 0, source="chat")

    with CaptureQueriesContext(connection) as full:
        assert len(client.get(f"{BASE}{ann.pk}/timeline/").json()["results"]) == PAGE_SIZE

    assert len(full.captured_queries) == len(one.captured_queries)


# --- external interactions -----------------------------------------------------------------------


def purchase(**fields):
    return {
        "kind": "purchase",
        "idempotency_key": "order-1001",
        "occurred_at": "2026-03-02T10:00:00Z",
        "title": "Order 1001",
        "body_text": "1 kettle",
        "data": {"amount": "19.99", "currency": "eur"},
        **fields,
    }


def test_a_purchase_is_recorded_once_per_idempotency_key(client_for, agent, ann):
    client = client_for(agent)
    path = f"{BASE}{ann.pk}/interactions/"

    first = send(client, "post", path, purchase())
    repeat = send(client, "post", path, purchase(title="Changed on retry"))

    assert first.status_code == 201
    assert repeat.status_code == 200
    assert repeat.json() == first.json()
    entry = Interaction.objects.get(customer=ann)
    assert (entry.channel, entry.kind, entry.direction) == ("api", "purchase", "in")
    assert entry.external_id == "order-1001"
    assert entry.title == "Order 1001"
    assert entry.data == {"amount": "19.99", "currency": "EUR"}
    assert entry.occurred_at == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert entry.actor == agent


def test_a_key_used_for_another_customer_is_a_conflict(client_for, agent, ann):
    bob = resolve_customer(channel="email", handle="bob@example.com").customer
    client = client_for(agent)
    send(client, "post", f"{BASE}{bob.pk}/interactions/", purchase())

    response = send(client, "post", f"{BASE}{ann.pk}/interactions/", purchase())

    assert response.status_code == 409
    assert not Interaction.objects.filter(customer=ann).exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "message"}, "kind"),
        ({"kind": "note"}, "kind"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
        ({"body_text": "x" * (MAX_BODY_CHARS + 1)}, "body_text"),
        ({"body_text": "x" * 1_000_000}, "body_text"),
        ({"title": "t" * 301}, "title"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"data": {"amount": "lots"}}, "data"),
        ({"data": {"amount": "NaN"}}, "data"),
        ({"data": {"currency": "euro"}}, "data"),
        ({"data": {"blob": "x" * 20_000}}, "data"),
        ({"data": "19.99 EUR"}, "data"),
    ],
)
def test_a_bad_interaction_is_refused_naming_the_field(client_for, agent, ann, fields, field):
    response = send(client_for(agent), "post", f"{BASE}{ann.pk}/interactions/", purchase(**fields))

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not Interaction.objects.exists()


def test_the_idempotency_key_is_required(client_for, agent, ann):
    payload = purchase()
    del payload["idempotency_key"]

    response = send(client_for(agent), "post", f"{BASE}{ann.pk}/interactions/", payload)

    assert response.status_code == 400
    assert response.json() == {"idempotency_key": ["This field is required."]}
    assert not Interaction.objects.exists()


XSS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "javascript:alert(1)",
    "\"'><svg onload=alert(1)>",
]


@pytest.mark.parametrize("payload", XSS)
def test_markup_goes_in_and_out_as_inert_json_text(client_for, agent, payload):
    client = client_for(agent)
    created = send(client, "post", BASE, {"name": payload, "attributes": {"note": payload}})
    pk = created.json()["id"]
    send(client, "post", f"{BASE}{pk}/interactions/", purchase(title=payload, body_text=payload))

    read = client.get(f"{BASE}{pk}/")
    timeline = client.get(f"{BASE}{pk}/timeline/")

    assert read["Content-Type"] == "application/json"
    assert read.json()["name"] == payload
    entry = next(e for e in timeline.json()["results"] if e["kind"] == "purchase")
    assert (entry["title"], entry["body_text"], entry["body_html"]) == (payload, payload, "")


def test_the_schema_documents_the_customer_endpoints(client_for, cco):
    paths = client_for(cco).get("/api/schema/?format=json").json()["paths"]

    for path in [
        "/api/customers/",
        "/api/customers/{id}/",
        "/api/customers/{id}/identities/",
        "/api/customers/{id}/consents/",
        "/api/customers/{id}/timeline/",
        "/api/customers/{id}/interactions/",
    ]:
        assert path in paths
    assert set(paths["/api/customers/{id}/"]) == {"get", "patch"}
