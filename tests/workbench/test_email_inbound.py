"""Inbound email from raw RFC 5322 bytes to the timeline and a case: bodies, charsets,
attachments, quoted replies, threading (headers and our own reference), auto-replies, bounces."""

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage

from cases.models import Case
from cases.replies import send_reply
from customers.models import Customer, Identity, Interaction
from customers.privacy import erase_customer, register_eraser, unregister_eraser
from tests.cases.test_queue_page import make_queue
from workbench.connectors.delivery import deliver_interaction
from workbench.connectors.email_inbound import (
    MailRefused,
    ingest_email,
    sanitise_filename,
    trim_quoted_reply,
)
from workbench.models import AuditEntry, OutboxEmail

CORPUS = Path(__file__).parent / "corpus" / "email"


def corpus(name: str, **replace: str) -> bytes:
    raw = (CORPUS / name).read_bytes()
    for old, new in replace.items():
        raw = raw.replace(old.encode(), new.encode())
    return raw


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"
    settings.WORKBENCH_MAIL_DOMAIN = "workbench.localhost"


@pytest.fixture
def email_queue(db, agent):
    queue = make_queue("Email desk", channels=["email"], members=[agent])
    make_queue("Chat desk", channels=["chat"])
    return queue


def stored_files(settings) -> list[str]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def entry_of(result) -> Interaction:
    return Interaction.objects.get(pk=result.inbound.interaction.pk)


# --- from raw mail to timeline entry and case ----------------------------------------------


def test_a_plain_mail_lands_on_a_new_customer_and_opens_a_case(email_queue):
    result = ingest_email(corpus("plain.eml"))

    entry = entry_of(result)
    customer = Customer.objects.get()
    assert result.created is True
    assert customer.display_name == "Ann Lee"
    assert list(customer.identities.values_list("channel", "handle")) == [
        ("email", "ann.lee@example.com")
    ]
    assert (entry.channel, entry.direction, entry.kind) == ("email", "in", "message")
    assert entry.title == "Parcel never arrived"
    assert entry.body_text.startswith("Hello,\n\nMy order 4411 was due last Thursday")
    assert entry.external_id == "<CAF1x0q=ann.parcel.1@mail.example.com>"
    assert entry.data["from"] == "ann.lee@example.com"
    case = Case.objects.get()
    assert (case.customer, case.queue, case.channel) == (customer, email_queue, "email")
    assert case.subject == "Parcel never arrived"
    assert case.thread_key == "<CAF1x0q=ann.parcel.1@mail.example.com>"
    assert entry.subject == case
    assert result.inbound.case == case


def test_the_same_mail_twice_stores_one_entry_and_one_case(email_queue):
    first = ingest_email(corpus("plain.eml"))
    second = ingest_email(corpus("plain.eml"))

    assert (first.created, second.created) == (True, False)
    assert second.inbound.interaction.pk == first.inbound.interaction.pk
    assert Interaction.objects.filter(kind="message").count() == 1
    assert Case.objects.count() == 1


def test_multipart_alternative_keeps_the_text_and_the_sanitised_html(email_queue):
    entry = entry_of(ingest_email(corpus("alternative.eml")))

    assert entry.title == "Re: Rückerstattung für Bestellung 7781"
    assert entry.actor_label == "Bo Svensson"
    assert entry.body_text.startswith("Hi, I still have not received the refund — could you")
    assert "<p>Bo</p>" in entry.body_html
    assert "<script" not in entry.body_html
    assert "alert(1)" not in entry.body_html


