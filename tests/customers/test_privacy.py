"""Privacy requests: only the CCO exports or erases; both confirmed, audited, on the timeline."""

import json
from datetime import UTC, datetime

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from customers.consent import record_consent
from customers.merge import merge_customers
from customers.models import Channel, Consent, Customer, Direction, Identity, Interaction, Kind
from customers.privacy import erase_customer, export_customer, register_eraser, unregister_eraser
from customers.timeline import record_interaction
from workbench.models import AuditEntry

SENT_AT = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def record(customer, **fields):
    fields = {
        "channel": Channel.EMAIL,
        "kind": Kind.MESSAGE,
        "direction": Direction.INBOUND,
        **fields,
    }
    interaction, _ = record_interaction(customer=customer, **fields)
    return interaction


@pytest.fixture
def ann(db, agent):
    """Ann: two handles, a consent with a note, an email, a private note, and a purchase."""
    customer = Customer.objects.create(
        display_name="Ann Smith", attributes={"plan": "gold"}, timezone="Europe/London"
    )
    Identity.objects.create(customer=customer, channel="email", handle="ann@example.com")
    Identity.objects.create(customer=customer, channel="x", handle="@annsmith")
    record_consent(
        customer=customer,
        purpose="marketing_email",
        is_granted=True,
        source="email",
        note="Said yes on the phone, call ref 42",
        recorded_by=agent,
    )
    record(
        customer,
        title="Where is my parcel?",
        body_html="<p>Hi, this is Ann from 1 High Street</p>",
        external_id="<msg-1@example.com>",
        actor_label="Ann Smith <ann@example.com>",
        occurred_at=SENT_AT,
    )
    record(
        customer,
        kind=Kind.NOTE,
        direction=Direction.INTERNAL,
        channel=Channel.SYSTEM,
        body_text="She sounded upset about the refund",
        is_private=True,
        actor=agent,
    )
    record(
        customer,
        kind=Kind.PURCHASE,
        direction=Direction.INBOUND,
        channel=Channel.WEB,
        title="Order 1001",
        data={"amount": "49.90", "currency": "EUR", "address": "1 High Street"},
        occurred_at=SENT_AT,
    )
    return customer


def export_url(customer):
    return reverse("customers:export", args=[customer.pk])


def erase_url(customer):
    return reverse("customers:erase", args=[customer.pk])


def snapshot(customer):
    """What a refusal must leave untouched."""
    customer.refresh_from_db()
    return (
        customer.display_name,
        customer.erased_at,
        Identity.objects.filter(customer=customer).count(),
        list(Interaction.objects.filter(customer=customer).values_list("body_text", flat=True)),
        AuditEntry.objects.filter(action__startswith="customer.").count(),
    )


# Refusals first.


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer"])
def test_only_the_cco_may_open_or_post_export_and_erase(client_for, make_user, ann, role):
    before = snapshot(ann)
    client = client_for(make_user(role))
    for url in (export_url(ann), erase_url(ann)):
        assert client.get(url).status_code == 403
    assert client.post(export_url(ann)).status_code == 403
    response = client.post(erase_url(ann), {"confirmation": "ERASE"})
    assert response.status_code == 403
    assert "Your role cannot open this page" in response.text
    assert snapshot(ann) == before


def test_user_without_role_gets_the_no_role_page(client_for, no_role_user, ann):
    before = snapshot(ann)
    response = client_for(no_role_user).post(erase_url(ann), {"confirmation": "ERASE"})
    assert response.status_code == 403
    assert "No role yet" in response.text
    assert snapshot(ann) == before


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer"])
def test_privacy_services_refuse_everyone_but_the_cco(make_user, ann, role):
    before = snapshot(ann)
    user = make_user(role)
    with pytest.raises(PermissionDenied):
        export_customer(customer=ann, actor=user)
    with pytest.raises(PermissionDenied):
        erase_customer(customer=ann, actor=user)
    assert snapshot(ann) == before


def test_erase_with_the_wrong_confirmation_changes_nothing(client_for, cco, ann):
    before = snapshot(ann)
    client = client_for(cco)
    for typed in ("", "erase please", str(ann.pk + 1)):
        response = client.post(erase_url(ann), {"confirmation": typed})
        assert response.status_code == 400
        assert 'aria-invalid="true"' in response.text
        assert "to confirm" in response.text
    assert snapshot(ann) == before


