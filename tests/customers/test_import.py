"""CSV import: the file is checked at upload, rows are upserted by identity, the report tells."""

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from customers import importing
from customers.consent import latest_consents
from customers.identity import resolve_customer
from customers.importing import can_see_import, render_import_progress, run_import
from customers.models import Consent, Customer, Identity, ImportJob, Interaction, Kind
from customers.tasks import import_customers_task
from workbench import realtime
from workbench.models import AuditEntry

IMPORT_URL = "/customers/import/"

GOOD_CSV = (
    "name,email,phone,x,lifecycle_stage,attr:plan,attr:region,consent:marketing_email\n"
    "Ann Archer,ann@example.com,+44 1632 960001,@AnnA,customer,gold,north,yes\n"
    "Bob Baker,BOB@example.com,,,lead,silver,,no\n"
    "Cleo Carter,,,@cleo,loyal,,south,\n"
)


@pytest.fixture(autouse=True)
def media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def csv_file(content, name="customers.csv"):
    data = content.encode("utf-8") if isinstance(content, str) else content
    return SimpleUploadedFile(name, data, content_type="text/csv")


def upload(client, content, name="customers.csv"):
    return client.post(IMPORT_URL, {"file": csv_file(content, name)})


def start(user, content, name="customers.csv") -> ImportJob:
    return importing.start_import(user=user, upload=csv_file(content, name))


def assert_nothing_stored():
    assert ImportJob.objects.count() == 0
    assert Customer.objects.count() == 0
    assert Identity.objects.count() == 0


# --- refused at upload -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "name,email\nJosé Núñez,jose@example.com\n".encode("latin-1"),
            "The file is not UTF-8 text.",
        ),
        (os.urandom(4096), "The file is not UTF-8 text."),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "The file is not UTF-8 text."),
        (
            "ann@example.com,Ann\nbob@example.com,Bob\n",
            "The first line must be a header row naming the columns",
        ),
        (
            "name,email,shoe_size,consent:telepathy\nAnn,ann@example.com,38,yes\n",
            "The header row names unknown columns: "
            "\u201cshoe_size\u201d, \u201cconsent:telepathy\u201d.",
        ),
        ("name,attr:plan\nAnn,gold\n", "The header row needs at least one identity column"),
        (
            "name,email,Email\nAnn,a@example.com,b@example.com\n",
            "names the column \u201cemail\u201d twice",
        ),
        ("name,email\n", "The file has a header row but no customer rows."),
        ("", "The submitted file is empty."),
        ("\n\n", "The file is empty."),
        ('name,email\n"Ann,ann@example.com\n', "The file is not valid CSV"),
        ("x" * 200_000 + "\n", "The file is not valid CSV"),
    ],
    ids=[
        "latin-1",
        "random-bytes",
        "png",
        "missing-header",
        "unknown-columns",
        "no-identity-column",
        "repeated-column",
        "no-rows",
        "empty",
        "blank-lines",
        "unclosed-quote",
        "one-huge-field",
    ],
)
def test_a_malformed_file_is_refused_at_upload_and_nothing_is_stored(
    client_for, marketer, content, message
):
    response = upload(client_for(marketer), content)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert_nothing_stored()


def test_a_25_mb_upload_is_refused_before_it_is_read(client_for, marketer):
    response = upload(client_for(marketer), b"name,email\n" + os.urandom(25 * 1024 * 1024))

    assert response.status_code == 413
    assert "the limit is 20 MB" in response.content.decode()
    assert_nothing_stored()


