"""Routing an inbound message: join its thread, join a recent case on the channel, or open one."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from cases.models import Case
from cases.routing import priority_for, route_inbound
from customers.models import Customer
from tests.cases.test_queue_page import make_case, make_customer, make_queue


@pytest.fixture
def email_queue(db):
    return make_queue("Email desk", channels=["email"])


@pytest.fixture
def chat_queue(db):
    return make_queue("Chat desk", channels=["chat", "whatsapp"])


@pytest.fixture
def ann(db):
    return make_customer("Ann")


def route(customer, *, channel="email", thread_key="", subject="Hello", body_text="Hi", now=None):
    return route_inbound(customer=customer, channel=channel, thread_key=thread_key,
                         subject=subject, body_text=body_text, now=now)  # fmt: skip


def test_no_queue_at_all_is_refused_and_nothing_is_stored(ann):
    with pytest.raises(ValidationError, match="No queue exists"):
        route(ann)
    assert Case.objects.count() == 0


def test_a_first_message_opens_a_new_case_in_the_channels_default_queue(
    ann, email_queue, chat_queue
):
    case = route(ann, channel="whatsapp", thread_key="wa-1", subject="Where is my order?")
    assert (case.queue_id, case.channel, case.status) == (chat_queue.pk, "whatsapp", "new")
    assert (case.subject, case.thread_key, case.priority) == (
        "Where is my order?",
        "wa-1",
        "normal",
    )
    assert case.customer_id == ann.pk


def test_a_channel_without_a_default_queue_goes_to_the_first_queue(ann, email_queue, chat_queue):
    assert route(ann, channel="x").queue_id == email_queue.pk


def test_a_reply_on_the_same_thread_joins_the_case(ann, email_queue):
    first = route(ann, thread_key="<m1@example.com>")
    Case.objects.filter(pk=first.pk).update(updated_at=timezone.now() - timedelta(days=30))
    again = route(ann, channel="email", thread_key="<m1@example.com>", subject="Re: Hello")
    assert again.pk == first.pk
    assert Case.objects.count() == 1


def test_same_customer_and_channel_within_the_window_joins_the_open_case(ann, chat_queue):
    first = route(ann, channel="chat", thread_key="visit-1")
    second = route(ann, channel="chat", thread_key="visit-2")
    assert second.pk == first.pk


def test_outside_the_window_a_new_case_opens(ann, chat_queue, settings):
    settings.CASE_JOIN_WINDOW_HOURS = 2
    first = route(ann, channel="chat")
    Case.objects.filter(pk=first.pk).update(updated_at=timezone.now() - timedelta(hours=3))
    second = route(ann, channel="chat")
    assert second.pk != first.pk


def test_another_channel_or_customer_does_not_join(ann, email_queue, chat_queue):
    first = route(ann, channel="chat")
    assert route(ann, channel="email").pk != first.pk
    assert route(make_customer("Bob"), channel="chat").pk != first.pk
    assert Case.objects.count() == 3


def test_a_solved_case_on_the_same_thread_reopens(ann, email_queue):
    case = make_case(email_queue, ann, thread_key="<t@x>", status="solved",
                     solved_at=timezone.now())  # fmt: skip
    routed = route(ann, thread_key="<t@x>")
    assert routed.pk == case.pk
    case.refresh_from_db()
    assert case.status == "open" and case.solved_at is None


def test_a_closed_case_is_never_reopened(ann, email_queue):
    closed = make_case(email_queue, ann, thread_key="<t@x>", status="closed")
    routed = route(ann, thread_key="<t@x>")
    assert routed.pk != closed.pk and routed.status == "new"
    closed.refresh_from_db()
    assert closed.status == "closed"


def test_the_thread_wins_over_a_more_recent_case_on_the_channel(ann, email_queue):
    on_thread = make_case(email_queue, ann, thread_key="<t@x>", channel="email")
    recent = make_case(email_queue, ann, thread_key="<other@x>", channel="email")
    Case.objects.filter(pk=on_thread.pk).update(updated_at=timezone.now() - timedelta(days=9))

    assert route(ann, thread_key="<t@x>").pk == on_thread.pk
    assert route(ann, thread_key="<new@x>").pk == recent.pk


def test_of_two_cases_on_the_channel_the_most_recently_active_is_joined(ann, chat_queue):
    older = make_case(chat_queue, ann, channel="chat")
    newer = make_case(chat_queue, ann, channel="chat")
    Case.objects.filter(pk=newer.pk).update(updated_at=timezone.now() - timedelta(hours=5))
    Case.objects.filter(pk=older.pk).update(updated_at=timezone.now() - timedelta(hours=1))

    assert route(ann, channel="chat").pk == older.pk


def test_a_case_merged_into_another_is_never_joined(ann, email_queue):
    kept = make_case(email_queue, ann, thread_key="<kept@x>", channel="email")
    merged = make_case(email_queue, ann, thread_key="<t@x>", channel="email", merged_into=kept,
                       status="open")  # fmt: skip
    Case.objects.filter(pk=kept.pk).update(updated_at=timezone.now() - timedelta(days=9))

    routed = route(ann, thread_key="<t@x>")
    assert routed.pk not in (merged.pk, kept.pk) and routed.status == "new"


@pytest.mark.parametrize(
    ("subject", "body", "priority"),
    [("URGENT: site down", "", "urgent"), ("Question", "I want a refund please", "high"),
     ("Cancel my plan", "", "high"), ("Hello", "Just saying thanks", "normal"),
     ("Refundable?", "", "normal")],
)  # fmt: skip
def test_priority_comes_from_keywords(ann, email_queue, subject, body, priority):
    assert route(ann, subject=subject, body_text=body).priority == priority


def test_customers_on_a_vip_plan_get_high_priority(db):
    vip = Customer.objects.create(display_name="Vic", attributes={"plan": "Enterprise"})
    assert priority_for(customer=vip, subject="Hello", body_text="") == "high"