@pytest.mark.parametrize(
    ("name", "sender", "subject", "display_name", "phrase"),
    [
        ("latin1.eml", "renee@example.fr", "Facture erronée", "Renée Façade",
         "La facture de décembre est erronée"),
        ("shift_jis.eml", "hanako.yamada@example.jp", "商品が届きません", "山田 花子",
         "注文番号 5520 の商品がまだ届いていません。"),
        ("koi8r.eml", "ivan@example.ru", "Не могу войти", "Иван Петров",  # noqa: RUF001
         "Не могу войти в личный кабинет после смены пароля."),  # noqa: RUF001
        ("windows1252.eml", "jose@example.es", "Charged twice", "Jose Garcia",
         "I was charged €19.99 twice – the “premium” plan shows two payments."),  # noqa: RUF001
    ],
)  # fmt: skip
def test_encoded_headers_and_charsets_are_decoded(
    email_queue, name, sender, subject, display_name, phrase
):
    result = ingest_email(corpus(name))

    entry = entry_of(result)
    assert entry.title == subject
    assert entry.actor_label == display_name
    assert phrase in entry.body_text
    assert Identity.objects.get().handle == sender
    assert Case.objects.get().subject == subject


def test_quoted_text_is_trimmed_for_the_timeline_and_the_full_body_is_kept(
    email_queue, client_for, agent
):
    entry = entry_of(ingest_email(corpus("alternative.eml")))

    assert entry.data["reply_text"] == (
        "Hi, I still have not received the refund — could you look again?\n\nBo"
    )
    assert "> Thanks for writing. The refund was sent today." in entry.body_text
    page = client_for(agent).get(f"/customers/{entry.customer_id}/").text
    assert "Show the whole message (quoted text)" in page
    assert "&gt; Thanks for writing." in page


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thanks!\n\nOn Mon, 2 Nov 2026 at 10:00, Ann <a@x.com> wrote:\n> hi", "Thanks!"),
        ("Thanks!\nOn Mon, 2 Nov 2026 at 10:00, Ann Lee <ann@x.com>\nwrote:\n> hi", "Thanks!"),
        ("Yes.\n\n-----Original Message-----\nFrom: Bo\nhi", "Yes."),
        ("Yes.\n\nFrom: Support <s@x.com>\nSent: Monday\nTo: Ann\nSubject: Re: x\n", "Yes."),
        ("Merci.\n\nLe lun. 2 nov. 2026 à 10:00, Bo <b@x.com> a écrit :\n> salut", "Merci."),
        ("Done.\n\n> earlier\n> more\n", "Done."),
        ("> only a quote\n> nothing else", "> only a quote\n> nothing else"),
        ("No quote at all.\nTwo lines.", "No quote at all.\nTwo lines."),
    ],
)
def test_trim_quoted_reply(text, expected):
    assert trim_quoted_reply(text) == expected


# --- attachments ---------------------------------------------------------------------------


def test_attachments_are_stored_listed_and_refused_ones_say_why(email_queue, settings):
    entry = entry_of(ingest_email(corpus("attachments.eml")))

    stored = entry.data["attachments"]
    assert [(a["name"], a["content_type"], a["size"]) for a in stored] == [
        ("Rechnung März.pdf", "application/pdf", 69),
        ("photo.png", "image/png", 70),
    ]
    assert all(a["path"].startswith("email-attachments/") for a in stored)
    assert stored_files(settings) == sorted(a["path"] for a in stored)
    assert default_storage.open(stored[0]["path"]).read().startswith(b"%PDF-1.4")
    assert entry.data["refused_attachments"] == [
        {"name": "lamp-fix.exe", "size": 62, "content_type": "application/octet-stream",
         "reason": "files ending .exe are not accepted"},
        {"name": "statement.pdf", "size": 62, "content_type": "application/pdf",
         "reason": "the content is not application/pdf"},
    ]  # fmt: skip
    assert Case.objects.get().subject == "Damaged item, photos attached"


def test_erasing_the_customer_deletes_their_stored_attachments(
    email_queue, settings, cco, django_capture_on_commit_callbacks
):
    entry = entry_of(ingest_email(corpus("attachments.eml")))
    other = entry_of(
        ingest_email(corpus("attachments.eml", **{"carla@": "dora@", "att.carla": "att.dora"}))
    )
    assert other.customer_id != entry.customer_id
    kept = sorted(a["path"] for a in other.data["attachments"])
    assert len(stored_files(settings)) == 4

    with django_capture_on_commit_callbacks(execute=True):
        erase_customer(customer=entry.customer, actor=cco)

    assert stored_files(settings) == kept  # only the other customer's files are left
    audit = AuditEntry.objects.get(action="customer.erase")
    assert audit.details["erased"]["email attachments"] == 2


