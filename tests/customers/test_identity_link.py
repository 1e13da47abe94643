"""Linking a handle a customer told us about (a chat visitor's email) to that customer."""

import pytest
from django.core.exceptions import ValidationError

from customers.identity import link_identity, resolve_customer
from customers.models import Identity

pytestmark = pytest.mark.django_db


def test_a_free_address_is_linked_to_the_customer():
    visitor = resolve_customer(channel="chat", handle="v-" + "a" * 32).customer
    link = link_identity(customer=visitor, channel="email", handle=" Grace@Example.COM ")
    assert (link.is_linked, link.is_new, link.owner) == (True, True, visitor)
    assert Identity.objects.get(channel="email").handle == "grace@example.com"
    # An email from that address now lands on the visitor's timeline.
    assert resolve_customer(channel="email", handle="grace@example.com").customer == visitor


def test_linking_the_same_address_again_changes_nothing():
    visitor = resolve_customer(channel="chat", handle="v-" + "a" * 32).customer
    link_identity(customer=visitor, channel="email", handle="grace@example.com")
    again = link_identity(customer=visitor, channel="email", handle="grace@example.com")
    assert (again.is_linked, again.is_new) == (True, False)
    assert Identity.objects.filter(channel="email").count() == 1


def test_an_address_another_customer_holds_is_not_moved():
    owner = resolve_customer(channel="email", handle="grace@example.com").customer
    visitor = resolve_customer(channel="chat", handle="v-" + "a" * 32).customer
    link = link_identity(customer=visitor, channel="email", handle="grace@example.com")
    assert (link.is_linked, link.is_new, link.owner) == (False, False, owner)
    assert Identity.objects.get(channel="email").customer == owner


def test_a_malformed_address_is_refused_and_nothing_stored():
    visitor = resolve_customer(channel="chat", handle="v-" + "a" * 32).customer
    with pytest.raises(ValidationError):
        link_identity(customer=visitor, channel="email", handle="not an address")
    assert not Identity.objects.filter(channel="email").exists()
