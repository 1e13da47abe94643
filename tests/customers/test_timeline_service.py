"""record_interaction and the keyset timeline: dedupe, sanitising, refusals, pages without gaps."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from customers.models import Customer, Interaction
from customers.timeline import MAX_BODY_CHARS, Cursor, record_interaction, timeline_page

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    "<svg onload=alert(1)>",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<div style="background:url(javascript:alert(1))" onclick="alert(1)">hi</div>',
    "<scr<script>ipt>alert(1)</script>",
    '"><script>alert(1)</script>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
]
INERT_MARKERS = ("<script", "onerror", "onload", "onclick", "javascript:", "<iframe", "<svg")


@pytest.fixture
def ann(db):
    return Customer.objects.create(display_name="Ann Lee")


def message(customer, **fields):
    values = {"channel": "email", "kind": "message", "direction": "in", "body_text": "Hello"}
    values.update(fields)
    return record_interaction(customer=customer, **values)


def test_a_repeated_external_id_stores_nothing_more(ann):
    first, created = message(ann, external_id="<m1@example.com>", body_text="first")
    again, created_again = message(ann, external_id="<m1@example.com>", body_text="retry")

    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert list(Interaction.objects.values_list("body_text", flat=True)) == ["first"]


def test_a_repeat_inside_a_transaction_leaves_the_transaction_working(ann):
    with transaction.atomic():
        first, _ = message(ann, external_id="<m1@example.com>", body_text="first")
        again, created = message(ann, external_id="<m1@example.com>", body_text="retry")
        assert (again.pk, again.body_text, created) == (first.pk, "first", False)
        # The repeat broke no statement: the same transaction goes on storing.
        _, created = message(ann, external_id="<m2@example.com>", body_text="second")
        assert created
    assert sorted(Interaction.objects.values_list("body_text", flat=True)) == ["first", "second"]


def test_entries_without_an_external_id_are_never_deduplicated(ann):
    message(ann, kind="note", direction="internal", body_text="same words")
    message(ann, kind="note", direction="internal", body_text="same words")

    assert Interaction.objects.filter(external_id__isnull=True).count() == 2
    assert all(entry.created_at for entry in Interaction.objects.all())


def test_the_same_external_id_on_another_channel_is_another_interaction(ann):
    message(ann, channel="email", external_id="42")
    _, created = message(ann, channel="whatsapp", external_id="42")

    assert created
    assert Interaction.objects.count() == 2


def test_a_new_interaction_is_published_after_commit_and_a_duplicate_is_not(
    ann, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as published:
        message(ann, external_id="m-1")
    with django_capture_on_commit_callbacks() as republished:
        message(ann, external_id="m-1")

    assert len(published) == 1
    assert republished == []


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_html_bodies_are_stored_inert(ann, payload):
    interaction, _ = message(ann, body_text="", body_html=f"<p>Dear team</p>{payload}")

    stored = Interaction.objects.get(pk=interaction.pk)
    for marker in INERT_MARKERS:
        assert marker not in stored.body_html.lower()
    assert "<p>Dear team</p>" in stored.body_html
    assert stored.body_text.startswith("Dear team")


def test_links_in_html_bodies_cannot_open_in_our_window(ann):
    interaction, _ = message(ann, body_html='<a href="https://example.com/x">order</a>')
    assert 'rel="noopener noreferrer nofollow"' in interaction.body_html


@pytest.mark.parametrize("field", ["body_text", "body_html"])
def test_an_over_long_body_is_refused_whole_and_nothing_is_stored(ann, field):
    with pytest.raises(ValidationError) as refused:
        message(ann, **{"body_text": "", field: "x" * (MAX_BODY_CHARS + 1)})

    assert "body" in refused.value.message_dict
    assert Interaction.objects.count() == 0


def test_a_body_of_exactly_the_limit_is_stored(ann):
    interaction, created = message(ann, body_text="x" * MAX_BODY_CHARS)
    assert created
    assert len(interaction.body_text) == MAX_BODY_CHARS


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"channel": "pigeon"}, "channel"),
        ({"kind": "gossip"}, "kind"),
        ({"direction": "sideways"}, "direction"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": "x" * 256}, "external_id"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(ann, fields, named):
    with pytest.raises(ValidationError) as refused:
        message(ann, **fields)

    assert named in refused.value.message_dict
    assert Interaction.objects.count() == 0


def test_a_merged_customer_takes_no_new_interactions(ann):
    tombstone = Customer.objects.create(display_name="Ann L.", merged_into=ann)

    with pytest.raises(ValidationError) as refused:
        message(tombstone)

    assert "customer" in refused.value.message_dict
    assert Interaction.objects.count() == 0


def test_keyset_pages_have_no_overlap_and_no_gaps_across_ties(ann):
    # 120 entries, most of them at exactly the same instant: the id breaks the tie.
    tie = datetime(2025, 3, 1, 9, 30, 0, 123457, tzinfo=UTC)
    times = [tie] * 100 + [tie - timedelta(microseconds=n) for n in range(1, 11)]
    times += [tie + timedelta(seconds=n) for n in range(1, 11)]
    Interaction.objects.bulk_create(
        Interaction(customer=ann, channel="email", kind="message", direction="in",
                    occurred_at=at, body_text=f"entry {n}")
        for n, at in enumerate(times)
    )  # fmt: skip
    expected = list(
        Interaction.objects.filter(customer=ann)
        .order_by("-occurred_at", "-id")
        .values_list("id", flat=True)
    )

    seen, sizes, before = [], [], None
    while True:
        page = timeline_page(ann.pk, before=before)
        seen += [entry.pk for entry in page.entries]
        sizes.append(len(page.entries))
        if page.next_cursor is None:
            break
        before = Cursor.decode(page.next_cursor.encode())  # as the "Load older" URL carries it

    assert sizes == [50, 50, 20]
    assert seen == expected
    assert len(set(seen)) == 120


def test_a_page_of_exactly_the_page_size_has_no_next_cursor(ann):
    at = datetime(2025, 1, 1, tzinfo=UTC)
    Interaction.objects.bulk_create(
        Interaction(customer=ann, channel="chat", kind="message", direction="in", occurred_at=at)
        for _ in range(50)
    )
    page = timeline_page(ann.pk)
    assert len(page.entries) == 50
    assert page.next_cursor is None


def test_timeline_filters_by_channel_and_kind(ann):
    message(ann, channel="email", kind="message")
    message(ann, channel="chat", kind="message")
    message(ann, channel="system", kind="note", direction="internal")

    assert [e.channel for e in timeline_page(ann.pk, channels=["chat"]).entries] == ["chat"]
    assert [e.kind for e in timeline_page(ann.pk, kinds=["note"]).entries] == ["note"]
    both = timeline_page(ann.pk, channels=["email", "chat"], kinds=["message"]).entries
    assert sorted(e.channel for e in both) == ["chat", "email"]


@pytest.mark.parametrize("value", ["", "abc", "12", "12_", "_5", "1_0", "1_-5", "9" * 40 + "_1"])
def test_a_malformed_cursor_is_refused_naming_before(value):
    with pytest.raises(ValidationError) as refused:
        Cursor.decode(value)
    assert "before" in refused.value.message_dict


def test_a_cursor_survives_its_round_trip_to_the_microsecond():
    cursor = Cursor(occurred_at=datetime(2025, 3, 1, 9, 30, 0, 999999, tzinfo=UTC), id=7)
    assert Cursor.decode(cursor.encode()) == cursor