def test_a_second_erase_is_refused(client_for, cco, ann):
    erase_customer(customer=ann, actor=cco)
    before = snapshot(ann)
    response = client_for(cco).post(erase_url(ann), {"confirmation": "ERASE"})
    assert response.status_code == 400
    assert f"Customer {ann.pk} was already erased" in response.text
    assert snapshot(ann) == before
    assert AuditEntry.objects.filter(action="customer.erase").count() == 1
    assert "was already erased on" in client_for(cco).get(erase_url(ann)).text


def test_a_merged_tombstone_cannot_be_exported_or_erased(client_for, cco, ann):
    survivor = Customer.objects.create(display_name="Ann S.")
    merge_customers(survivor=survivor, merged=ann, actor=cco)
    before = snapshot(ann)
    client = client_for(cco)
    response = client.post(erase_url(ann), {"confirmation": "ERASE"})
    assert response.status_code == 400
    assert "erase that customer instead" in response.text
    response = client.post(export_url(ann))
    assert response.status_code == 400
    assert f"merged into customer {survivor.pk}" in response.text
    assert snapshot(ann) == before
    assert f'href="{erase_url(survivor)}"' in client.get(erase_url(ann)).text


# Export.


def test_export_page_says_what_the_file_holds(client_for, cco, ann):
    response = client_for(cco).get(export_url(ann))
    assert response.status_code == 200
    assert "2 identities" in response.text
    assert "1 consent record," in response.text
    assert "4 timeline entries" in response.text
    assert "Download customer-" in response.text
    assert not AuditEntry.objects.filter(action="customer.export").exists()


def test_export_downloads_everything_held_and_is_audited(client_for, cco, ann):
    response = client_for(cco).post(export_url(ann))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="customer-{ann.pk}.json"'
    data = json.loads(response.content)
    assert data["customer"]["pk"] == ann.pk
    assert data["customer"]["fields"]["display_name"] == "Ann Smith"
    assert data["customer"]["fields"]["attributes"] == {"plan": "gold"}
    records = data["records"]
    assert sorted(row["fields"]["handle"] for row in records["customers.identity"]) == [
        "@annsmith",
        "ann@example.com",
    ]
    [consent] = records["customers.consent"]
    assert consent["fields"]["note"] == "Said yes on the phone, call ref 42"
    assert consent["fields"]["source"] == "email"
    assert consent["fields"]["recorded_by"] == ["ada"]
    bodies = [row["fields"]["body_text"] for row in records["customers.interaction"]]
    assert "Hi, this is Ann from 1 High Street" in bodies
    assert "She sounded upset about the refund" in bodies  # private notes are hers too
    assert len(records["customers.interaction"]) == 4

    audit = AuditEntry.objects.get(action="customer.export")
    assert audit.actor == cco and audit.target_id == str(ann.pk)
    assert audit.details["records"]["customers.interaction"] == 4
    entry = Interaction.objects.filter(customer=ann).order_by("-id").first()
    assert entry.title == "Customer data exported"
    assert entry.actor == cco


def test_export_includes_profiles_merged_into_the_customer(cco, ann):
    older = Customer.objects.create(display_name="Annie Smith", attributes={"pet": "cat"})
    Identity.objects.create(customer=older, channel="email", handle="annie@example.com")
    merge_customers(survivor=ann, merged=older, actor=cco)

    data = export_customer(customer=ann, actor=cco)

    assert [p["fields"]["display_name"] for p in data["merged_profiles"]] == ["Annie Smith"]
    handles = {row["fields"]["handle"] for row in data["records"]["customers.identity"]}
    assert "annie@example.com" in handles
    json.dumps(data)  # JSON-safe as returned


# Erase.


def test_erase_page_explains_what_is_kept_and_destroyed(client_for, cco, ann):
    response = client_for(cco).get(erase_url(ann))
    assert response.status_code == 200
    assert "Destroyed, for good" in response.text
    assert "Kept, because it identifies nobody" in response.text
    assert "2 identities" in response.text
    assert f"Type {ann.pk} or ERASE to confirm" in response.text


