"""Merging two customers: who may, what moves (found generically), tombstones, timeline, audit."""

import threading

import pytest
from django.apps import apps
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, models
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from customers.consent import record_consent
from customers.merge import merge_customers, preview_merge
from customers.models import Channel, Consent, Customer, Direction, Identity, Interaction, Kind
from customers.timeline import record_interaction
from workbench.models import AuditEntry

CONFIRM = "I understand this cannot be undone"


def make_customer(name, *handles, **fields):
    customer = Customer.objects.create(display_name=name, **fields)
    for handle in handles:
        channel, value = handle.split(":", 1)
        Identity.objects.create(customer=customer, channel=channel, handle=value)
    return customer


def note(customer, text, **fields):
    interaction, _ = record_interaction(
        customer=customer,
        channel=Channel.EMAIL,
        kind=Kind.MESSAGE,
        direction=Direction.INBOUND,
        body_text=text,
        **fields,
    )
    return interaction


@pytest.fixture
def pair(db):
    """Ann (the survivor) and her duplicate 'A. Smith' with two handles, a consent, 3 messages."""
    ann = make_customer("Ann Smith", "email:ann@example.com", attributes={"plan": "gold"})
    dupe = make_customer(
        "A. Smith",
        "email:a.smith@example.com",
        "x:@asmith",
        attributes={"plan": "free", "region": "EU"},
        timezone="Europe/Paris",
    )
    record_consent(customer=dupe, purpose="marketing_email", is_granted=True, source="email")
    for n in range(3):
        note(dupe, f"message {n}")
    return ann, dupe


def merge_url(customer):
    return reverse("customers:merge", args=[customer.pk])


def assert_nothing_moved(ann, dupe):
    dupe.refresh_from_db()
    assert dupe.merged_into_id is None
    assert Identity.objects.filter(customer=dupe).count() == 2
    assert Interaction.objects.filter(customer=dupe).count() == 4  # 3 messages + consent entry
    assert Interaction.objects.filter(customer=ann).count() == 0
    assert not AuditEntry.objects.filter(action="customer.merge").exists()


# Refusals first.


@pytest.mark.parametrize("role", ["agent", "marketer"])
def test_service_roles_other_than_supervisor_cannot_open_or_post_a_merge(
    client_for, make_user, pair, role
):
    ann, dupe = pair
    client = client_for(make_user(role))
    assert client.get(merge_url(ann), {"other": dupe.pk}).status_code == 403
    response = client.post(merge_url(ann), {"other": dupe.pk, "confirm": "on"})
    assert response.status_code == 403
    assert "Your role cannot open this page" in response.text
    assert_nothing_moved(ann, dupe)


@pytest.mark.parametrize("role", ["agent", "marketer", None])
def test_merge_service_refuses_users_without_the_right_role(make_user, pair, role):
    ann, dupe = pair
    with pytest.raises(PermissionDenied):
        merge_customers(survivor=ann, merged=dupe, actor=make_user(role))
    assert_nothing_moved(ann, dupe)


def test_user_without_role_gets_the_no_role_page(client_for, no_role_user, pair):
    ann, dupe = pair
    response = client_for(no_role_user).post(merge_url(ann), {"other": dupe.pk, "confirm": "on"})
    assert response.status_code == 403
    assert "No role yet" in response.text
    assert_nothing_moved(ann, dupe)


def test_merging_a_customer_into_itself_is_refused(client_for, supervisor, pair):
    ann, dupe = pair
    response = client_for(supervisor).post(merge_url(ann), {"other": ann.pk, "confirm": "on"})
    assert response.status_code == 400
    assert "cannot be merged into itself" in response.text
    assert_nothing_moved(ann, dupe)


def test_merge_without_the_confirmation_box_is_refused(client_for, supervisor, pair):
    ann, dupe = pair
    response = client_for(supervisor).post(merge_url(ann), {"other": dupe.pk})
    assert response.status_code == 400
    assert "Tick the box to confirm: a merge cannot be undone." in response.text
    assert 'aria-invalid="true"' in response.text
    assert_nothing_moved(ann, dupe)


def test_merge_without_another_customer_is_refused(client_for, supervisor, pair):
    ann, dupe = pair
    response = client_for(supervisor).post(merge_url(ann), {"confirm": "on"})
    assert response.status_code == 400
    assert "Pick the customer to merge into this one." in response.text
    assert_nothing_moved(ann, dupe)


def test_merge_with_an_unknown_customer_is_refused(client_for, supervisor, pair):
    ann, _ = pair
    response = client_for(supervisor).get(merge_url(ann), {"other": 999_999_999})
    assert response.status_code == 400
    assert "There is no customer 999999999." in response.text
    assert client_for(supervisor).get(merge_url(ann), {"other": "abc"}).status_code == 400


def test_merging_an_already_merged_customer_is_refused(client_for, supervisor, pair):
    ann, dupe = pair
    third = make_customer("Third")
    merge_customers(survivor=third, merged=dupe, actor=supervisor)
    response = client_for(supervisor).post(merge_url(ann), {"other": dupe.pk, "confirm": "on"})
    assert response.status_code == 400
    assert f"was already merged into customer {third.pk}" in response.text
    assert Identity.objects.filter(customer=ann).count() == 1
    assert AuditEntry.objects.filter(action="customer.merge").count() == 1