def test_a_file_just_over_the_limit_is_refused_by_the_check(marketer):
    content = b"name,email\n" + b"Ann,ann@example.com\n" * (importing.MAX_UPLOAD_BYTES // 20)

    with pytest.raises(importing.ValidationError, match="the limit is 20 MB"):
        start(marketer, content)
    assert_nothing_stored()


def test_a_file_with_too_many_rows_is_refused(marketer, monkeypatch):
    monkeypatch.setattr(importing, "MAX_ROWS", 3)
    content = "email\n" + "".join(f"c{n}@example.com\n" for n in range(4))

    with pytest.raises(importing.ValidationError, match="more than 3 rows"):
        start(marketer, content)
    assert_nothing_stored()


@pytest.mark.parametrize("role", ["agent", "supervisor"])
def test_service_roles_cannot_open_or_post_the_import(make_user, client_for, role):
    client = client_for(make_user(role))

    assert client.get(IMPORT_URL).status_code == 403
    assert upload(client, GOOD_CSV).status_code == 403
    assert_nothing_stored()


def test_an_upload_without_the_csrf_token_is_refused(marketer):
    client = Client(enforce_csrf_checks=True)
    client.force_login(marketer)

    response = upload(client, GOOD_CSV)

    assert response.status_code == 403
    assert_nothing_stored()


def test_a_user_without_role_is_refused(client_for, no_role_user):
    assert upload(client_for(no_role_user), GOOD_CSV).status_code == 403
    assert_nothing_stored()


def test_the_service_refuses_an_agent_too(agent):
    with pytest.raises(importing.PermissionDenied):
        start(agent, GOOD_CSV)
    assert_nothing_stored()


# --- the upload --------------------------------------------------------------------------------


def test_the_import_page_explains_the_columns_and_has_an_empty_state(client_for, marketer):
    response = client_for(marketer).get(IMPORT_URL)

    page = response.content.decode()
    assert response.status_code == 200
    assert 'enctype="multipart/form-data"' in page
    assert "csrfmiddlewaretoken" in page
    assert "attr:&lt;key&gt; (any column starting attr: becomes an attribute)" in page
    assert "consent:&lt;purpose&gt; for marketing_email, marketing_sms" in page
    assert "No imports yet." in page


def test_a_valid_upload_is_queued_with_its_row_count_and_enqueued_after_commit(
    client_for, marketer, django_capture_on_commit_callbacks
):
    # The task is not executed here (no worker, no broker message): the callback is counted.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(client_for(marketer), "\ufeff" + GOOD_CSV, name="spring.csv")

    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("customers:import_status", args=[job.pk])
    assert (job.status, job.total_rows, job.original_name) == ("queued", 3, "spring.csv")
    assert job.created_by == marketer
    assert job.file.read().decode("utf-8-sig") == GOOD_CSV
    assert [c.__qualname__ for c in callbacks].count("start_import.<locals>.<lambda>") == 1
    assert AuditEntry.objects.get(action="customer.import").actor == marketer
    assert Customer.objects.count() == 0


# --- the run -----------------------------------------------------------------------------------


def test_a_good_file_creates_exactly_its_customers(marketer):
    job = start(marketer, GOOD_CSV)

    assert import_customers_task.run(job.pk) == "done"

    job.refresh_from_db()
    assert (job.status, job.processed_rows) == ("done", 3)
    assert (job.created_count, job.updated_count, job.rejected_count) == (3, 0, 0)
    assert job.rejected_rows == []
    ann = Identity.objects.get(channel="email", handle="ann@example.com").customer
    assert ann.display_name == "Ann Archer"
    assert ann.lifecycle_stage == "customer"
    assert ann.attributes == {"plan": "gold", "region": "north"}
    assert sorted(ann.identities.values_list("channel", "handle")) == [
        ("email", "ann@example.com"),
        ("phone", "+441632960001"),
        ("x", "@anna"),
    ]
    assert latest_consents(ann.pk)["marketing_email"].is_granted is True
    assert latest_consents(ann.pk)["marketing_email"].source == "api"
    bob = Identity.objects.get(channel="email", handle="bob@example.com").customer
    assert bob.attributes == {"plan": "silver"}
    assert latest_consents(bob.pk)["marketing_email"].is_granted is False
    cleo = Identity.objects.get(channel="x", handle="@cleo").customer
    assert (cleo.display_name, cleo.lifecycle_stage) == ("Cleo Carter", "loyal")
    assert latest_consents(cleo.pk) == {}
    assert Customer.objects.count() == 3
    assert Identity.objects.count() == 5
    assert Consent.objects.count() == 2
    assert Interaction.objects.filter(title="Customer created by CSV import").count() == 3


def test_known_customers_are_updated_not_duplicated(marketer):
    known = resolve_customer(channel="email", handle="ann@example.com", display_name="A.").customer
    known.attributes = {"plan": "bronze", "vip": "yes"}
    known.save(update_fields=["attributes"])
    job = start(marketer, GOOD_CSV)

    run_import(job_id=job.pk)

    job.refresh_from_db()
    known.refresh_from_db()
    assert (job.created_count, job.updated_count, job.rejected_count) == (2, 1, 0)
    assert Customer.objects.count() == 3
    assert known.display_name == "Ann Archer"
    assert known.attributes == {"plan": "gold", "vip": "yes", "region": "north"}
    assert known.identities.count() == 3
    change = Interaction.objects.get(customer=known, kind=Kind.PROFILE)
    assert change.title == "Profile changed: name, lifecycle stage, attributes"


def test_a_bad_row_is_rejected_with_its_reason_and_the_others_are_stored(marketer):
    known = resolve_customer(channel="email", handle="known@example.com").customer
    content = (
        "name,email,phone,lifecycle_stage,consent:marketing_sms\n"
        "Good One,one@example.com,,lead,\n"
        "Bad Email,one@,,,\n"
        "\n"
        "Bad Stage,stage@example.com,,vip,\n"
        "Bad Consent,consent@example.com,,,maybe\n"
        "Bad Phone,phone@example.com,12,,\n"
        "Nobody,,,lead,yes\n"
        "Known Person,known@example.com,,,\n"
        "Good Two,two@example.com,+441632960002,,granted\n"
        "Two People,one@example.com,+441632960002,,\n"
    )
    job = start(marketer, content)

    run_import(job_id=job.pk)

    job.refresh_from_db()
    two = Identity.objects.get(handle="two@example.com").customer
    assert (job.total_rows, job.processed_rows) == (9, 9)
    assert (job.created_count, job.updated_count, job.rejected_count) == (2, 1, 6)
    assert job.rejected_rows == [
        {"row": 3, "reason": "email: 'one@' is not an email address"},
        {
            "row": 5,
            "reason": "lifecycle_stage: 'vip' is not one of lead, customer, loyal, at_risk, "
            "churned",
        },
        {
            "row": 6,
            "reason": "consent:marketing_sms: 'maybe' is not yes, no, granted, withdrawn or blank",
        },
        {"row": 7, "reason": "phone: '12' is not a phone number"},
        {"row": 8, "reason": "the row has no identity: fill in at least one of email, phone"},
        # Two identities of two different people on one row: refused, never silently merged.
        {"row": 11, "reason": f"phone: '+441632960002' belongs to another customer (#{two.pk})"},
    ]
    assert Customer.objects.count() == 3
    assert not Customer.objects.filter(display_name__startswith="Bad").exists()
    assert not Identity.objects.filter(handle__in=["stage@example.com", "consent@example.com"])
    assert Identity.objects.get(handle="one@example.com").customer.display_name == "Good One"
    assert Identity.objects.get(handle="one@example.com").customer.identities.count() == 1
    known.refresh_from_db()
    assert known.display_name == "Known Person"
    assert latest_consents(two.pk)["marketing_sms"].is_granted is True
    assert Consent.objects.count() == 1


def test_a_row_with_more_values_than_columns_is_rejected(marketer):
    job = start(marketer, "name,email\nAnn,ann@example.com,surplus\nBob,bob@example.com\n")

    run_import(job_id=job.pk)

    job.refresh_from_db()
    assert job.rejected_rows == [
        {"row": 2, "reason": "the row has 3 values but the header names 2 columns"}
    ]
    assert job.created_count == 1


def test_row_numbers_are_lines_of_the_file_even_with_quoted_line_breaks(marketer):
    content = 'name,email\n"Ann\nArcher",ann@example.com\nBad,nope\n'
    job = start(marketer, content)

    run_import(job_id=job.pk)

    job.refresh_from_db()
    assert job.rejected_rows == [{"row": 4, "reason": "email: 'nope' is not an email address"}]


def test_running_the_task_twice_does_not_double_anything(marketer):
    job = start(marketer, GOOD_CSV)
    import_customers_task.run(job.pk)
    counts = (Customer.objects.count(), Identity.objects.count(), Consent.objects.count())
    entries = Interaction.objects.count()

    assert import_customers_task.run(job.pk) == "done"

    job.refresh_from_db()
    assert (Customer.objects.count(), Identity.objects.count(), Consent.objects.count()) == counts
    assert Interaction.objects.count() == entries
    assert (job.created_count, job.updated_count, job.processed_rows) == (3, 0, 3)


def test_a_redelivered_task_resumes_after_the_last_committed_chunk(marketer, monkeypatch):
    monkeypatch.setattr(importing, "CHUNK_ROWS", 2)
    content = "email\n" + "".join(f"c{n}@example.com\n" for n in range(5))
    job = start(marketer, content)
    # A worker died after committing the first chunk: the job says running, 2 rows done.
    ImportJob.objects.filter(pk=job.pk).update(status="running", processed_rows=2, created_count=2)
    for n in range(2):
        resolve_customer(channel="email", handle=f"c{n}@example.com")

    run_import(job_id=job.pk)

    job.refresh_from_db()
    assert (job.status, job.processed_rows, job.created_count, job.updated_count) == (
        "done",
        5,
        5,
        0,
    )
    assert Customer.objects.count() == 5


def test_importing_the_same_file_again_updates_and_adds_no_duplicate_consent(marketer):
    run_import(job_id=start(marketer, GOOD_CSV).pk)
    consents = Consent.objects.count()

    second = start(marketer, GOOD_CSV)
    run_import(job_id=second.pk)

    second.refresh_from_db()
    assert (second.created_count, second.updated_count) == (0, 3)
    assert Customer.objects.count() == 3
    assert Consent.objects.count() == consents
    assert not Interaction.objects.filter(kind=Kind.PROFILE, title__startswith="Profile changed")


def test_a_job_whose_file_is_gone_is_marked_failed(marketer):
    job = start(marketer, GOOD_CSV)
    job.file.delete(save=False)

    with pytest.raises(FileNotFoundError):
        run_import(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith("The import stopped: FileNotFoundError")
    assert run_import(job_id=job.pk).status == "failed"  # and it stays so


def test_a_missing_job_is_nothing_to_do(db):
    assert import_customers_task.run(987654) is None


# --- the status page ---------------------------------------------------------------------------


def test_the_creator_sees_the_report_with_rejected_rows_escaped(client_for, marketer):
    job = start(marketer, 'name,email\nAnn,ann@example.com\nEvil,"<script>alert(1)</script>"\n')
    run_import(job_id=job.pk)

    response = client_for(marketer).get(reverse("customers:import_status", args=[job.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert "Import finished" in page
    assert "2 of 2 rows" in page
    assert "1 created" in page
    assert "1 rejected" in page
    assert "<script>alert(1)</script>" not in page
    assert "email: &#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27; is not an email address" in (
        page
    )
    assert 'id="realtime"' not in page  # a finished import needs no live socket


def test_a_running_import_subscribes_to_its_live_group(client_for, marketer):
    job = start(marketer, GOOD_CSV)

    response = client_for(marketer).get(reverse("customers:import_status", args=[job.pk]))

    page = response.content.decode()
    assert "Waiting to start" in page
    assert f"group=import.{job.pk}" in page
    assert 'hx-trigger="wb:resync from:body"' in page
    assert '<progress max="3" value="0"' in page


def test_a_long_rejection_list_is_paginated(client_for, marketer):
    content = "email\n" + "nope\n" * 150
    job = start(marketer, content)
    run_import(job_id=job.pk)
    client = client_for(marketer)

    first = client.get(reverse("customers:import_status", args=[job.pk])).content.decode()
    second = client.get(
        reverse("customers:import_status", args=[job.pk]) + "?page=2"
    ).content.decode()

    assert first.count("is not an email address") == 100
    assert "Page 1 of 2" in first
    assert second.count("is not an email address") == 50
    assert "<td>151</td>" in second


def test_another_marketer_gets_404_and_the_cco_sees_the_job(client_for, make_user, marketer, cco):
    job = start(marketer, GOOD_CSV)
    url = reverse("customers:import_status", args=[job.pk])

    assert client_for(make_user("marketer", username="max")).get(url).status_code == 404
    assert client_for(cco).get(url).status_code == 200


@pytest.mark.parametrize("role", ["agent", "supervisor"])
def test_service_roles_get_403_on_the_status_page(client_for, make_user, marketer, role):
    job = start(marketer, GOOD_CSV)
    url = reverse("customers:import_status", args=[job.pk])

    assert client_for(make_user(role)).get(url).status_code == 403


def test_the_import_page_lists_only_ones_own_recent_imports(client_for, make_user, marketer):
    start(marketer, GOOD_CSV, name="mine.csv")
    start(make_user("marketer", username="max"), GOOD_CSV, name="theirs.csv")

    page = client_for(marketer).get(IMPORT_URL).content.decode()

    assert "mine.csv" in page
    assert "theirs.csv" not in page


def test_the_import_page_costs_the_same_queries_for_many_imports(client_for, marketer):
    client = client_for(marketer)
    start(marketer, GOOD_CSV)
    client.get(IMPORT_URL)  # warm the session
    with CaptureQueriesContext(connection) as one:
        client.get(IMPORT_URL)
    for _ in range(6):
        start(marketer, GOOD_CSV)

    with CaptureQueriesContext(connection) as seven:
        page = client.get(IMPORT_URL).content.decode()

    assert len(seven.captured_queries) == len(one.captured_queries)
    assert page.count("customers.csv") == 7


# --- live progress -----------------------------------------------------------------------------


def test_the_pushed_progress_fragment_equals_the_http_partial(client_for, marketer):
    job = start(marketer, GOOD_CSV)
    run_import(job_id=job.pk)

    pushed = render_import_progress(marketer, job_id=job.pk)
    fetched = client_for(marketer).get(
        reverse("customers:import_status", args=[job.pk]), HTTP_HX_REQUEST="true"
    )

    assert fetched.content.decode() == pushed
    assert pushed.lstrip().startswith('<section id="import-progress"')
    assert "3 created" in pushed


def test_only_the_creator_and_the_cco_may_hear_an_import(make_user, marketer, cco):
    job = start(marketer, GOOD_CSV)
    group = realtime.group_name("import", job.pk)

    assert realtime.can_subscribe(marketer, group)
    assert realtime.can_subscribe(cco, group)
    assert not realtime.can_subscribe(make_user("marketer", username="max"), group)
    assert not realtime.can_subscribe(make_user("agent"), group)
    assert render_import_progress(make_user("marketer", username="max2"), job_id=job.pk) == ""
    assert can_see_import(marketer, job)


def test_progress_is_published_after_each_chunk(
    marketer, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(importing, "CHUNK_ROWS", 2)
    job = start(marketer, "email\n" + "".join(f"c{n}@example.com\n" for n in range(5)))
    group = realtime.group_name("import", job.pk)
    before = realtime.current_seq(group)

    with django_capture_on_commit_callbacks(execute=True):
        run_import(job_id=job.pk)

    # Running, three chunks, finished: five events, each numbered in the group's sequence.
    assert realtime.current_seq(group) - before == 5
    # The customers are stored: the uploaded copy of their data is deleted with the commit.
    assert not job.file.storage.exists(job.file.name)
