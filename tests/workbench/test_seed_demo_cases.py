"""`manage.py seed_demo`: the service desk it loads (calendar, queues, SLA, cases, commitments),
made through the real services, and nothing more on a second run."""

from datetime import date
from io import StringIO

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.utils import timezone

from cases.models import BusinessCalendar, Case, Commitment, Queue, SlaPolicy
from customers.models import Interaction
from workbench.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Six demo users each get a real password: PBKDF2's cost is not what these tests are about.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def stored() -> dict:
    return {
        "calendars": BusinessCalendar.objects.count(),
        "queues": Queue.objects.count(),
        "policies": SlaPolicy.objects.count(),
        "memberships": Queue.members.through.objects.count(),
        "cases": Case.objects.count(),
        "commitments": Commitment.objects.count(),
        "interactions": Interaction.objects.count(),
        "users": User.objects.count(),
    }


def case_of(email: str) -> Case:
    return Case.objects.select_related("queue", "assignee").get(customer__identities__handle=email)


def test_a_second_run_creates_nothing_more():
    seed()
    first = stored()

    out = seed()

    assert stored() == first
    assert out.strip() == "Demo data already present; nothing changed."


def test_the_london_office_calendar_runs_weekdays_nine_to_five_without_holidays():
    seed()
    calendar = BusinessCalendar.objects.get()
    assert calendar.name == "London office" and calendar.timezone == "Europe/London"
    assert set(calendar.working_hours) == {"mon", "tue", "wed", "thu", "fri"}
    assert calendar.working_hours["wed"] == [["09:00", "17:00"]]
    year = timezone.localdate().year
    assert calendar.holidays == [date(year, 12, 25), date(year, 12, 26), date(year + 1, 1, 1)]


def test_support_takes_email_and_chat_and_both_queues_have_a_policy_per_priority():
    seed()
    support, billing = Queue.objects.get(name="Support"), Queue.objects.get(name="Billing")
    assert sorted(support.default_for_channels) == ["chat", "email"]
    assert billing.default_for_channels == []
    for queue in (support, billing):
        policies = {p.priority: p for p in queue.sla_policies.all()}
        assert sorted(policies) == ["high", "low", "normal", "urgent"]
        assert policies["urgent"].first_response_minutes < policies["low"].first_response_minutes
    assert sorted(support.members.values_list("username", flat=True)) == ["ada", "ben", "sam"]
    assert sorted(billing.members.values_list("username", flat=True)) == ["ada", "sam"]


def test_one_case_in_each_status_with_its_customers_message_on_the_timeline():
    seed()
    waiting = case_of("margaret@example.com")
    assigned = case_of("grace@example.com")
    pending = case_of("katherine@example.com")
    solved = case_of("alan@example.com")

    assert (waiting.status, waiting.assignee, waiting.queue.name) == ("new", None, "Support")
    assert (assigned.status, assigned.assignee.username) == ("open", "ada")
    assert (pending.status, pending.assignee.username, pending.queue.name) == (
        "pending",
        "ada",
        "Billing",
    )
    assert (solved.status, solved.channel) == ("solved", "chat")
    assert solved.solved_at is not None
    # SLA clocks come from the queue's policy: running for new/open, paused while pending.
    assert waiting.first_response_due_at is not None and assigned.sla_due_at is not None
    assert pending.sla_due_at is None
    case_type = ContentType.objects.get_for_model(Case)
    for case in (waiting, assigned, pending, solved):
        inbound = Interaction.objects.filter(
            subject_type=case_type, subject_id=case.pk, kind="message", direction="in"
        )
        assert inbound.count() == 1
        assert inbound.get().title == case.subject
        # Opened (and worked) through the services: the case events are on the timeline too.
        assert Interaction.objects.filter(
            subject_type=case_type, subject_id=case.pk, kind="case_event", status="new"
        ).exists()


def test_two_open_commitments_one_of_them_overdue():
    seed()
    now = timezone.now()
    commitments = {c.kind: c for c in Commitment.objects.select_related("case")}
    assert sorted(commitments) == ["refund", "replacement"]
    assert all(c.status == "open" for c in commitments.values())
    assert commitments["replacement"].case == case_of("grace@example.com")
    assert commitments["replacement"].due_at > now
    assert commitments["refund"].case == case_of("katherine@example.com")
    assert commitments["refund"].due_at < now
    assert Interaction.objects.filter(kind="commitment_event").count() == 2


def test_the_agent_sees_the_seeded_case_with_the_customers_message_and_promise(client):
    seed()
    case = case_of("grace@example.com")
    client.force_login(User.objects.get(username="ada"))

    page = client.get(f"/cases/{case.pk}/")

    assert page.status_code == 200
    assert "Replacement kettle not delivered" in page.text
    assert "the replacement kettle you promised a week ago has still not arrived" in page.text
    assert "A new kettle by courier" in page.text


def test_the_agent_sees_the_waiting_case_in_their_queues(client):
    seed()
    waiting = case_of("margaret@example.com")
    client.force_login(User.objects.get(username="ben"))

    page = client.get("/cases/?tab=queues")
    assert page.status_code == 200
    assert f'id="case-row-{waiting.pk}"' in page.text
    assert "Cannot sign in to my account" in page.text


def test_the_first_run_says_what_it_loaded():
    out = seed()
    assert "calendar London office" in out
    assert "queue Support" in out and "queue Billing" in out
    assert out.count("case #") == 4
    assert "(pending)" in out and "(solved)" in out
