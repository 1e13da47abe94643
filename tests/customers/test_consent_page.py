"""Consent from the customer page: service and the CCO record it; marketing cannot."""

from datetime import UTC, datetime

import pytest
from django.test import Client
from django.urls import reverse

from customers.consent import has_consent, record_consent
from customers.models import Consent, Customer, Interaction


@pytest.fixture
def ann(db):
    return Customer.objects.create(display_name="Ann Lee")


def consent_url(customer):
    return reverse("customers:consent", args=[customer.pk])


def page_url(customer):
    return reverse("customers:detail", args=[customer.pk])


def consent_row(html: str, purpose: str) -> str:
    return html.split(f'<tr data-purpose="{purpose}">')[1].split("</tr>")[0]


WITHDRAW_EMAIL = {
    "purpose": "marketing_email",
    "decision": "withdrawn",
    "source": "phone",
    "note": "Asked on the phone to stop the newsletter",
}


def test_agent_records_a_withdrawal_and_the_page_shows_it(client_for, agent, ann):
    record_consent(customer=ann, purpose="marketing_email", is_granted=True, source="web")
    client = client_for(agent)

    response = client.post(consent_url(ann), WITHDRAW_EMAIL)

    assert response.status_code == 302
    assert response["Location"] == page_url(ann) + "#consent"
    latest = Consent.objects.filter(customer=ann).latest("recorded_at", "id")
    assert (latest.purpose, latest.is_granted, latest.source) == ("marketing_email", False, "phone")
    assert latest.recorded_by == agent
    assert latest.note == "Asked on the phone to stop the newsletter"
    assert not has_consent(ann.pk, "marketing_email")
    entry = Interaction.objects.get(customer=ann, kind="consent", title__endswith="withdrawn")
    assert entry.title == "Marketing by email: withdrawn"
    assert entry.actor == agent

    page = client.get(page_url(ann)).text
    row = consent_row(page, "marketing_email")
    assert "<td>Withdrawn</td>" in row
    assert "<td>Phone</td>" in row
    assert str(agent) in row
    assert "Marketing by email: withdrawn" in page.split('id="timeline-entries"')[1]
    assert "Marketing by email: withdrawn. Recorded." in page


@pytest.mark.parametrize("role", ["supervisor", "cco"])
def test_supervisor_and_cco_record_consent_too(client_for, make_user, ann, role):
    grant = {**WITHDRAW_EMAIL, "decision": "granted", "purpose": "marketing_sms", "source": "sms"}
    response = client_for(make_user(role)).post(consent_url(ann), grant)

    assert response.status_code == 302
    assert has_consent(ann.pk, "marketing_sms")


def test_purposes_never_recorded_read_as_no_consent(client_for, agent, ann):
    row = consent_row(client_for(agent).get(page_url(ann)).text, "profiling")
    assert "Never recorded (no consent)" in row


def test_consent_times_read_in_the_viewers_time_zone(client_for, make_user, ann):
    record_consent(customer=ann, purpose="profiling", is_granted=True, source="web",
                   recorded_at=datetime(2025, 6, 1, 23, 30, tzinfo=UTC))  # fmt: skip
    viewer = make_user("agent", timezone="America/New_York")

    row = consent_row(client_for(viewer).get(page_url(ann)).text, "profiling")

    assert "1 Jun 2025, 19:30" in row


def test_marketer_cannot_record_consent_and_nothing_is_stored(client_for, marketer, ann):
    grant = {**WITHDRAW_EMAIL, "decision": "granted"}

    response = client_for(marketer).post(consent_url(ann), grant)

    assert response.status_code == 403
    assert Consent.objects.count() == 0
    assert Interaction.objects.count() == 0


def test_marketer_does_not_see_the_consent_form(client_for, marketer, agent, ann):
    assert consent_url(ann) not in client_for(marketer).get(page_url(ann)).text
    assert f'action="{consent_url(ann)}"' in client_for(agent).get(page_url(ann)).text


def test_user_without_role_cannot_record_consent(client_for, no_role_user, ann):
    response = client_for(no_role_user).post(consent_url(ann), WITHDRAW_EMAIL)
    assert response.status_code == 403
    assert Consent.objects.count() == 0


def test_signed_out_visitor_cannot_record_consent(client, ann):
    response = client.post(consent_url(ann), WITHDRAW_EMAIL)
    assert response.status_code == 302
    assert Consent.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("purpose", "marketing_pigeon", "Select a valid choice. marketing_pigeon is not one"),
        ("purpose", "", "This field is required."),
        ("decision", "maybe", "Select a valid choice. maybe is not one"),
        ("decision", "", "This field is required."),
        ("source", "telepathy", "Select a valid choice. telepathy is not one"),
        ("note", "x" * 501, "Ensure this value has at most 500 characters (it has 501)."),
    ],
)
def test_invalid_consent_is_a_400_with_the_error_next_to_the_field(
    client_for, agent, ann, field, value, message
):
    response = client_for(agent).post(consent_url(ann), {**WITHDRAW_EMAIL, field: value})

    assert response.status_code == 400
    assert f'<p class="field-error" id="consent-{field}-error">{message}' in response.text
    assert Consent.objects.count() == 0
    assert Interaction.objects.count() == 0


def test_an_invalid_form_keeps_what_was_typed(client_for, agent, ann):
    response = client_for(agent).post(consent_url(ann), {**WITHDRAW_EMAIL, "purpose": "x"})
    assert "Asked on the phone to stop the newsletter</textarea>" in response.text
    assert '<option value="phone" selected>Phone</option>' in response.text


def test_consent_on_a_merged_customer_is_not_recorded_anywhere(client_for, agent, ann):
    tombstone = Customer.objects.create(display_name="Ann L.", merged_into=ann)

    response = client_for(agent).post(consent_url(tombstone), WITHDRAW_EMAIL, follow=True)

    assert response.redirect_chain == [(page_url(ann), 302)]
    assert "nothing was recorded" in response.text
    assert Consent.objects.count() == 0


def test_reading_the_consent_url_is_not_allowed(client_for, agent, ann):
    assert client_for(agent).get(consent_url(ann)).status_code == 405


def test_consent_needs_the_csrf_token(agent, ann):
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)

    response = client.post(consent_url(ann), WITHDRAW_EMAIL)

    assert response.status_code == 403
    assert Consent.objects.count() == 0


def test_the_form_defaults_the_source_to_phone(client_for, agent, ann):
    text = client_for(agent).get(page_url(ann)).text
    assert '<option value="phone" selected>Phone</option>' in text