def test_an_erasure_that_fails_deletes_no_attachment(
    email_queue, settings, cco, django_capture_on_commit_callbacks
):
    entry = entry_of(ingest_email(corpus("attachments.eml")))

    def broken(customer):
        raise ValidationError("another app could not erase")

    register_eraser("zz broken", broken)  # registered last: runs after the attachments' eraser
    try:
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(ValidationError):
            erase_customer(customer=entry.customer, actor=cco)
    finally:
        unregister_eraser("zz broken")
    assert len(stored_files(settings)) == 2
    assert Interaction.objects.get(pk=entry.pk).data["attachments"][0]["name"] == (
        "Rechnung März.pdf"
    )


def test_a_repeated_mail_leaves_no_second_copy_of_its_attachments(email_queue, settings):
    ingest_email(corpus("attachments.eml"))
    before = stored_files(settings)

    again = ingest_email(corpus("attachments.eml"))

    assert again.created is False
    assert stored_files(settings) == before
    assert len(before) == 2


def test_the_timeline_lists_attachments_and_the_agent_downloads_one(email_queue, client_for, agent):
    entry = entry_of(ingest_email(corpus("attachments.eml")))
    client = client_for(agent)

    page = client.get(f"/customers/{entry.customer_id}/").text
    assert f'href="/email/attachments/{entry.pk}/0/"' in page
    assert "Rechnung März.pdf" in page
    assert "lamp-fix.exe not stored: files ending .exe are not accepted" in page
    response = client.get(f"/email/attachments/{entry.pk}/1/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"] == 'attachment; filename="photo.png"'
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")


def test_an_attachment_is_not_served_to_a_user_without_a_role_or_signed_out(
    email_queue, client_for, no_role_user, client
):
    entry = entry_of(ingest_email(corpus("attachments.eml")))
    url = f"/email/attachments/{entry.pk}/0/"

    assert client.get(url).status_code == 302  # signed out: to the sign-in page
    assert client_for(no_role_user).get(url).status_code == 403


def test_an_attachment_index_beyond_the_list_is_404(email_queue, client_for, marketer):
    entry = entry_of(ingest_email(corpus("attachments.eml")))
    client = client_for(marketer)

    assert client.get(f"/email/attachments/{entry.pk}/0/").status_code == 200
    assert client.get(f"/email/attachments/{entry.pk}/2/").status_code == 404
    assert client.get(f"/email/attachments/{entry.pk + 999}/0/").status_code == 404


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ann\\invoice.pdf", "invoice.pdf"),
        ("..hidden", "hidden"),
        ("rapport\x00\x1f<script>.pdf", "rapport_script_.pdf"),
        ("", "attachment"),
        ("a" * 300 + ".pdf", "a" * 96 + ".pdf"),
    ],
)
def test_sanitise_filename(given, expected):
    assert sanitise_filename(given) == expected


# --- threading -----------------------------------------------------------------------------


def test_a_reply_with_in_reply_to_joins_the_case_even_when_it_was_solved(email_queue):
    first = ingest_email(corpus("plain.eml"))
    case = first.inbound.case
    Case.objects.filter(pk=case.pk).update(status="solved")

    reply = ingest_email(corpus("reply_in_reply_to.eml"))

    assert reply.inbound.case.pk == case.pk
    case.refresh_from_db()
    assert case.status == "open"
    entry = entry_of(reply)
    assert entry.data["thread_key"] == "<CAF1x0q=ann.parcel.1@mail.example.com>"
    assert entry.data["reply_text"] == (
        'The tracking page now says "returned to sender". Please resend it.\n\nAnn'
    )
    assert Case.objects.count() == 1


def test_a_reply_that_lost_its_headers_threads_by_our_subject_reference(email_queue):
    case = ingest_email(corpus("plain.eml")).inbound.case
    Case.objects.filter(pk=case.pk).update(status="solved")

    reply = ingest_email(corpus("reply_lost_headers.eml", __CASE_ID__=str(case.pk)))

    assert reply.inbound.case.pk == case.pk
    assert Case.objects.count() == 1
    assert entry_of(reply).data["reply_text"] == "Any news? I am still waiting."


