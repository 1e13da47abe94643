"""factory_boy factories for campaigns: segments, campaigns, touches, overrides; and the
customer facts the contact policy reads (identities, consents, purchases)."""

from datetime import timedelta

import factory
from django.utils import timezone

from campaigns.models import Campaign, CampaignStatus, Override, Segment, Touch
from customers.models import Consent, Identity, Interaction
from tests.cases.factories import CustomerFactory


class SegmentFactory(factory.django.DjangoModelFactory):
    """Everyone (no conditions)."""

    class Meta:
        model = Segment

    name = factory.Sequence(lambda n: f"Segment {n}")
    definition = factory.LazyFunction(lambda: {"match": "all", "conditions": []})


class CampaignFactory(factory.django.DjangoModelFactory):
    """An email campaign to everyone, about upgrades, scheduled now."""

    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    channel = "email"
    subject = "Upgrade now"
    content = "Hello {{ customer.first_name }}"
    segment = factory.SubFactory(SegmentFactory)
    topics = factory.LazyFunction(lambda: ["upgrade"])
    schedule_mode = "now"
    status = CampaignStatus.SENDING


class TouchFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Touch

    campaign = factory.SubFactory(CampaignFactory)
    customer = factory.SubFactory(CustomerFactory)


class SentTouchFactory(TouchFactory):
    """A marketing touch already sent (what the frequency cap counts)."""

    status = "sent"
    sent_at = factory.LazyFunction(lambda: timezone.now() - timedelta(days=1))


class OverrideFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Override

    campaign = factory.SubFactory(CampaignFactory)
    reason = "open_commitment"
    justification = "The customer asked for this offer on the phone."
    status = "approved"


class IdentityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Identity

    customer = factory.SubFactory(CustomerFactory)
    channel = "email"
    handle = factory.Sequence(lambda n: f"person{n}@example.test")


class ConsentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Consent

    customer = factory.SubFactory(CustomerFactory)
    purpose = "marketing_email"
    is_granted = True
    source = "web"
    recorded_at = factory.LazyFunction(lambda: timezone.now() - timedelta(days=30))


class PurchaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Interaction

    customer = factory.SubFactory(CustomerFactory)
    channel = "web"
    kind = "purchase"
    direction = "in"
    occurred_at = factory.LazyFunction(lambda: timezone.now() - timedelta(days=3))
    title = "Order"


def reachable_customer(**fields):
    """A customer with an email identity and marketing-email consent: one who would be sent
    to unless a rule says otherwise (UTC, so quiet hours follow the test's clock)."""
    fields.setdefault("timezone", "UTC")
    customer = CustomerFactory(**fields)
    IdentityFactory(customer=customer)
    ConsentFactory(customer=customer)
    return customer
