"""The local outbox: an email backend that stores each message in a table, and the page that
lists them. It is the backend when no mail provider is configured (see settings, "Email"), so a
demo shows what Workbench sent and tests read real mail instead of mocks.
"""

from __future__ import annotations

import logging

from django import forms
from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage
from django.db import DatabaseError
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from workbench.models import OutboxEmail

logger = logging.getLogger(__name__)

PAGE_SIZE = 25
OUTBOX = "workbench/outbox.html"
# The MIME plumbing says nothing a reader of the outbox needs.
_UNSHOWN_HEADERS = {"content-type", "content-transfer-encoding", "mime-version"}


class OutboxBackend(BaseEmailBackend):
    """Store each message in `workbench.OutboxEmail` (headers as built for the wire).

    Used as Django sends one message (`send_mail`, `EmailMessage.send()`), each message is
    stored at once. Opened explicitly for a batch (`open()` … `close()`, as campaign delivery
    does), it stores the batch's messages in one INSERT when the connection closes, the way an
    SMTP server takes a batch over one connection: `close()` then raises when they could not
    be stored (unless `fail_silently`), and nothing of the batch is stored, so the caller can
    treat the batch as not sent (`stores_on_close`).
    """

    stores_on_close = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._batch: list[OutboxEmail] | None = None

    def open(self) -> bool:
        if self._batch is not None:
            return False
        self._batch = []
        return True

    def close(self) -> None:
        batch, self._batch = self._batch, None
        if not batch:
            return
        try:
            OutboxEmail.objects.bulk_create(batch)
        except DatabaseError:
            if not self.fail_silently:
                raise
            logger.exception("could not store %s messages in the outbox", len(batch))

    def send_messages(self, email_messages: list[EmailMessage]) -> int:
        sent = 0
        for message in email_messages:
            if not message.recipients():
                continue
            row = outbox_row(message)
            if self._batch is not None:
                self._batch.append(row)
                sent += 1
                continue
            try:
                row.save()
            except DatabaseError:
                if not self.fail_silently:
                    raise
                logger.exception("could not store a message in the outbox")
                continue
            sent += 1
        return sent


def store_in_outbox(message: EmailMessage) -> OutboxEmail:
    """One row for one message, stored now."""
    row = outbox_row(message)
    row.save()
    return row


def outbox_row(message: EmailMessage) -> OutboxEmail:
    """The (unsaved) row for one message, with the headers the wire would carry (Message-ID,
    Date…)."""
    mime = message.message()
    headers = {
        name: str(value) for name, value in mime.items() if name.lower() not in _UNSHOWN_HEADERS
    }
    return OutboxEmail(
        to=", ".join(message.to),
        from_email=message.from_email,
        subject=str(mime.get("Subject", message.subject)),
        body=message.body,
        headers=headers,
        message_id=str(mime.get("Message-ID", "")),
        sent_at=timezone.now(),
    )


class OutboxPageForm(forms.Form):
    before = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)


@require_GET
def outbox(request):
    """The mail Workbench sent while no provider is configured, newest first, 25 a page.

    Any signed-in user with a role reads it (the access middleware refuses everyone else); it
    holds only what the outbox backend stored, so with a real provider it stays empty.
    """
    form = OutboxPageForm(request.GET)
    before = form.cleaned_data["before"] if form.is_valid() else None
    rows = OutboxEmail.objects.order_by("-id")
    if before is not None:
        rows = rows.filter(id__lt=before)
    rows = list(rows[: PAGE_SIZE + 1])
    next_url = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        next_url = f"{reverse('outbox')}?before={rows[-1].pk}"
    context = {
        "mails": rows,
        "next_url": next_url,
        "is_later_page": before is not None,
        "form": form,
        "is_outbox_backend": _is_outbox_backend(),
    }
    return render(request, OUTBOX, context, status=200 if form.is_valid() else 400)


def _is_outbox_backend() -> bool:
    return f"{__name__}.{OutboxBackend.__name__}" == settings.EMAIL_BACKEND
