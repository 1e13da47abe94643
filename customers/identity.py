"""Identity resolution: from a (channel, handle) to the one customer it belongs to."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

from customers.models import IDENTITY_CHANNELS, Channel, Customer, Identity

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
) -> Resolution:
    """Return the customer behind (channel, handle), creating one when nobody matches.

    Hints (an email or phone the message carries) attach a new handle to the customer who
    already owns that email or phone. Safe under concurrency: the unique (channel, handle)
    constraint decides; a caller that loses the race returns the winner's customer, so two
    webhooks for a new handle at once make one customer.
    """
    handle = normalise_handle(channel, handle)
    display_name = (display_name or "").strip()[:200]
    existing = _find(channel, handle)
    if existing is not None:
        return Resolution(live_customer(existing.customer), existing, False, False)
    owner = _owner_of_hints(email=email, phone=phone)
    try:
        with transaction.atomic():
            is_new_customer = owner is None
            if owner is None:
                owner = Customer.objects.create(display_name=display_name or _name_from(handle))
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
        existing = _find(channel, handle)
        if existing is None:
            raise
        return Resolution(live_customer(existing.customer), existing, False, False)
    return Resolution(owner, identity, is_new_customer, True)


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


def _find(channel: str, handle: str) -> Identity | None:
    return (
        Identity.objects.select_related("customer").filter(channel=channel, handle=handle).first()
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
