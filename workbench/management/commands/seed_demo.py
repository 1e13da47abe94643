"""Load the demo data once: users (one per role, two agents, one with no role), customers, and
the service desk around them (a business calendar, queues with SLA policies, cases in each
status, open commitments, the customers' messages on those cases).

Idempotent: users that exist are left as they are (a changed password stays changed), the demo
customers are created only when their first identity is not stored yet, calendars, queues and
SLA policies only when missing by name, and each demo case only when no case has its thread key.
Cases, commitments and timeline entries are made through the services, as an agent would.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from campaigns.editing import create_campaign, create_segment
from campaigns.lifecycle import schedule_campaign
from campaigns.models import Campaign, Segment
from cases.commitments import record_commitment
from cases.lifecycle import assign_case, change_status, open_case
from cases.models import BusinessCalendar, Case, Queue, SlaPolicy
from customers.consent import record_consent
from customers.engagement import compute_engagement
from customers.identity import live_customer, resolve_customer
from customers.models import Channel, Direction, Identity, Kind
from customers.timeline import record_interaction

DEMO_PASSWORD = "workbench-demo"  # noqa: S105  (printed by `make run`; demo data only)
# username, first name, last name, role (None: signed in but no role yet), timezone
DEMO_USERS = (
    ("ada", "Ada", "Agent", "agent", "Europe/London"),
    ("ben", "Ben", "Agent", "agent", "Europe/Berlin"),
    ("sam", "Sam", "Supervisor", "supervisor", "Europe/London"),
    ("mia", "Mia", "Marketer", "marketer", "America/New_York"),
    ("cleo", "Cleo", "Officer", "cco", "Europe/London"),
    ("newbie", "Noa", "Newcomer", None, "UTC"),
)
# name, email, phone, x handle, lifecycle stage, attributes
DEMO_CUSTOMERS = (
    ("Grace Hopper", "grace@example.com", "+447700900461", "@gracehopper", "loyal",
     {"plan": "Pro", "region": "EMEA", "products": ["kettle", "toaster"]}),
    ("Alan Turing", "alan@example.com", "+447700900462", "", "customer",
     {"plan": "Basic", "region": "EMEA", "products": ["toaster"]}),
    ("Katherine Johnson", "katherine@example.com", "", "@kjohnson", "at_risk",
     {"plan": "Pro", "region": "AMER", "products": ["kettle"]}),
    ("Margaret Hamilton", "margaret@example.com", "+14155550133", "", "lead",
     {"region": "AMER"}),
)  # fmt: skip
DEMO_SUPERVISORS = tuple(username for username, *_, role, _ in DEMO_USERS if role == "supervisor")
CALENDAR_NAME = "London office"
OFFICE_HOURS = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
# queue name, channels whose new cases it takes by default, members (usernames)
DEMO_QUEUES = (
    ("Support", ["email", "chat"], ("ada", "ben", "sam")),
    ("Billing", [], ("ada", "sam")),
)
# priority, first response and resolution targets in business minutes
DEMO_SLA = (("urgent", 60, 480), ("high", 120, 960), ("normal", 240, 1440), ("low", 480, 2880))
# thread key, customer email, queue, channel, priority, subject, the customer's message,
# hours ago it arrived, who works it (None: waiting unassigned), status it is left in
DEMO_CASES = (
    ("<demo-case-1@workbench.local>", "margaret@example.com", "Support", "email", "normal",
     "Cannot sign in to my account",
     "Hi, since yesterday the app says my password is wrong, but I reset it twice. Margaret",
     2, None, "new"),
    ("<demo-case-2@workbench.local>", "grace@example.com", "Support", "email", "high",
     "Replacement kettle not delivered",
     "Hello, the replacement kettle you promised a week ago has still not arrived. Grace",
     30, "ada", "open"),
    ("<demo-case-3@workbench.local>", "katherine@example.com", "Billing", "email", "high",
     "Charged twice for my order",
     "My card statement shows two payments of 49.00 for one kettle. Please refund one.",
     52, "ada", "pending"),
    ("<demo-case-4@workbench.local>", "alan@example.com", "Support", "chat", "low",
     "Which toaster setting for bagels?",
     "Quick question: which setting should I use for bagels on the two-slot toaster?",
     6, "ben", "solved"),
)  # fmt: skip
# thread key of the case, kind, what was promised, due (hours from now; negative: overdue)
DEMO_COMMITMENTS = (
    ("<demo-case-2@workbench.local>", "replacement",
     "A new kettle by courier, tracking number by email", 48),
    ("<demo-case-3@workbench.local>", "refund",
     "Refund the duplicate payment of 49.00 to the original card", -20),
)  # fmt: skip


class Command(BaseCommand):
    help = (
        "Create the demo users (one per role, two agents, one with no role), customers, queues, "
        "SLA policies and cases if missing."
    )

    def handle(self, *args, **options) -> None:
        created = seed_demo()
        created += seed_demo_customers()
        created += seed_demo_queues()
        created += seed_demo_cases()
        created += seed_demo_engagement()
        created += seed_demo_campaigns()
        if created:
            self.stdout.write(f"Demo data loaded: {', '.join(created)}.")
        else:
            self.stdout.write("Demo data already present; nothing changed.")


@transaction.atomic
def seed_demo() -> list[str]:
    """Create the missing demo users; return the usernames created."""
    User = get_user_model()
    created = []
    for username, first, last, role, tz in DEMO_USERS:
        if User.objects.filter(username=username).exists():
            continue
        user = User(username=username, first_name=first, last_name=last, timezone=tz,
                    email=f"{username}@workbench.local")  # fmt: skip
        user.set_password(DEMO_PASSWORD)
        user.save()
        if role:
            user.groups.add(Group.objects.get(name=role))
        created.append(username)
    return created


@transaction.atomic
def seed_demo_customers() -> list[str]:
    """Create the demo customers with a short history each; return the names created."""
    User = get_user_model()
    ada = User.objects.filter(username="ada").first()
    now = timezone.now()
    created = []
    for index, (name, email, phone, x, stage, attributes) in enumerate(DEMO_CUSTOMERS):
        resolution = resolve_customer(channel=Channel.EMAIL, handle=email, display_name=name,
                                      phone=phone)  # fmt: skip
        if not resolution.is_new_customer:
            continue
        customer = resolution.customer
        customer.lifecycle_stage = stage
        customer.attributes = attributes
        customer.save(update_fields=["lifecycle_stage", "attributes", "updated_at"])
        if x:
            resolve_customer(channel=Channel.X, handle=x, email=email)
        start = now - timezone.timedelta(days=30 - index)
        record_consent(customer=customer, purpose="marketing_email", is_granted=True,
                       source=Channel.WEB, recorded_at=start)  # fmt: skip
        record_interaction(
            customer=customer, channel=Channel.WEB, kind=Kind.PURCHASE,
            direction=Direction.INBOUND, title="Bought a kettle", occurred_at=start,
            data={"amount": "49.00", "currency": "EUR"},
        )  # fmt: skip
        record_interaction(
            customer=customer, channel=Channel.EMAIL, kind=Kind.MESSAGE,
            direction=Direction.INBOUND, title="Kettle stopped working",
            body_text=f"Hello,\n\nmy kettle stopped heating after a week. Can you help?\n\n{name}",
            occurred_at=start + timezone.timedelta(days=7),
        )  # fmt: skip
        if ada is not None:
            record_interaction(
                customer=customer, channel=Channel.EMAIL, kind=Kind.MESSAGE,
                direction=Direction.OUTBOUND, actor=ada, title="Re: Kettle stopped working",
                body_text="Sorry to hear that! A replacement is on its way.",
                occurred_at=start + timezone.timedelta(days=7, hours=2),
            )  # fmt: skip
            record_interaction(
                customer=customer, channel=Channel.SYSTEM, kind=Kind.NOTE,
                direction=Direction.INTERNAL, actor=ada, is_private=True,
                body_text="Replacement approved by Sam; courier booked.",
                occurred_at=start + timezone.timedelta(days=7, hours=3),
            )  # fmt: skip
        created.append(name)
    return created


@transaction.atomic
def seed_demo_queues() -> list[str]:
    """The London office calendar, the Support and Billing queues with an SLA policy per
    priority, and the demo service users as members; return what was created."""
    User = get_user_model()
    today = timezone.localdate()
    created = []
    calendar, is_new = BusinessCalendar.objects.get_or_create(
        name=CALENDAR_NAME,
        defaults={
            "timezone": "Europe/London",
            "working_hours": OFFICE_HOURS,
            # Christmas, Boxing Day and New Year's Day ahead: the SLA clock stops on them.
            "holidays": [
                date(today.year, 12, 25),
                date(today.year, 12, 26),
                date(today.year + 1, 1, 1),
            ],
        },
    )
    if is_new:
        created.append(f"calendar {calendar.name}")
    for name, channels, usernames in DEMO_QUEUES:
        queue, is_new = Queue.objects.get_or_create(
            name=name, defaults={"calendar": calendar, "default_for_channels": channels}
        )
        if not is_new:
            # A supervisor's team is the queues they belong to (cases.access): the demo
            # supervisor joins every demo queue even in data seeded before that (add() is
            # idempotent), so `make run` still shows them every case.
            queue.members.add(*User.objects.filter(username__in=DEMO_SUPERVISORS))
            continue
        queue.members.add(*User.objects.filter(username__in=usernames))
        for priority, first_response, resolution in DEMO_SLA:
            SlaPolicy.objects.get_or_create(
                queue=queue,
                priority=priority,
                defaults={"first_response_minutes": first_response,
                          "resolution_minutes": resolution},
            )  # fmt: skip
        created.append(f"queue {name}")
    return created


@transaction.atomic
def seed_demo_cases() -> list[str]:
    """A case in each status on the demo customers, each with the customer's message that
    opened it, and open commitments (one overdue); return the cases created.

    A case is made only when no case has its thread key yet, and only if its customer, queue
    and agent are there (an erased or renamed one is skipped, not recreated).
    """
    User = get_user_model()
    users = {user.username: user for user in User.objects.filter(username__in=("ada", "ben"))}
    queues = {queue.name: queue for queue in Queue.objects.filter(name__in=("Support", "Billing"))}
    now = timezone.now()
    created: dict[str, Case] = {}
    for spec in DEMO_CASES:
        thread_key, email, queue_name, channel, priority, subject, body, hours_ago = spec[:8]
        worker, status = spec[8:]
        if Case.objects.filter(thread_key=thread_key).exists():
            continue
        identity = (
            Identity.objects.select_related("customer")
            .filter(channel=Channel.EMAIL, handle=email)
            .first()
        )
        queue = queues.get(queue_name)
        agent = users.get(worker) if worker else None
        if identity is None or identity.customer.is_erased or queue is None:
            continue
        if worker and agent is None:
            continue
        arrived_at = now - timedelta(hours=hours_ago)
        case = open_case(customer=live_customer(identity.customer), queue=queue, subject=subject,
                         channel=channel, priority=priority, thread_key=thread_key,
                         now=arrived_at)  # fmt: skip
        record_interaction(
            customer=case.customer, channel=channel, kind=Kind.MESSAGE,
            direction=Direction.INBOUND, title=subject, body_text=body, subject=case,
            occurred_at=arrived_at, external_id=f"{thread_key}-message",
        )  # fmt: skip
        if agent is not None:
            case = assign_case(case=case, assignee=agent, actor=agent)
            if status == "solved":
                record_interaction(
                    customer=case.customer, channel=channel, kind=Kind.MESSAGE,
                    direction=Direction.OUTBOUND, actor=agent, title=f"Re: {subject}",
                    body_text="The third setting works best for bagels. Enjoy!", subject=case,
                )  # fmt: skip
            case = change_status(case=case, status=status, actor=agent)
        created[thread_key] = case
    for thread_key, kind, text, due_in_hours in DEMO_COMMITMENTS:
        case = created.get(thread_key)
        if case is not None:
            record_commitment(case=case, kind=kind, text=text, actor=case.assignee,
                              due_at=now + timedelta(hours=due_in_hours))  # fmt: skip
    return [f"case #{case.pk} ({case.status})" for case in created.values()]


def seed_demo_engagement() -> list[str]:
    """A few visits and a public mention for the engagement figures (once), then the nightly
    engagement job, so the console's Engagement page has numbers on a fresh demo."""
    now = timezone.now()
    identity = Identity.objects.filter(channel=Channel.EMAIL, handle="grace@example.com").first()
    grace = live_customer(identity.customer) if identity is not None else None
    created = []
    if grace is not None and not grace.interactions.filter(kind=Kind.VISIT).exists():
        with transaction.atomic():
            for days_ago in (1, 3, 8):
                record_interaction(
                    customer=grace, channel=Channel.WEB, kind=Kind.VISIT,
                    direction=Direction.INBOUND, title="Visited the kettle pages",
                    occurred_at=now - timedelta(days=days_ago),
                )  # fmt: skip
            record_interaction(
                customer=grace, channel=Channel.X, kind=Kind.MESSAGE,
                direction=Direction.INBOUND, title="Public post",
                body_text="Great support from the kettle people, thanks!",
                occurred_at=now - timedelta(days=2), data={"public": True, "reach": 4200},
            )  # fmt: skip
        created.append("engagement signals")
    run = compute_engagement()
    return [*created, f"engagement for {run.customers} customers"] if created else []