@pytest.mark.parametrize("typed", ["ERASE", "own id"])
def test_erase_blanks_personal_data_and_keeps_counts_and_dates(client_for, cco, agent, ann, typed):
    dates = sorted(Interaction.objects.filter(customer=ann).values_list("occurred_at", flat=True))
    response = client_for(cco).post(
        erase_url(ann), {"confirmation": str(ann.pk) if typed == "own id" else typed}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("customers:detail", args=[ann.pk])
    ann.refresh_from_db()
    assert ann.display_name == f"Erased customer {ann.pk}"
    assert ann.attributes == {} and ann.timezone == "" and ann.erased_at is not None
    assert not Identity.objects.filter(customer=ann).exists()
    assert not Identity.objects.filter(handle="ann@example.com").exists()

    erased = Interaction.objects.filter(customer=ann).exclude(title="Customer data erased")
    assert erased.count() == 4
    assert sorted(erased.values_list("occurred_at", flat=True)) == dates
    for row in erased:
        assert (row.title, row.body_text, row.body_html, row.external_id) == ("", "", "", None)
    assert erased.get(kind=Kind.PURCHASE).data == {"amount": "49.90", "currency": "EUR"}
    assert erased.get(kind=Kind.MESSAGE).actor_label == ""  # the sender's name
    assert erased.get(kind=Kind.NOTE).actor_label == str(agent)  # staff keep their name
    assert erased.get(kind=Kind.NOTE).is_private

    consent = Consent.objects.get(customer=ann)
    assert (consent.purpose, consent.is_granted, consent.source, consent.note) == (
        "marketing_email",
        True,
        "email",
        "",
    )
    audit = AuditEntry.objects.get(action="customer.erase")
    assert audit.actor == cco
    assert audit.target_label == f"Erased customer {ann.pk}"
    assert audit.details["erased"] == {
        "identities": 2,
        "interactions": 4,
        "consents": 1,
        "email attachments": 0,
    }
    entry = Interaction.objects.get(customer=ann, title="Customer data erased")
    assert entry.actor == cco


def test_erase_shows_a_message_on_the_next_page(client_for, cco, ann):
    client = client_for(cco)
    client.post(erase_url(ann), {"confirmation": "ERASE"})
    page = client.get(erase_url(ann)).text
    assert f"Customer {ann.pk} was erased: identities removed" in page


def test_erase_also_erases_profiles_merged_into_the_customer(cco, ann):
    older = Customer.objects.create(display_name="Annie Smith", attributes={"pet": "cat"})
    merge_customers(survivor=ann, merged=older, actor=cco)

    erase_customer(customer=ann, actor=cco)

    older.refresh_from_db()
    assert older.display_name == f"Erased customer {older.pk}"
    assert older.attributes == {} and older.erased_at is not None
    assert older.merged_into == ann


def test_erase_runs_the_erasers_other_apps_register(cco, ann):
    seen = []

    def erase_case_subjects(customer):
        seen.append(customer.pk)
        return 3

    register_eraser("cases.case", erase_case_subjects)
    try:
        erase_customer(customer=ann, actor=cco)
    finally:
        unregister_eraser("cases.case")
    assert seen == [ann.pk]
    assert AuditEntry.objects.get(action="customer.erase").details["erased"]["cases.case"] == 3


def test_erase_is_all_or_nothing(cco, ann):
    def broken(customer):
        raise ValidationError("cases could not erase")

    register_eraser("cases.case", broken)
    try:
        with pytest.raises(ValidationError):
            erase_customer(customer=ann, actor=cco)
    finally:
        unregister_eraser("cases.case")
    ann.refresh_from_db()
    assert ann.display_name == "Ann Smith" and ann.erased_at is None
    assert Identity.objects.filter(customer=ann).count() == 2
    assert not AuditEntry.objects.filter(action="customer.erase").exists()


def test_customer_names_are_shown_inert_on_privacy_pages(client_for, cco, db):
    evil = Customer.objects.create(display_name="<script>alert(1)</script>")
    client = client_for(cco)
    for url in (export_url(evil), erase_url(evil)):
        page = client.get(url).text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
