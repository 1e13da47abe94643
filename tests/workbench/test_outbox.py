"""The local outbox: the backend that stores mail with no provider configured, and its page."""

import re
from datetime import timedelta

import pytest
from django.core.mail import EmailMessage, get_connection, send_mail
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from workbench import settings as settings_module
from workbench.mail import PAGE_SIZE
from workbench.models import OutboxEmail

URL = "/outbox/"


@pytest.fixture(autouse=True)
def _local_outbox(settings):
    # pytest-django swaps in locmem mail; the product's default without a provider is the outbox.
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"


def mail_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<li id="outbox-mail-(\d+)"', html)]


def add_mails(count: int) -> list[OutboxEmail]:
    start = timezone.now() - timedelta(hours=1)
    return OutboxEmail.objects.bulk_create(
        OutboxEmail(to=f"c{n}@example.com", from_email="support@shop.example",
                    subject=f"Mail {n}", body=f"Body {n}", sent_at=start + timedelta(seconds=n))
        for n in range(count)
    )  # fmt: skip


# --- the backend -------------------------------------------------------------------------------


def test_the_backend_stores_each_message_with_its_headers(db):
    message = EmailMessage(
        subject="Re: Refund [#4]",
        body="On its way.",
        from_email="Support <support@shop.example>",
        to=["ann@example.com", "bo@example.com"],
        headers={"Message-ID": "<case-4.abc@shop.example>", "In-Reply-To": "<m1@mail.example>"},
    )
    assert message.send() == 1
    [mail] = OutboxEmail.objects.all()
    assert (mail.to, mail.from_email, mail.subject, mail.body) == (
        "ann@example.com, bo@example.com", "Support <support@shop.example>", "Re: Refund [#4]",
        "On its way.",
    )  # fmt: skip
    assert mail.message_id == "<case-4.abc@shop.example>"
    assert mail.headers["In-Reply-To"] == "<m1@mail.example>" and "Date" in mail.headers
    assert "Content-Type" not in mail.headers


def test_the_backend_gives_a_message_without_one_a_message_id(db):
    send_mail("Hello", "Body", "support@shop.example", ["ann@example.com"])
    mail = OutboxEmail.objects.get()
    assert mail.message_id.startswith("<") and mail.message_id.endswith(">")


def test_a_message_without_recipients_is_not_stored(db):
    assert get_connection().send_messages([EmailMessage("Hi", "Body", "a@b.example", [])]) == 0
    assert not OutboxEmail.objects.exists()


def test_a_batch_connection_stores_its_mail_in_one_insert_when_it_closes(db):
    messages = [
        EmailMessage(f"Offer {n}", "Body", "a@b.example", [f"c{n}@x.example"]) for n in range(3)
    ]
    backend = get_connection()
    assert backend.open() is True
    assert backend.send_messages(messages) == 3
    assert not OutboxEmail.objects.exists()  # not before the batch is done
    with CaptureQueriesContext(connection) as queries:
        backend.close()
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"]
    assert sorted(OutboxEmail.objects.values_list("subject", flat=True)) == [
        "Offer 0",
        "Offer 1",
        "Offer 2",
    ]


def test_a_batch_that_cannot_be_stored_fails_on_close_and_stores_nothing(db, monkeypatch):
    def broken(*args, **kwargs):
        raise DatabaseError("disk full")

    backend = get_connection()
    backend.open()
    backend.send_messages([EmailMessage("Offer", "Body", "a@b.example", ["c@x.example"])])
    monkeypatch.setattr(OutboxEmail.objects, "bulk_create", broken)
    with pytest.raises(DatabaseError, match="disk full"):
        backend.close()
    assert not OutboxEmail.objects.exists()


def test_the_outbox_is_the_default_backend_without_a_provider(settings):
    # The settings were read from an environment with no mail provider configured; pytest-django
    # swapped the backend afterwards, so read the settings module's own decision.
    assert settings_module.EMAIL_BACKEND == "workbench.mail.OutboxBackend"
    assert settings.WORKBENCH_MAIL_DOMAIN == "workbench.localhost"


# --- the page ----------------------------------------------------------------------------------


def test_signed_out_visitors_go_to_sign_in(client, db):
    response = client.get(URL)
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")


def test_a_user_without_a_role_is_refused(client_for, no_role_user):
    add_mails(1)
    response = client_for(no_role_user).get(URL)
    assert response.status_code == 403 and "Mail 0" not in response.text


def test_an_empty_outbox_explains_where_replies_go(client_for, agent):
    response = client_for(agent).get(URL)
    assert response.status_code == 200
    empty = response.text.split('id="outbox-empty"')[1].split("</div>")[0]
    assert "No mail sent yet" in empty
    assert "With no mail provider configured" in empty and "lands here" in empty


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer", "cco"])
def test_every_role_reads_the_outbox_and_finds_it_in_the_navigation(client_for, make_user, role):
    add_mails(1)
    html = client_for(make_user(role)).get(URL).text
    assert "Mail 0" in html
    assert '<a href="/outbox/" aria-current="page">Outbox</a>' in html


def test_the_outbox_lists_newest_first_with_to_subject_time_and_body(client_for, agent):
    older, newer = add_mails(2)
    html = client_for(agent).get(URL).text
    assert mail_ids(html) == [newer.pk, older.pk]
    item = html.split(f'id="outbox-mail-{newer.pk}"')[1].split("</li>")[0]
    assert 'data-field="to">c1@example.com<' in item
    assert "<strong>Mail 1</strong>" in item
    assert 'data-field="body">Body 1</pre>' in item
    assert f'<time datetime="{newer.sent_at:%Y-%m-%dT%H:%M:%S}' in item


def test_mail_text_is_escaped(client_for, agent):
    OutboxEmail.objects.create(
        to="<script>alert(1)</script>@x.example",
        from_email="support@shop.example",
        subject="<img src=x onerror=alert(2)>",
        body="<script>alert(3)</script>",
        sent_at=timezone.now(),
    )
    html = client_for(agent).get(URL).text
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html
    assert 'class="outbox" aria-label="Sent mail, newest first" hx-disable' in html


def test_pages_of_25_by_position_and_a_constant_number_of_queries(
    client_for, agent, django_assert_num_queries
):
    mails = add_mails(PAGE_SIZE + 5)
    client = client_for(agent)
    client.get(URL)  # warm per-process caches
    with CaptureQueriesContext(connection) as first:
        html = client.get(URL).text
    newest = [m.pk for m in reversed(mails)]
    assert mail_ids(html) == newest[:PAGE_SIZE]
    older_url = re.search(r'href="(/outbox/\?before=\d+)">Older mail', html).group(1)
    with django_assert_num_queries(len(first.captured_queries)):
        older = client.get(older_url).text
    assert mail_ids(older) == newest[PAGE_SIZE:]
    assert "Older mail" not in older and 'href="/outbox/">Newest mail' in older
    add_mails(40)
    with django_assert_num_queries(len(first.captured_queries)):
        assert len(mail_ids(client.get(URL).text)) == PAGE_SIZE


def test_a_bad_position_is_a_400(client_for, agent):
    response = client_for(agent).get(URL + "?before=abc")
    assert response.status_code == 400 and "That is not a position in the outbox" in response.text


def test_past_the_oldest_mail_says_so(client_for, agent):
    [mail] = add_mails(1)
    html = client_for(agent).get(f"{URL}?before={mail.pk}").text
    assert "No older mail" in html