def test_our_reference_from_a_stranger_does_not_reach_someone_elses_case(email_queue):
    case = ingest_email(corpus("plain.eml")).inbound.case
    Case.objects.filter(pk=case.pk).update(status="solved")
    forged = corpus("reply_lost_headers.eml", __CASE_ID__=str(case.pk)).replace(
        b"From: ann.lee@example.com", b"From: mallory@example.net"
    )

    result = ingest_email(forged)

    assert result.inbound.case.pk != case.pk
    assert result.inbound.case.customer.identities.get().handle == "mallory@example.net"
    assert Case.objects.get(pk=case.pk).status == "solved"


def test_an_answer_to_our_reply_threads_back_by_our_message_id(email_queue, agent):
    case = ingest_email(corpus("plain.eml")).inbound.case
    reply = send_reply(case=case, author=agent, channel="email", body="We sent a new one.")
    assert deliver_interaction(interaction_id=reply.pk) == "sent"
    sent = OutboxEmail.objects.get()
    assert sent.message_id == reply.external_id
    assert f"[#{case.pk}]" in sent.subject
    Case.objects.filter(pk=case.pk).update(status="solved")
    # The customer's client keeps only In-Reply-To (our Message-ID) and rewrites the subject.
    answer = (
        "From: Ann Lee <ann.lee@example.com>\r\nTo: support@workbench.localhost\r\n"
        "Subject: thanks\r\nMessage-ID: <ann.thanks.3@mail.example.com>\r\n"
        f"In-Reply-To: {reply.external_id}\r\n\r\nGot it, thank you!\r\n"
    ).encode()

    result = ingest_email(answer)

    assert result.inbound.case.pk == case.pk
    assert Case.objects.get(pk=case.pk).status == "open"


# --- auto-replies and bounces --------------------------------------------------------------


def test_an_auto_reply_is_on_the_timeline_but_opens_no_case(email_queue):
    result = ingest_email(corpus("auto_reply.eml"))

    entry = entry_of(result)
    assert result.inbound.case is None
    assert entry.data["auto_reply"] is True
    assert entry.subject is None
    assert Case.objects.count() == 0


@pytest.mark.parametrize(
    "header",
    ["Auto-Submitted: auto-generated", "X-Autoreply: yes", "Precedence: junk",
     "Precedence: list"],
)  # fmt: skip
def test_each_auto_reply_marker_opens_no_case(email_queue, header):
    raw = corpus("plain.eml").replace(
        b"MIME-Version: 1.0", f"{header}\r\nMIME-Version: 1.0".encode()
    )

    assert ingest_email(raw).inbound.case is None
    assert Case.objects.count() == 0


def test_auto_submitted_no_is_a_person_writing(email_queue):
    raw = corpus("plain.eml").replace(
        b"MIME-Version: 1.0", b"Auto-Submitted: no\r\nMIME-Version: 1.0"
    )

    assert ingest_email(raw).inbound.case is not None


def test_a_bounce_marks_our_outbound_message_failed_and_stores_nothing_else(email_queue, agent):
    case = ingest_email(corpus("plain.eml")).inbound.case
    Identity.objects.create(customer=case.customer, channel="email", handle="nobody@example.net")
    reply = send_reply(case=case, author=agent, channel="email", body="Here is your label.")
    Interaction.objects.filter(pk=reply.pk).update(
        status="sent", external_id="<case-1.0f0e0d0c0b0a09080706050403020100@workbench.localhost>"
    )
    counts = (Interaction.objects.count(), Customer.objects.count(), Case.objects.count())

    result = ingest_email(corpus("bounce.eml"))

    reply.refresh_from_db()
    assert result.is_bounce and result.bounced.pk == reply.pk
    assert reply.status == "failed"
    assert reply.data["delivery_error"] == (
        "550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown"
    )
    assert reply.data["bounce"] == {"recipient": "nobody@example.net", "status": "5.1.1"}
    assert (Interaction.objects.count(), Customer.objects.count(), Case.objects.count()) == counts
    assert not Identity.objects.filter(handle__startswith="mailer-daemon").exists()


