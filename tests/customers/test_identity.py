"""Identity resolution: one spelling per handle, one customer per person, even under races."""

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction

from customers.identity import live_customer, normalise_handle, resolve_customer
from customers.models import Customer, Identity


@pytest.mark.parametrize(
    ("channel", "handle", "code"),
    [
        ("pigeon", "ann@example.com", "channel"),
        ("web", "https://example.com", "channel"),  # web carries interactions, not identities
        ("email", "", "handle"),
        ("email", "   ", "handle"),
        ("email", "ann@", "handle"),
        ("email", "not an email", "handle"),
        ("email", "<script>@x.com", "handle"),
        ("phone", "12", "handle"),
        ("phone", "call me maybe", "handle"),
        ("sms", "+", "handle"),
        ("whatsapp", "0", "handle"),
        ("x", "@", "handle"),
        ("x", "@ann b", "handle"),
        ("x", "@ann<script>", "handle"),
        ("instagram", "@" + "a" * 51, "handle"),
        ("facebook", "abc", "handle"),
        ("facebook", "1234", "handle"),
        ("chat", "short", "handle"),
        ("chat", "token with spaces", "handle"),
    ],
)
def test_bad_handles_are_refused_naming_the_problem(channel, handle, code):
    with pytest.raises(ValidationError) as refused:
        normalise_handle(channel, handle)
    assert refused.value.code == code


@pytest.mark.parametrize("handle", ["12345", "123456"])
def test_a_short_code_is_not_a_phone_number(handle):
    with pytest.raises(ValidationError) as refused:
        normalise_handle("sms", handle)
    assert refused.value.code == "handle"


@pytest.mark.parametrize(
    ("channel", "handle", "stored"),
    [
        ("email", "Ann@Example.COM", "ann@example.com"),
        ("email", "  ann@example.com ", "ann@example.com"),
        ("email", "Ann+Shop@Example.com", "ann+shop@example.com"),  # plus-addressing kept
        ("phone", "07700 900123", "+447700900123"),
        ("phone", "+44 7700 900123", "+447700900123"),
        ("phone", "0044 7700 900123", "+447700900123"),
        ("phone", "(020) 7946 0018", "+442079460018"),
        ("sms", "07700-900-123", "+447700900123"),
        ("whatsapp", "+1 415 555 2671", "+14155552671"),
        ("x", "@Ann_Tweets", "@ann_tweets"),
        ("x", "Ann_Tweets", "@ann_tweets"),
        ("instagram", "@Ann.Pics", "@ann.pics"),
        ("facebook", "1234567890123456", "1234567890123456"),
        ("chat", "visitor:Ab12-xyz.9", "visitor:Ab12-xyz.9"),  # tokens are case-sensitive
    ],
)
def test_handles_are_stored_in_one_spelling_per_channel(channel, handle, stored):
    assert normalise_handle(channel, handle) == stored


def test_resolving_a_new_handle_creates_one_customer_and_returns_it_again(db):
    first = resolve_customer(channel="email", handle="Ann@Example.com", display_name="Ann Lee")
    again = resolve_customer(channel="email", handle="ann@example.com ")

    assert (first.is_new_customer, first.is_new_identity) == (True, True)
    assert (again.is_new_customer, again.is_new_identity) == (False, False)
    assert again.customer.pk == first.customer.pk
    assert first.customer.display_name == "Ann Lee"
    assert Customer.objects.count() == 1
    assert list(Identity.objects.values_list("channel", "handle")) == [("email", "ann@example.com")]


def test_a_customer_without_a_name_is_shown_by_their_handle(db):
    resolution = resolve_customer(channel="x", handle="@NewPerson")
    assert resolution.customer.display_name == "@newperson"


def test_an_email_hint_attaches_a_new_handle_to_the_customer_who_owns_that_email(db):
    ann = resolve_customer(channel="email", handle="ann@example.com").customer

    on_x = resolve_customer(channel="x", handle="@AnnTweets", email="ANN@example.com")

    assert on_x.customer.pk == ann.pk
    assert (on_x.is_new_customer, on_x.is_new_identity) == (False, True)
    assert Customer.objects.count() == 1
    assert set(ann.identities.values_list("channel", "handle")) == {
        ("email", "ann@example.com"),
        ("x", "@anntweets"),
    }


