"""`manage.py ingest_email`: a file, stdin or a maildir, from raw mail to timeline and case."""

import io
import shutil
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from cases.models import Case
from customers.models import Customer, Interaction
from tests.cases.test_queue_page import make_queue

CORPUS = Path(__file__).parent / "corpus" / "email"


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def email_queue(db):
    return make_queue("Email desk", channels=["email"])


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("ingest_email", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def messages() -> list[Interaction]:
    return list(Interaction.objects.filter(kind="message").order_by("id"))


def test_a_file_is_stored_on_the_timeline_and_opens_a_case(email_queue):
    out, _ = run(str(CORPUS / "plain.eml"))

    [entry] = messages()
    case = Case.objects.get()
    assert out == f"{CORPUS / 'plain.eml'}: stored as interaction {entry.pk}, case {case.pk}\n"
    assert entry.subject == case
    assert case.customer.identities.get().handle == "ann.lee@example.com"


def test_stdin_is_read_when_the_source_is_a_dash(email_queue, monkeypatch):
    raw = (CORPUS / "koi8r.eml").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))

    out, _ = run("-")

    [entry] = messages()
    assert out.startswith(f"stdin: stored as interaction {entry.pk}, case ")
    assert entry.title == "Не могу войти"  # noqa: RUF001
    assert Case.objects.get().subject == "Не могу войти"  # noqa: RUF001


def test_a_maildir_is_taken_once_however_often_it_is_run(email_queue, tmp_path):
    maildir = tmp_path / "Maildir"
    for folder in ("new", "cur", "tmp"):
        (maildir / folder).mkdir(parents=True)
    shutil.copy(CORPUS / "plain.eml", maildir / "new" / "1700000000.M1P1.mx")
    shutil.copy(CORPUS / "reply_in_reply_to.eml", maildir / "cur" / "1700000001.M2P1.mx:2,S")
    shutil.copy(CORPUS / "auto_reply.eml", maildir / "new" / "1700000002.M3P1.mx")

    first, _ = run(str(maildir))
    again, _ = run(str(maildir))

    assert len(messages()) == 3
    assert Case.objects.count() == 1  # the reply joined the thread, the auto-reply opened none
    assert first.count(": stored as interaction") == 3
    assert again.count(": already stored as interaction") == 3


def test_a_refused_mail_exits_1_with_the_reason_and_stores_nothing(email_queue, tmp_path):
    broken = tmp_path / "broken.eml"
    broken.write_bytes(b"Subject: no sender\r\nMessage-ID: <x@y.z>\r\n\r\nhello\r\n")

    with pytest.raises(CommandError, match="1 of 1 mail") as refused:
        run(str(broken))

    assert refused.value.returncode == 1
    assert not Interaction.objects.exists()
    assert not Customer.objects.exists()


def test_a_missing_path_or_a_directory_that_is_no_maildir_is_an_error(email_queue, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        run(str(tmp_path / "nope.eml"))
    with pytest.raises(CommandError, match="not a maildir"):
        run(str(tmp_path))
    assert not Interaction.objects.exists()