DEMO_SEGMENT = "Paying customers"
# name, subject, content, topics, scheduled (False: left a draft)
DEMO_CAMPAIGNS = (
    ("Kettle descaler offer", "Keep your kettle like new, {{ customer.first_name }}",
     "Dear {{ customer.first_name }},\nour descaler keeps your kettle quiet and quick.",
     ["kettle"], False),
    ("Spring toaster upgrade", "A toaster for the whole family",
     "Hello {{ customer.first_name }},\nthe four-slot toaster is here, "
     "20% off for {{ customer.plan }} customers.", ["toaster"], True),
)  # fmt: skip


def seed_demo_campaigns() -> list[str]:
    """Mia's segment of paying customers, a draft and a campaign scheduled for tomorrow (its
    preflight shows who is held by the demo cases' promises); each only when missing by name."""
    mia = get_user_model().objects.filter(username="mia").first()
    if mia is None:
        return []
    created = []
    segment = Segment.objects.filter(name=DEMO_SEGMENT).first()
    if segment is None:
        segment = create_segment(
            name=DEMO_SEGMENT, actor=mia, description="Customers, loyal or at risk",
            definition={"match": "all", "conditions": [
                {"field": "lifecycle_stage", "op": "in", "value": ["customer", "loyal", "at_risk"]},
            ]},
        )  # fmt: skip
        created.append(f"segment {DEMO_SEGMENT}")
    now = timezone.now()
    for name, subject, content, topics, is_scheduled in DEMO_CAMPAIGNS:
        if Campaign.objects.filter(name=name).exists():
            continue
        campaign = create_campaign(
            actor=mia, name=name, channel="email", subject=subject, content=content,
            segment=segment, topics=topics, schedule_mode="at",
            scheduled_at=now + timedelta(days=1), ends_at=now + timedelta(days=14),
        )  # fmt: skip
        if is_scheduled:
            schedule_campaign(campaign=campaign, actor=mia)
        created.append(f"campaign {name}")
    return created
