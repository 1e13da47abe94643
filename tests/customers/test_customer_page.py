"""The customer page: who may open it, what each role sees, the timeline's filters and pages."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from customers import summary
from customers.fragments import render_new_interaction
from customers.models import Customer, Identity, Interaction
from customers.timeline import record_interaction
from tests.customers.test_timeline_service import XSS_PAYLOADS

HTMX = {"HTTP_HX_REQUEST": "true"}
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ann(db):
    customer = Customer.objects.create(
        display_name="Ann Lee", lifecycle_stage="loyal", attributes={"plan": "Pro", "seats": 3}
    )
    Identity.objects.create(customer=customer, channel="email", handle="ann@example.com")
    Identity.objects.create(customer=customer, channel="x", handle="@annlee")
    return customer


def page_url(customer, **query):
    url = reverse("customers:detail", args=[customer.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def add_messages(customer, count, *, channel="email", kind="message", start=START):
    """`count` interactions a minute apart, the newest last (bulk: the service has its tests)."""
    Interaction.objects.bulk_create(
        Interaction(customer=customer, channel=channel, kind=kind, direction="in",
                    occurred_at=start + timedelta(minutes=n), title=f"{channel} {n}",
                    body_text=f"{channel} body {n}")
        for n in range(count)
    )  # fmt: skip


def entry_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<li id="interaction-(\d+)"', html)]


def private_note(customer, author):
    return record_interaction(
        customer=customer, channel="system", kind="note", direction="internal",
        title="Refund approved", body_text="Customer threatened to sue; be careful.",
        is_private=True, actor=author,
    )[0]  # fmt: skip


# --- who may open it --------------------------------------------------------------------------


def test_signed_out_visitor_is_sent_to_sign_in(client, ann):
    response = client.get(page_url(ann))
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=/customers/{ann.pk}/"


def test_user_without_role_cannot_open_a_customer(client_for, no_role_user, ann):
    response = client_for(no_role_user).get(page_url(ann))
    assert response.status_code == 403
    assert "Ann Lee" not in response.text


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer", "cco"])
def test_every_role_reads_the_customer_page(client_for, make_user, ann, role):
    response = client_for(make_user(role)).get(page_url(ann))

    assert response.status_code == 200
    assert "<h1>Ann Lee</h1>" in response.text
    assert "Loyal" in response.text
    assert "ann@example.com" in response.text
    assert "@annlee" in response.text
    assert '<th scope="row">plan</th><td>Pro</td>' in response.text
    assert '<th scope="row">seats</th><td>3</td>' in response.text


def test_unknown_customer_is_404(client_for, agent, db):
    assert client_for(agent).get("/customers/987654/").status_code == 404


def test_a_merged_customer_redirects_to_the_survivor_with_a_message(client_for, agent, ann):
    tombstone = Customer.objects.create(display_name="Ann L.", merged_into=ann)

    response = client_for(agent).get(page_url(tombstone), follow=True)

    assert response.redirect_chain == [(page_url(ann), 302)]
    assert f"Customer {tombstone.pk} was merged into Ann Lee" in response.text


def test_htmx_timeline_request_for_a_merged_customer_sends_the_browser_to_the_survivor(
    client_for, agent, ann
):
    tombstone = Customer.objects.create(display_name="Ann L.", merged_into=ann)
    url = reverse("customers:timeline", args=[tombstone.pk])

    response = client_for(agent).get(url, **HTMX)

    assert response["HX-Redirect"] == page_url(ann)


# --- private notes ----------------------------------------------------------------------------


def test_marketer_sees_that_a_private_note_exists_but_not_its_body(
    client_for, marketer, agent, ann
):
    private_note(ann, agent)

    response = client_for(marketer).get(page_url(ann))

    assert "Private note by service" in response.text
    assert "threatened to sue" not in response.text
    assert "Refund approved" not in response.text


@pytest.mark.parametrize("role", ["agent", "supervisor", "cco"])
def test_service_and_cco_read_private_notes(client_for, make_user, agent, ann, role):
    private_note(ann, agent)

    response = client_for(make_user(role)).get(page_url(ann))

    assert "Customer threatened to sue; be careful." in response.text
    assert "Refund approved" in response.text
    assert "Private note by service" not in response.text


def test_pushed_private_note_is_rendered_for_each_viewer(marketer, agent, ann):
    note = private_note(ann, agent)

    for_marketer = render_new_interaction(marketer, interaction_id=note.pk)
    for_agent = render_new_interaction(agent, interaction_id=note.pk)

    assert "Private note by service" in for_marketer
    assert "threatened to sue" not in for_marketer
    assert "threatened to sue" in for_agent


# --- the timeline -------------------------------------------------------------------------------


def test_timeline_shows_one_line_of_facts_per_entry_newest_first(client_for, agent, ann):
    record_interaction(customer=ann, channel="email", kind="message", direction="in",
                       title="Where is my order?", body_text="Line one\nLine two",
                       actor_label="Ann Lee", occurred_at=START)  # fmt: skip
    record_interaction(customer=ann, channel="whatsapp", kind="message", direction="out",
                       body_text="It ships today.", actor=agent,
                       occurred_at=START + timedelta(hours=1))  # fmt: skip

    text = client_for(agent).get(page_url(ann)).text
    timeline = text.split('id="timeline-entries"')[1]

    assert timeline.index("It ships today.") < timeline.index("Where is my order?")
    assert "WhatsApp" in timeline
    assert "↗</span> out" in timeline
    assert "↙</span> in" in timeline
    assert "Line one<br>Line two" in timeline
    assert str(agent) in timeline
    assert '<time datetime="2025-03-01T12:00:00+00:00">1 Mar 2025, 12:00</time>' in timeline
    assert "Start of the timeline" in timeline


def test_times_read_in_the_viewers_time_zone(client_for, make_user, ann):
    tokyo = make_user("agent", timezone="Asia/Tokyo")
    record_interaction(customer=ann, channel="email", kind="message", direction="in",
                       body_text="hi", occurred_at=START)  # fmt: skip

    text = client_for(tokyo).get(page_url(ann)).text

    assert "1 Mar 2025, 21:00" in text


def test_a_customer_with_no_interactions_shows_the_empty_timeline(client_for, agent, ann):
    text = client_for(agent).get(page_url(ann)).text
    assert "No interactions yet." in text
    assert entry_ids(text) == []


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_anything_a_customer_wrote_is_shown_escaped(client_for, agent, db, payload):
    customer = Customer.objects.create(display_name=payload, attributes={payload: payload})
    Identity.objects.create(customer=customer, channel="chat", handle="visitor-1234",
                            display_name=payload)  # fmt: skip
    record_interaction(customer=customer, channel="chat", kind="message", direction="in",
                       title=payload, body_text=payload, actor_label=payload,
                       body_html=payload)  # fmt: skip

    text = client_for(agent).get(page_url(customer)).text

    assert payload not in text
    assert "<script>alert(1)" not in text
    assert "onerror=alert" not in text.replace("onerror=alert(1)&gt;", "")
    assert "&lt;" in text


def test_timeline_filters_by_channel_and_kind(client_for, agent, ann):
    add_messages(ann, 3, channel="email")
    add_messages(ann, 2, channel="chat")
    add_messages(ann, 1, channel="system", kind="note")
    client = client_for(agent)

    chat = client.get(page_url(ann, channel="chat")).text
    notes = client.get(page_url(ann, kind="note")).text
    both = client.get(page_url(ann) + "?channel=chat&channel=system").text

    assert len(entry_ids(chat)) == 2 and "chat body" in chat and "email body" not in chat
    assert len(entry_ids(notes)) == 1 and "system body 0" in notes
    assert len(entry_ids(both)) == 3
    assert '<input type="checkbox" name="channel" value="chat" checked> Live chat' in chat
    assert '<input type="checkbox" name="channel" value="email"> Email' in chat


def test_a_filter_matching_nothing_says_so(client_for, agent, ann):
    add_messages(ann, 2, channel="email")
    text = client_for(agent).get(page_url(ann, channel="sms")).text
    assert "No interactions match these filters." in text


@pytest.mark.parametrize(
    ("query", "field"),
    [("channel=pigeon", "Channel"), ("kind=gossip", "Kind"), ("channel=email&kind=x", "Kind")],
)
def test_an_invalid_filter_is_a_400_naming_the_field(client_for, agent, ann, query, field):
    add_messages(ann, 2)
    response = client_for(agent).get(page_url(ann) + "?" + query)

    assert response.status_code == 400
    assert f'<p class="field-error" id="filter-{field.lower()}-error">{field}: Select a valid' in (
        response.text
    )
    assert entry_ids(response.text) == []


@pytest.mark.parametrize(
    ("query", "field"), [("channel=pigeon", "channel"), ("before=nonsense", "before")]
)
def test_an_invalid_timeline_request_is_a_400_naming_the_field(
    client_for, agent, ann, query, field
):
    url = reverse("customers:timeline", args=[ann.pk]) + "?" + query
    response = client_for(agent).get(url, **HTMX)
    assert response.status_code == 400
    assert response.text.startswith(f"{field}: ")


def test_load_older_continues_where_the_page_ended(client_for, agent, ann):
    add_messages(ann, 60)
    client = client_for(agent)
    expected = list(
        Interaction.objects.order_by("-occurred_at", "-id").values_list("id", flat=True)
    )

    first = client.get(page_url(ann)).text
    older_url = re.search(r'hx-get="([^"]+)" hx-target="#timeline-more"', first)[1]
    older = client.get(older_url.replace("&amp;", "&"), **HTMX)

    assert entry_ids(first) == expected[:50]
    assert older.status_code == 200
    assert "<html" not in older.text
    assert entry_ids(older.text) == expected[50:]
    assert older.text.strip().endswith('<li id="timeline-more" class="timeline-end muted">'
                                       "Start of the timeline.</li>")  # fmt: skip


def test_load_older_keeps_the_filters(client_for, agent, ann):
    add_messages(ann, 55, channel="chat")
    add_messages(ann, 30, channel="email")
    client = client_for(agent)

    first = client.get(page_url(ann, channel="chat")).text
    older_url = re.search(r'hx-get="([^"]+)" hx-target="#timeline-more"', first)[1]
    older = client.get(older_url.replace("&amp;", "&"), **HTMX).text

    assert "channel=chat" in older_url
    assert len(entry_ids(first)) == 50
    assert len(entry_ids(older)) == 5
    assert "email body" not in older


def test_the_timeline_refetch_returns_the_section_alone(client_for, agent, ann):
    add_messages(ann, 3)
    url = reverse("customers:timeline", args=[ann.pk]) + "?channel=email"

    response = client_for(agent).get(url, **HTMX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="timeline"')
    assert 'hx-trigger="wb:resync from:body"' in response.text
    assert len(entry_ids(response.text)) == 3


def test_a_plain_browser_request_for_the_timeline_goes_to_the_page(client_for, agent, ann):
    url = reverse("customers:timeline", args=[ann.pk]) + "?channel=chat&before=1_1"
    response = client_for(agent).get(url)
    assert response.status_code == 302
    assert response["Location"] == page_url(ann, channel="chat")


def test_page_query_count_does_not_grow_with_the_timeline(
    client_for, agent, ann, django_assert_num_queries
):
    client = client_for(agent)
    private_note(ann, agent)
    add_messages(ann, 9)
    client.get(page_url(ann))  # warm the session and the content-type cache
    with CaptureQueriesContext(connection) as with_ten:
        assert len(entry_ids(client.get(page_url(ann)).text)) == 10

    add_messages(ann, 50, channel="chat", start=START + timedelta(days=1))
    with django_assert_num_queries(len(with_ten.captured_queries)):
        assert len(entry_ids(client.get(page_url(ann)).text)) == 50


# --- live updates -------------------------------------------------------------------------------


def test_page_subscribes_to_the_customers_live_group(client_for, agent, ann):
    text = client_for(agent).get(page_url(ann)).text
    assert f'ws-connect="/ws/hub/?group=customer.{ann.pk}&amp;group=user.{agent.pk}"' in text


def test_pushed_entry_is_the_pages_entry_wrapped_to_prepend_to_the_timeline(client_for, agent, ann):
    interaction, _ = record_interaction(customer=ann, channel="chat", kind="message",
                                        direction="in", body_text="Are you there?")  # fmt: skip

    pushed = render_new_interaction(agent, interaction_id=interaction.pk).strip()
    page = client_for(agent).get(page_url(ann)).text

    assert pushed.startswith('<div hx-swap-oob="afterbegin:#timeline-entries">')
    assert pushed.endswith("</div>")
    entry = pushed.removeprefix('<div hx-swap-oob="afterbegin:#timeline-entries">')
    entry = entry.removesuffix("</div>").strip()
    assert entry.startswith(f'<li id="interaction-{interaction.pk}"')
    assert entry in page
    assert '<ol id="timeline-entries"' in page


# --- the other parts of the page -------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "shown"),
    [
        ("agent", []),
        ("marketer", []),
        ("supervisor", ["Merge…"]),
        ("cco", ["Merge…", "Export data", "Erase…"]),
    ],
)
def test_merge_and_privacy_links_only_for_roles_that_may_use_them(
    client_for, make_user, ann, role, shown
):
    text = client_for(make_user(role)).get(page_url(ann)).text
    urls = {
        "Merge…": reverse("customers:merge", args=[ann.pk]),
        "Export data": reverse("customers:export", args=[ann.pk]),
        "Erase…": reverse("customers:erase", args=[ann.pk]),
    }
    for label, url in urls.items():
        assert (f'<a href="{url}">{label}</a>' in text) == (label in shown)


def test_open_work_shows_a_dash_until_an_app_counts_it(client_for, agent, ann, monkeypatch):
    monkeypatch.setattr(summary, "_counters", {})
    text = client_for(agent).get(page_url(ann)).text
    assert '<th scope="row">Open cases</th><td>—</td>' in text
    assert '<th scope="row">Open commitments</th><td>—</td>' in text


def test_open_work_shows_the_count_an_app_registered(client_for, agent, ann, monkeypatch):
    monkeypatch.setattr(summary, "_counters", {})
    summary.register_summary("Open cases", lambda customer_id: 2 if customer_id == ann.pk else 0)
    summary.register_summary("Unread chats", lambda customer_id: None)

    text = client_for(agent).get(page_url(ann)).text

    assert '<th scope="row">Open cases</th><td>2</td>' in text
    assert '<th scope="row">Open commitments</th><td>—</td>' in text
    assert '<th scope="row">Unread chats</th><td>—</td>' in text


def test_an_erased_customer_says_so(client_for, cco, db):
    erased = Customer.objects.create(display_name="Erased customer", erased_at=timezone.now())

    text = client_for(cco).get(page_url(erased)).text

    assert "personal data was erased on" in text
    assert "No handles on any channel: they were removed with the erasure." in text
