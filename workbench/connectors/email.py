"""The email connector, outbound: a queued reply becomes an EmailMessage with our Message-ID and
the thread's In-Reply-To/References, sent through Django's email backend (SMTP, an anymail
provider, or the local outbox when none is configured).
"""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMessage

from customers.models import Interaction


class EmailRefused(Exception):
    """The backend took the message but reported nothing sent."""


def build_email(interaction: Interaction) -> EmailMessage:
    """The message a reply stands for, from what cases.replies stored when it was queued."""
    data = interaction.data or {}
    to = str(data.get("to", "")).strip()
    if not to:
        raise ValueError(f"interaction {interaction.pk} names no recipient")
    headers = {"Message-ID": data["message_id"]} if data.get("message_id") else {}
    if data.get("in_reply_to"):
        headers["In-Reply-To"] = data["in_reply_to"]
    if data.get("references"):
        headers["References"] = data["references"]
    return EmailMessage(
        subject=str(data.get("subject") or interaction.title),
        body=interaction.body_text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers=headers,
    )


def send_email(interaction: Interaction, *, connection=None) -> dict:
    """Send the reply; return what to remember of it (the provider's id, when it gives one).

    `connection`: an open mail backend connection to reuse (a batch of campaign touches).
    """
    message = build_email(interaction)
    message.connection = connection
    if message.send(fail_silently=False) != 1:
        raise EmailRefused("the mail backend reported the message as not sent")
    facts = {}
    # anymail backends report the provider's own id, which its delivery webhooks quote.
    status = getattr(message, "anymail_status", None)
    provider_id = getattr(status, "message_id", None)
    if provider_id:
        facts["provider_message_id"] = str(provider_id)
    return facts