def test_merging_an_erased_customer_is_refused(supervisor, pair):
    ann, dupe = pair
    Customer.objects.filter(pk=dupe.pk).update(erased_at="2025-01-01T00:00:00Z")
    dupe.refresh_from_db()
    with pytest.raises(ValidationError, match="was erased"):
        merge_customers(survivor=ann, merged=dupe, actor=supervisor)
    assert Identity.objects.filter(customer=dupe).count() == 2


# The page.


def test_search_finds_other_customers_by_name_and_handle_but_not_this_one(
    client_for, supervisor, pair
):
    ann, dupe = pair
    client = client_for(supervisor)
    by_name = client.get(merge_url(ann), {"q": "smith"})
    assert by_name.status_code == 200
    assert f"?other={dupe.pk}" in by_name.text
    assert f"?other={ann.pk}" not in by_name.text
    by_handle = client.get(merge_url(ann), {"q": "a.smith@"})
    assert f"?other={dupe.pk}" in by_handle.text
    by_number = client.get(merge_url(ann), {"q": f"#{dupe.pk}"})
    assert f"?other={dupe.pk}" in by_number.text
    nobody = client.get(merge_url(ann), {"q": "zebedee"})
    assert "No other customer matches “zebedee”" in nobody.text


def test_preview_shows_both_customers_and_what_moves(client_for, supervisor, pair):
    ann, dupe = pair
    response = client_for(supervisor).get(merge_url(ann), {"other": dupe.pk})
    assert response.status_code == 200
    page = response.text
    assert "Ann Smith" in page and "A. Smith" in page
    assert "a.smith@example.com" in page and "@asmith" in page and "ann@example.com" in page
    assert (
        '<tr data-label="customers.identity"><td>Identities</td><td>2</td><td>0</td></tr>' in page
    )
    assert '<tr data-label="customers.consent"><td>Consents</td><td>1</td><td>0</td></tr>' in page
    assert (
        '<tr data-label="customers.interaction"><td>Interactions</td><td>4</td><td>0</td></tr>'
        in page
    )
    assert CONFIRM in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert_nothing_moved(ann, dupe)


def test_preview_page_costs_the_same_queries_however_much_there_is_to_move(
    client_for, supervisor, pair
):
    ann, dupe = pair
    client = client_for(supervisor)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get(merge_url(ann), {"other": dupe.pk, "q": "smith"}).status_code == 200
        return len(captured)

    before = queries()
    for n in range(20):
        Identity.objects.create(customer=dupe, channel="chat", handle=f"visitor-token-{n}")
        note(dupe, f"more {n}")
        make_customer(f"Smith {n}", f"email:smith{n}@example.com")
    assert queries() == before


def test_name_and_handles_are_shown_inert(client_for, supervisor, db):
    ann = make_customer("Ann")
    evil = make_customer('<script>alert("x")</script>', "chat:<img/src=x>token")
    page = client_for(supervisor).get(merge_url(ann), {"other": evil.pk}).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<img/src=x>" not in page


# The merge.


@pytest.mark.parametrize("role", ["supervisor", "cco"])
def test_merge_moves_identities_consents_and_timeline_to_the_survivor(
    client_for, make_user, pair, role
):
    ann, dupe = pair
    user = make_user(role)
    client = client_for(user)
    response = client.post(merge_url(ann), {"other": dupe.pk, "confirm": "on"})
    assert response.status_code == 302
    assert response["Location"] == reverse("customers:detail", args=[ann.pk])

    assert sorted(Identity.objects.filter(customer=ann).values_list("handle", flat=True)) == [
        "@asmith",
        "a.smith@example.com",
        "ann@example.com",
    ]
    assert Consent.objects.filter(customer=ann).count() == 1
    assert Interaction.objects.filter(customer=dupe).count() == 0
    assert Interaction.objects.filter(customer=ann, kind=Kind.MESSAGE).count() == 3
    dupe.refresh_from_db()
    ann.refresh_from_db()
    assert dupe.merged_into == ann and dupe.merged_at is not None
    # The survivor wins on conflict; the merged customer's extra keys and blanks are kept.
    assert ann.attributes == {"plan": "gold", "region": "EU"}
    assert ann.timezone == "Europe/Paris"

    entry = Interaction.objects.get(customer=ann, kind=Kind.PROFILE)
    assert entry.title == f"Merged Customer {dupe.pk} (A. Smith) into this profile"
    assert entry.actor == user and entry.channel == Channel.SYSTEM
    audit = AuditEntry.objects.get(action="customer.merge")
    assert audit.actor == user
    assert audit.target_type == "customers.customer" and audit.target_id == str(ann.pk)
    assert audit.details["merged_id"] == dupe.pk
    assert audit.details["moved"] == {
        "customers.identity": 2,
        "customers.consent": 1,
        "customers.interaction": 4,
    }