def test_a_phone_hint_on_a_new_customer_is_stored_as_their_phone_identity(db):
    resolution = resolve_customer(channel="chat", handle="visitor-123456", phone="07700 900123")

    assert resolution.is_new_customer
    assert set(resolution.customer.identities.values_list("channel", "handle")) == {
        ("chat", "visitor-123456"),
        ("phone", "+447700900123"),
    }


def test_a_malformed_hint_is_ignored_not_an_error(db):
    resolution = resolve_customer(channel="x", handle="@bob", email="not-an-email", phone="12")

    assert resolution.is_new_customer
    assert list(resolution.customer.identities.values_list("handle", flat=True)) == ["@bob"]


def test_a_handle_of_a_merged_customer_resolves_to_the_survivor(db):
    survivor = Customer.objects.create(display_name="Ann Lee")
    middle = Customer.objects.create(display_name="Ann L.", merged_into=survivor)
    tombstone = Customer.objects.create(display_name="A. Lee", merged_into=middle)
    Identity.objects.create(customer=tombstone, channel="email", handle="ann@example.com")

    resolution = resolve_customer(channel="email", handle="ann@example.com")

    assert resolution.customer.pk == survivor.pk
    assert live_customer(tombstone).pk == survivor.pk
    assert Customer.objects.count() == 3  # nothing new was created


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_webhooks_for_a_new_handle_at_once_create_one_customer(attempt):
    handle = f"race-{attempt}@example.com"
    start = threading.Barrier(2)
    results, errors = [], []

    def resolve():
        try:
            start.wait(timeout=10)
            results.append(resolve_customer(channel="email", handle=handle, display_name="Racer"))
        except Exception as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=resolve) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(results) == 2
    assert results[0].customer.pk == results[1].customer.pk
    assert Customer.objects.count() == 1
    assert Identity.objects.filter(handle=handle).count() == 1
    assert sorted(r.is_new_customer for r in results) == [False, True]


def _lockable_elsewhere(customer_id: int) -> bool:
    """Whether another connection can lock the customer's row right now (NOWAIT)."""
    outcome = []

    def try_lock():
        try:
            with transaction.atomic():
                Customer.objects.select_for_update(nowait=True).get(pk=customer_id)
            outcome.append(True)
        except DatabaseError:
            outcome.append(False)
        finally:
            connection.close()

    thread = threading.Thread(target=try_lock)
    thread.start()
    thread.join(timeout=30)
    return outcome == [True]


@pytest.mark.django_db(transaction=True)
def test_resolving_with_lock_holds_the_customers_row_until_the_transaction_ends():
    ann = Customer.objects.create(display_name="Ann")
    Identity.objects.create(customer=ann, channel="email", handle="ann@example.com")

    with transaction.atomic():
        resolve_customer(channel="email", handle="ann@example.com")
        assert _lockable_elsewhere(ann.pk)  # a plain look-up locks nothing
        resolution = resolve_customer(channel="email", handle="ANN@example.com", lock=True)
        assert resolution.customer.pk == ann.pk
        assert not _lockable_elsewhere(ann.pk)
    assert _lockable_elsewhere(ann.pk)


@pytest.mark.django_db(transaction=True)
def test_resolving_with_lock_locks_the_survivor_of_a_merge_and_a_hints_owner():
    survivor = Customer.objects.create(display_name="Ann Lee")
    tombstone = Customer.objects.create(display_name="A. Lee", merged_into=survivor)
    Identity.objects.create(customer=tombstone, channel="email", handle="ann@example.com")

    with transaction.atomic():
        resolution = resolve_customer(channel="email", handle="ann@example.com", lock=True)
        assert resolution.customer.pk == survivor.pk
        assert not _lockable_elsewhere(survivor.pk)

    with transaction.atomic():
        resolution = resolve_customer(channel="x", handle="@annlee", email="ann@example.com",
                                      lock=True)  # fmt: skip
        assert (resolution.customer.pk, resolution.is_new_identity) == (survivor.pk, True)
        assert not _lockable_elsewhere(survivor.pk)