def test_a_bounce_about_no_mail_of_ours_stores_nothing(email_queue):
    result = ingest_email(corpus("bounce.eml"))

    assert result.is_bounce and result.bounced is None
    assert Interaction.objects.count() == 0
    assert Customer.objects.count() == 0


# --- refusals ------------------------------------------------------------------------------


def test_a_mail_without_a_sender_is_refused_and_nothing_is_stored(email_queue, settings):
    raw = corpus("attachments.eml").replace(b"From: Carla Mendes <carla@example.pt>\r\n", b"")

    with pytest.raises(MailRefused, match="no sender address"):
        ingest_email(raw)
    assert Interaction.objects.count() == 0
    assert stored_files(settings) == []


def test_an_empty_mail_is_refused_and_nothing_is_stored(email_queue):
    raw = b"From: ann@example.com\r\nSubject: hi\r\nMessage-ID: <e@x.com>\r\n\r\n"

    with pytest.raises(ValidationError) as refused:
        ingest_email(raw)
    assert refused.value.message_dict == {"body": ["the message is empty"]}
    assert Interaction.objects.count() == 0
    assert Customer.objects.count() == 0


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"just some text, no headers at all"])
def test_bytes_that_are_not_a_mail_are_refused(db, raw):
    with pytest.raises((MailRefused, ValidationError)):
        ingest_email(raw)
    assert Interaction.objects.count() == 0


def test_the_case_page_shows_the_trimmed_reply_and_the_attachments(email_queue, client_for, agent):
    entry = entry_of(ingest_email(corpus("attachments.eml")))
    ingest_email(corpus("plain.eml"))
    reply = entry_of(ingest_email(corpus("reply_in_reply_to.eml")))
    client = client_for(agent)

    carla_page = client.get(f"/cases/{entry.subject.pk}/").text
    ann_page = client.get(f"/cases/{reply.subject.pk}/").text

    assert f'href="/email/attachments/{entry.pk}/0/"' in carla_page
    assert "statement.pdf not stored: the content is not application/pdf" in carla_page
    assert "Show the whole message (quoted text)" in ann_page
    assert "&gt; My order 4411 was due last Thursday." in ann_page


def test_a_delayed_delivery_report_changes_nothing_and_stores_nothing(email_queue):
    raw = corpus("bounce.eml").replace(b"Action: failed", b"Action: delayed")

    result = ingest_email(raw)

    assert result.is_bounce and result.bounced is None
    assert not Interaction.objects.exists()
    assert not Customer.objects.exists()


def test_a_plain_text_bounce_from_the_mail_system_opens_no_case(email_queue):
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: support@workbench.localhost\r\n"
        b"Subject: failure notice\r\nMessage-ID: <qmail.1@mx.example.net>\r\n\r\n"
        b"Hi. This is the qmail-send program. I could not deliver your message.\r\n"
    )

    result = ingest_email(raw)

    assert result.inbound.case is None
    assert Case.objects.count() == 0


def test_parsed_headers_are_shared_between_mails_but_a_huge_one_is_not_kept():
    from workbench.connectors.email_inbound import CACHED_HEADER_CHARS, _parsed, parse_mail

    _parsed.cache_clear()
    mail = b"From: Ann <ann@example.com>\r\nSubject: %s\r\n\r\nHi\r\n"
    first = parse_mail(mail % b"Refund")
    second = parse_mail(mail % b"Refund")
    assert first["Subject"] == "Refund" and second["Subject"] is first["Subject"]
    assert second["From"].addresses[0].addr_spec == "ann@example.com"
    kept = _parsed.cache_info().currsize

    huge = b"x" * (CACHED_HEADER_CHARS + 1)
    message = parse_mail(mail % huge)
    assert message["Subject"] == huge.decode()
    assert message["Subject"] == huge.decode()  # read twice, parsed twice, never kept
    assert _parsed.cache_info().currsize == kept