def test_merge_success_message_is_shown(client_for, supervisor, pair):
    ann, dupe = pair
    client = client_for(supervisor)
    response = client.post(merge_url(ann), {"other": dupe.pk, "confirm": "on"})
    # The message waits for the next page; read it from the merge page of the survivor.
    page = client.get(merge_url(ann)).text
    assert response.status_code == 302
    assert f"Customer {dupe.pk} was merged into this profile: 7 records moved." in page


def test_preview_reports_every_relation_pointing_at_customer(supervisor, pair):
    ann, dupe = pair
    expected = {
        rel.related_model._meta.label_lower
        for rel in Customer._meta.related_objects
        if rel.field.name != "merged_into"
    }
    preview = preview_merge(survivor=ann, merged=dupe)
    assert set(preview.moves) == expected
    assert {"customers.identity", "customers.consent", "customers.interaction"} <= expected


def test_earlier_tombstones_point_at_the_new_survivor(supervisor, pair):
    ann, dupe = pair
    older = make_customer("Annie", "email:annie@example.com")
    merge_customers(survivor=dupe, merged=older, actor=supervisor)
    assert preview_merge(survivor=ann, merged=dupe).tombstones == 1

    merge_customers(survivor=ann, merged=dupe, actor=supervisor)

    older.refresh_from_db()
    assert older.merged_into == ann
    assert Identity.objects.get(handle="annie@example.com").customer == ann


def test_a_merged_customer_page_redirects_to_the_survivor(client_for, supervisor, pair):
    ann, dupe = pair
    merge_customers(survivor=ann, merged=dupe, actor=supervisor)
    client = client_for(supervisor)
    assert client.get(merge_url(dupe))["Location"] == merge_url(ann)
    response = client.get(reverse("customers:detail", args=[dupe.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("customers:detail", args=[ann.pk])


def test_interactions_cannot_be_recorded_on_a_tombstone(supervisor, pair):
    ann, dupe = pair
    merge_customers(survivor=ann, merged=dupe, actor=supervisor)
    dupe.refresh_from_db()
    with pytest.raises(ValidationError):
        note(dupe, "late")


@pytest.mark.django_db(transaction=True)
def test_two_opposite_merges_at_once_let_exactly_one_win(make_user):
    actor = make_user("supervisor")
    ann = make_customer("Ann", "email:ann@example.com")
    bob = make_customer("Ann B.", "email:annb@example.com")
    start = threading.Barrier(2)
    results, errors = [], []

    def merge(survivor, merged):
        try:
            start.wait(timeout=10)
            results.append(merge_customers(survivor=survivor, merged=merged, actor=actor).pk)
        except Exception as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=merge, args=(ann, bob)),
        threading.Thread(target=merge, args=(bob, ann)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == 1 and len(errors) == 1
    assert isinstance(errors[0], ValidationError)
    assert "was already merged" in errors[0].messages[0]
    winner = Customer.objects.get(pk=results[0])
    assert winner.merged_into_id is None
    assert Customer.objects.filter(merged_into=winner).count() == 1
    assert Identity.objects.filter(customer=winner).count() == 2
    assert AuditEntry.objects.filter(action="customer.merge").count() == 1


# Generality: a model the customers app has never heard of, with a uniqueness rule on customer.


@pytest.fixture
def touch_like_model(db):
    """A model like campaigns.Touch (one per campaign and customer), created for this test only."""

    class Meta:
        app_label = "customers"
        constraints = [
            models.UniqueConstraint(fields=["campaign", "customer"], name="probe_once_per_campaign")
        ]

    model = type(
        "MergeProbe",
        (models.Model,),
        {
            "__module__": __name__,
            "Meta": Meta,
            "customer": models.ForeignKey(
                Customer, on_delete=models.PROTECT, related_name="merge_probes"
            ),
            "campaign": models.CharField(max_length=20),
        },
    )
    with connection.schema_editor() as editor:  # rolled back with the test's transaction
        editor.create_model(model)
    yield model
    del apps.all_models["customers"]["mergeprobe"]
    delattr(Customer, "merge_probes")
    apps.clear_cache()


def test_rows_of_any_model_pointing_at_customer_move_and_twins_stay(
    touch_like_model, supervisor, pair
):
    ann, dupe = pair
    touch_like_model.objects.create(customer=ann, campaign="spring")
    touch_like_model.objects.create(customer=dupe, campaign="spring")  # ann already has one
    touch_like_model.objects.create(customer=dupe, campaign="summer")

    preview = preview_merge(survivor=ann, merged=dupe)
    assert preview.moves["customers.mergeprobe"] == 1
    assert preview.stays == {"customers.mergeprobe": 1}

    merge_customers(survivor=ann, merged=dupe, actor=supervisor)

    rows = touch_like_model.objects.order_by("campaign", "customer_id")
    assert [(row.campaign, row.customer_id) for row in rows] == [
        ("spring", ann.pk),
        ("spring", dupe.pk),
        ("summer", ann.pk),
    ]
    audit = AuditEntry.objects.get(action="customer.merge")
    assert audit.details["moved"]["customers.mergeprobe"] == 1
    assert audit.details["stayed"] == {"customers.mergeprobe": 1}
