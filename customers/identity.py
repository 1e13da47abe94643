"""Identity resolution: from a (channel, handle) to the one customer it belongs to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction

from customers.models import IDENTITY_CHANNELS, Channel, Customer, Identity
from workbench import sql

_SOCIAL_HANDLE = re.compile(r"^@?([A-Za-z0-9_.]{1,50})$")
_PSID = re.compile(r"^[0-9]{5,32}$")
_CHAT_TOKEN = re.compile(r"^[A-Za-z0-9_:.\-]{8,200}$")
PHONE_CHANNELS = (Channel.PHONE, Channel.SMS, Channel.WHATSAPP)


def normalise_handle(channel: str, handle: str) -> str:
    """The one spelling of a handle on a channel; ValidationError naming the problem if invalid.

    Email: lower-cased, plus-addressing kept (ann+shop@x.com is its own address). Phone, SMS,
    WhatsApp: E.164 (+441632960001), numbers without a country code read in
    settings.PHONE_DEFAULT_REGION. X and Instagram: '@name' in lower case. Messenger: the
    page-scoped id, digits. Chat: the widget's visitor token as given.
    """
    if channel not in IDENTITY_CHANNELS:
        raise ValidationError(f"unknown channel {channel!r}", code="channel")
    value = (handle or "").strip()
    if not value:
        raise ValidationError("handle is empty", code="handle")
    if channel == Channel.EMAIL:
        # lower(), not casefold(): casefold maps ß to ss and would merge distinct mailboxes.
        value = value.lower()
        try:
            validate_email(value)
        except ValidationError:
            raise ValidationError(f"{handle!r} is not an email address", code="handle") from None
        return value
    if channel in PHONE_CHANNELS:
        return normalise_phone(value)
    if channel in (Channel.X, Channel.INSTAGRAM):
        match = _SOCIAL_HANDLE.match(value)
        if not match:
            raise ValidationError(f"{handle!r} is not a valid @handle", code="handle")
        return "@" + match[1].lower()
    if channel == Channel.FACEBOOK:
        if not _PSID.match(value):
            raise ValidationError(f"{handle!r} is not a Messenger id", code="handle")
        return value
    if not _CHAT_TOKEN.match(value):
        raise ValidationError(f"{handle!r} is not a chat visitor token", code="handle")
    return value


def normalise_phone(value: str) -> str:
    region = getattr(settings, "PHONE_DEFAULT_REGION", "GB")
    try:
        number = phonenumbers.parse(value, None if value.startswith("+") else region)
    except phonenumbers.NumberParseException:
        raise ValidationError(f"{value!r} is not a phone number", code="handle") from None
    # Exactly "possible": a local-only number or a short code is not a person's phone.
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise ValidationError(f"{value!r} is not a phone number", code="handle")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class Resolution:
    customer: Customer
    identity: Identity
    is_new_customer: bool
    is_new_identity: bool


def live_customer(customer: Customer) -> Customer:
    """Follow merge tombstones to the customer that survives."""
    seen = set()
    while customer.merged_into_id is not None and customer.pk not in seen:
        seen.add(customer.pk)
        customer = Customer.objects.get(pk=customer.merged_into_id)
    return customer


def resolve_customer(
    *,
    channel: str,
    handle: str,
    display_name: str = "",
    email: str = "",
    phone: str = "",
    lock: bool = False,
) -> Resolution:
    """Return the customer behind (channel, handle), creating one when nobody matches.

    Hints (an email or phone the message carries) attach a new handle to the customer who
    already owns that email or phone. Safe under concurrency: the unique (channel, handle)
    constraint decides; a caller that loses the race returns the winner's customer, so two
    webhooks for a new handle at once make one customer. `lock` (inside a transaction) also
    locks the returned customer's row until it ends: for a known handle the look-up itself
    takes the lock, so deciding about a customer costs no statement of its own.
    """
    handle = normalise_handle(channel, handle)
    display_name = (display_name or "").strip()[:200]
    existing = _find(channel, handle, lock=lock)
    if existing is not None:
        return Resolution(_live(existing.customer, lock=lock), existing, False, False)
    owner = _owner_of_hints(email=email, phone=phone)
    try:
        with transaction.atomic():
            is_new_customer = owner is None
            if owner is None:
                owner = Customer.objects.create(display_name=display_name or _name_from(handle))
            elif lock:
                owner = _live(_locked(owner.pk), lock=True)
            identity = Identity.objects.create(
                customer=owner, channel=channel, handle=handle, display_name=display_name
            )
            hint_identities = _hint_identities(owner, email=email, phone=phone)
            for hint in hint_identities:
                Identity.objects.get_or_create(
                    channel=hint.channel, handle=hint.handle, defaults={"customer": owner}
                )
    except IntegrityError:
        # Someone else stored this handle between our look-up and our insert: theirs wins.
        existing = _find(channel, handle, lock=lock)
        if existing is None:
            raise
        return Resolution(_live(existing.customer, lock=lock), existing, False, False)
    return Resolution(owner, identity, is_new_customer, True)


def _live(customer: Customer, *, lock: bool) -> Customer:
    """`live_customer`; with `lock`, the survivor's row is locked too (the customer given is
    locked already), and a merge that committed while this waited for it is followed on."""
    for _ in range(3):
        if customer.merged_into_id is None:
            return customer
        survivor = live_customer(customer)
        if not lock:
            return survivor
        customer = _locked(survivor.pk)
    return customer


def _locked(pk: int) -> Customer:
    return Customer.objects.select_for_update().get(pk=pk)


@dataclass(frozen=True)
class Link:
    """What `link_identity` did: `is_linked` when the handle is the customer's now (or was);
    otherwise `owner` is the other customer who holds it, and nothing changed."""

    identity: Identity
    is_linked: bool
    is_new: bool
    owner: Customer


def link_identity(*, customer: Customer, channel: str, handle: str) -> Link:
    """Give `customer` the handle (channel, handle) they told us about, unless someone has it.

    A chat visitor who leaves an email address gets it linked, so a reply by email reaches them
    and their next email lands on the same timeline. A handle another customer already holds
    is never moved: the claim is unverified, and taking it would show that person's history
    to whoever typed their address; an agent merges the two when they are one person.
    ValidationError for a malformed handle. Safe under concurrency (the unique constraint).
    """
    handle = normalise_handle(channel, handle)
    customer = live_customer(customer)
    existing = _find(channel, handle)
    if existing is None:
        try:
            with transaction.atomic():
                identity = Identity.objects.create(
                    customer=customer, channel=channel, handle=handle
                )
            return Link(identity=identity, is_linked=True, is_new=True, owner=customer)
        except IntegrityError:
            existing = _find(channel, handle)
            if existing is None:
                raise
    owner = live_customer(existing.customer)
    return Link(identity=existing, is_linked=owner.pk == customer.pk, is_new=False, owner=owner)


def _find(channel: str, handle: str, *, lock: bool = False) -> Identity | None:
    """The identity (channel, handle) with its customer, in one indexed read; `lock` also
    locks the customer's row (FOR UPDATE OF the customer, not the identity).

    Raw SQL: every inbound message asks this, and compiling the ORM's join cost more CPU than
    PostgreSQL spent answering it (`bench ingest`).
    """
    with sql.prepared_cursor() as cursor:
        cursor.execute(_find_statement(lock), [channel, handle])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(Identity._meta.concrete_fields)
    identity = sql.from_row(Identity, row[:split])
    Identity.customer.field.set_cached_value(identity, sql.from_row(Customer, row[split:]))
    return identity


@cache
def _find_statement(lock: bool) -> str:
    quote = connection.ops.quote_name
    return (
        f"SELECT {sql.columns(Identity, 'i')}, {sql.columns(Customer, 'c')}"  # noqa: S608
        f" FROM {quote(Identity._meta.db_table)} i"
        f" JOIN {quote(Customer._meta.db_table)} c ON c.id = i.customer_id"
        " WHERE i.channel = %s AND i.handle = %s" + (" FOR UPDATE OF c" if lock else "")
    )


def _owner_of_hints(*, email: str, phone: str) -> Customer | None:
    for channel, value in ((Channel.EMAIL, email), (Channel.PHONE, phone)):
        if not value:
            continue
        try:
            normalised = normalise_handle(channel, value)
        except ValidationError:
            continue  # a hint is a hint: a bad one is ignored, not an error
        found = _find(channel, normalised)
        if found is not None:
            return live_customer(found.customer)
    return None


def _hint_identities(owner: Customer, *, email: str, phone: str) -> list[Identity]:
    hints = []
    for channel, value in ((Channel.EMAIL, email), (Channel.PHONE, phone)):
        if value:
            try:
                hints.append(Identity(channel=channel, handle=normalise_handle(channel, value)))
            except ValidationError:
                continue
    return hints


def _name_from(handle: str) -> str:
    """A readable name until the customer tells us theirs: the handle itself."""
    return handle[:200]
