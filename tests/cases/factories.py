"""factory_boy factories for cases: calendars, queues, SLA policies, cases and commitments.

CaseFactory builds rows directly (no timeline entry, no SLA clock) for tests that need data;
tests of behaviour open cases through cases.lifecycle.open_case.
"""

from datetime import timedelta

import factory
from django.utils import timezone

from cases.models import (
    PRIORITY_RANK,
    BusinessCalendar,
    Case,
    Commitment,
    CommitmentKind,
    Queue,
    SlaPolicy,
)
from customers.models import Customer
from workbench import realtime

OFFICE_HOURS = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}


class CalendarFactory(factory.django.DjangoModelFactory):
    """Monday to Friday, 09:00-17:00, Europe/London, no holidays."""

    class Meta:
        model = BusinessCalendar

    name = factory.Sequence(lambda n: f"London office {n}")
    timezone = "Europe/London"
    working_hours = factory.LazyFunction(lambda: {k: list(v) for k, v in OFFICE_HOURS.items()})
    holidays = factory.LazyFunction(list)


class QueueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Queue
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Support {n}")
    calendar = factory.SubFactory(CalendarFactory)
    auto_close_days = 7

    @factory.post_generation
    def members(self, create, extracted, **kwargs):
        if create and extracted:
            self.members.add(*extracted)


class SlaPolicyFactory(factory.django.DjangoModelFactory):
    """Normal priority: first response within 4 business hours, resolution within 2 days."""

    class Meta:
        model = SlaPolicy
        django_get_or_create = ("queue", "priority")

    queue = factory.SubFactory(QueueFactory)
    priority = "normal"
    first_response_minutes = 240
    resolution_minutes = 960
    commitment_grace_hours = 24


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    display_name = factory.Faker("name")


class CaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Case

    customer = factory.SubFactory(CustomerFactory)
    queue = factory.SubFactory(QueueFactory)
    subject = factory.Sequence(lambda n: f"Order {n} has not arrived")
    channel = "email"
    priority = "normal"
    priority_rank = factory.LazyAttribute(lambda case: PRIORITY_RANK[case.priority])


class CommitmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Commitment

    case = factory.SubFactory(CaseFactory)
    customer = factory.LazyAttribute(lambda commitment: commitment.case.customer)
    kind = CommitmentKind.REFUND
    text = "Refund of £20 to the original card"
    due_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=3))


def ensure_case_events_render() -> None:
    """Register stand-in renderers for "case.changed"/"queue.changed" if none is registered yet.

    The real ones live in cases/fragments.py (the workspace pages' partials) and win whenever
    that module is imported, before or after: services only publish, and publish refuses an
    event nobody renders.
    """
    for event in ("case.changed", "queue.changed"):
        if realtime.fragment_for(event) is None:
            realtime.register_fragment(event, lambda viewer, **data: "")
