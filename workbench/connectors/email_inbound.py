"""The email connector, inbound: RFC 5322 mail (raw bytes, or anymail's parsed message) becomes
an `InboundMessage` for the one inbound pipeline; bounces mark our outbound message failed.

What it decides is the mail format only: which part is the body, which parts are attachments
(stored in Django's default storage, size-limited, name sanitised, content type on an
allow-list), which thread the mail belongs to (root of References / In-Reply-To / Message-ID,
or our own case reference when a client dropped the headers), whether it is an auto-reply (no
case) or a delivery status notification (no interaction: the original outbound is marked
failed). Customers, cases and the timeline are `workbench.connectors.inbound`'s business.

Quoted-reply trimming happens here, once, at ingest: the full body is stored as `body_text`
(search, export and erase see everything) and the part the customer actually wrote, when it is
shorter, as `data["reply_text"]`, which the timeline shows first with the rest folded away.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.errors import HeaderParseError
from email.message import EmailMessage
from email.parser import BytesParser, HeaderParser
from email.policy import EmailPolicy
from email.utils import parsedate_to_datetime
from functools import lru_cache

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from cases.models import Case
from cases.replies import FAILED
from customers.models import Channel, Direction, Identity, Interaction
from workbench.connectors.inbound import (
    InboundMessage,
    InboundResult,
    is_stored,
    receive_inbound,
)
from workbench.connectors.receipts import publish_delivery_status

# One attachment, and one mail as a whole (the raw endpoint answers 413 above the latter).
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_MAIL_BYTES = 25 * 1024 * 1024
MAX_ATTACHMENTS = 20
MAX_NAME_CHARS = 100
MAX_REASON_CHARS = 500
# Where attachments live in the default storage; the download view serves nothing outside it.
ATTACHMENT_ROOT = "email-attachments"
# What a customer may send us: documents and pictures. No HTML, SVG, scripts, archives or
# executables: an agent opens these, and a mail is the oldest way in.
ALLOWED_CONTENT_TYPES = frozenset(
    {
        "application/pdf",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/heic",
        "text/plain",
        "text/csv",
        "text/calendar",
        "message/rfc822",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
    }
)
# Extensions refused whatever content type the sender declared.
REFUSED_EXTENSIONS = frozenset(
    {
        "exe",
        "com",
        "bat",
        "cmd",
        "scr",
        "msi",
        "js",
        "jse",
        "vbs",
        "ps1",
        "jar",
        "html",
        "htm",
        "svg",
        "hta",
        "lnk",
        "dll",
        "sh",
        "iso",
        "docm",
        "xlsm",
    }
)
# A declared type must agree with the first bytes where the format has a signature.
MAGIC_BYTES = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}
AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
MAIL_SYSTEM_SENDERS = frozenset({"mailer-daemon", "postmaster"})
# Our reference in reply subjects (cases.replies.reply_subject writes "[#12]"; "[#WB-12]" too).
SUBJECT_TOKEN = re.compile(r"\[#(?:WB-)?(\d{1,12})\]", re.IGNORECASE)
# Lines that start the quoted part of a reply, in the clients our customers use.
QUOTE_MARKERS = (
    re.compile(r"^\s*On\b.{0,300}\bwrote:\s*$", re.IGNORECASE | re.DOTALL),
    re.compile(r"^\s*Le\b.{0,300}\ba écrit\s*:\s*$", re.IGNORECASE | re.DOTALL),
    re.compile(r"^\s*Am\b.{0,300}\bschrieb\b.{0,100}:\s*$", re.IGNORECASE | re.DOTALL),
    re.compile(r"^\s*-{2,}\s*Original Message\s*-{2,}\s*$", re.IGNORECASE),
    re.compile(r"^\s*-{2,}\s*Forwarded message\s*-{2,}\s*$", re.IGNORECASE),
    re.compile(r"^_{10,}\s*$"),
)
OUTLOOK_HEADER = re.compile(r"^\s*\**From:\**\s", re.IGNORECASE)
OUTLOOK_NEXT = re.compile(r"^\s*\**(Sent|Date|To|Subject):\**\s", re.IGNORECASE)


class MailRefused(ValueError):
    """The bytes are not a mail we can take; the text says why (a 400 answer shows it)."""


@dataclass(frozen=True)
class BounceReport:
    """What a delivery status notification says about one message we sent."""

    original_message_id: str
    recipient: str
    status: str
    reason: str


@dataclass(frozen=True)
class EmailIngestResult:
    """`inbound` is the pipeline's result (None for a bounce); `bounced` the outbound message
    a bounce marked failed (None when it names no message of ours)."""

    inbound: InboundResult | None
    bounced: Interaction | None = None
    is_bounce: bool = False

    @property
    def created(self) -> bool:
        return bool(self.inbound and self.inbound.created)


# --- entry points ---------------------------------------------------------------------------


class _ParsedOnce(EmailPolicy):
    """`policy.default`, keeping what it parsed: the default policy parses a header again on
    every access, and one plain mail had its Content-Type parsed eleven times (the standard
    library's own `get_body` and `get_content` ask for it) and its Message-ID four. Parsed
    headers are immutable, so equal raw headers share one (a bounded cache, any thread). Only
    headers of ordinary length are kept: the sender writes the key, and 4,096 megabyte-long
    Subjects must not stay in memory."""

    def header_fetch_parse(self, name, value):
        if hasattr(value, "name") or not isinstance(value, str) or len(value) > CACHED_HEADER_CHARS:
            return super().header_fetch_parse(name, value)
        return _parsed(self, name, value)


@lru_cache(maxsize=4096)
def _parsed(mail_policy: EmailPolicy, name: str, value: str):
    return EmailPolicy.header_fetch_parse(mail_policy, name, value)


MAIL_POLICY = _ParsedOnce()
# RFC 5322's line limit, twice over (a folded References header can be longer; it is parsed, not
# kept).
CACHED_HEADER_CHARS = 2 * 998


def parse_mail(raw: bytes) -> EmailMessage:
    """The message in `raw` (RFC 5322 bytes); MailRefused when it is too big or not a mail."""
    if not raw or not raw.strip():
        raise MailRefused("the mail is empty")
    if len(raw) > MAX_MAIL_BYTES:
        raise MailRefused(f"the mail is larger than {MAX_MAIL_BYTES // (1024 * 1024)} MB")
    message = BytesParser(policy=MAIL_POLICY).parsebytes(raw)
    if not message.keys():
        raise MailRefused("the mail has no headers")
    return message


def ingest_email(raw: bytes) -> EmailIngestResult:
    """Take one raw mail from a mail server (endpoint, command, maildir); safe to call twice.

    Raises MailRefused or ValidationError (nothing stored) for what cannot be taken.
    """
    return ingest_message(parse_mail(raw), raw=raw)


def ingest_message(
    message: EmailMessage, *, raw: bytes | None = None, provider_id: str = ""
) -> EmailIngestResult:
    """Take one parsed mail (ours or anymail's `AnymailInboundMessage`, both `EmailMessage`).

    A delivery status notification marks the outbound message it reports on as failed (a
    "delayed" or "delivered" report changes nothing) and stores nothing else. Any other mail
    goes through `receive_inbound`: an auto-reply lands on the timeline without opening a case.
    Attachments are written to storage first and removed again when the pipeline refuses the
    mail or already had it, so a refusal leaves nothing.
    `provider_id` (an inbound webhook's event id) is the dedup key when the mail has no
    Message-ID; without either, a hash of the raw bytes is.
    """
    if is_delivery_report(message):
        # A DSN is about our mail, not from a customer: it never becomes a customer or a case.
        report = bounce_report(message)
        bounced = record_bounce(report) if report is not None else None
        return EmailIngestResult(inbound=None, bounced=bounced, is_bounce=True)
    sender_name, sender = _sender(message)
    external_id = _external_id(message, raw=raw, provider_id=provider_id)
    already = is_stored(Channel.EMAIL, external_id)
    stored: list[str] = []
    try:
        body_text, body_html, attachments, refused = _content(
            message, store_into=None if already else stored
        )
        data = _facts(message, sender=sender, attachments=attachments, refused=refused)
        reply_text = trim_quoted_reply(body_text)
        if reply_text and reply_text != body_text.strip():
            data["reply_text"] = reply_text
        is_auto = is_auto_reply(message)
        if is_auto:
            data["auto_reply"] = True
        inbound = InboundMessage(
            channel=Channel.EMAIL,
            handle=sender,
            display_name=sender_name,
            external_id=external_id,
            subject=_header(message, "Subject")[:300],
            body_text=body_text,
            body_html=body_html,
            thread_key=thread_key_for(message, sender=sender),
            occurred_at=_occurred_at(message),
            opens_case=not is_auto,
            data=data,
        )
        result = receive_inbound(inbound)
    except Exception:
        _delete(stored)
        raise
    if not result.created:
        _delete(stored)
    return EmailIngestResult(inbound=result)


# --- the parts of a mail ---------------------------------------------------------------------


def is_auto_reply(message: EmailMessage) -> bool:
    """RFC 3834 Auto-Submitted (anything but "no"), X-Autoreply/X-Autorespond, a Precedence
    of bulk, junk, list or auto_reply, an empty Return-Path or a MAILER-DAEMON/postmaster
    sender: written by a machine, opens no case."""
    auto_submitted = _header(message, "Auto-Submitted").lower()
    if auto_submitted and auto_submitted != "no":
        return True
    if _header(message, "X-Autoreply") or _header(message, "X-Autorespond"):
        return True
    if _header(message, "Precedence").lower() in AUTO_PRECEDENCE:
        return True
    # A bounce in no standard format still comes from the mail system, never from a person.
    return _header(message, "Return-Path") == "<>" or _from_mail_system(message)


def is_delivery_report(message: EmailMessage) -> bool:
    """A DSN: multipart/report; report-type=delivery-status (RFC 3464)."""
    return (
        message.get_content_type() == "multipart/report"
        and message.get_param("report-type", "").lower() == "delivery-status"
    )


def bounce_report(message: EmailMessage) -> BounceReport | None:
    """The failure a DSN (multipart/report; report-type=delivery-status) reports, else None.

    Only an Action of "failed" counts: "delayed" and "delivered" reports are not failures.
    """
    if not is_delivery_report(message):
        return None
    failure = None
    original_id = ""
    for part in message.iter_parts():
        kind = part.get_content_type()
        if kind == "message/delivery-status" and failure is None:
            failure = _failed_recipient(part)
        elif kind == "message/rfc822":
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if hasattr(inner, "get"):
                original_id = original_id or _message_id(inner.get("Message-ID", ""))
        elif kind == "text/rfc822-headers":
            headers = HeaderParser(policy=MAIL_POLICY).parsestr(_text_of(part))
            original_id = original_id or _message_id(headers.get("Message-ID", ""))
    if failure is None:
        # A report that is not (or not only) a failure: nothing to mark.
        return None
    recipient, status, reason = failure
    return BounceReport(
        original_message_id=original_id, recipient=recipient, status=status, reason=reason
    )


def thread_key_for(message: EmailMessage, *, sender: str = "") -> str:
    """The conversation a mail belongs to: the root of its References, else its In-Reply-To,
    else its own Message-ID. When it names one of our cases (our Message-ID in the headers,
    or the subject's "[#12]") and that case belongs to the sender, the case's thread wins, so
    a client that drops or rewrites headers still threads."""
    references = _message_ids(_header(message, "References"))
    in_reply_to = _message_ids(_header(message, "In-Reply-To"))
    own = _message_id(_header(message, "Message-ID"))
    ours = _case_thread(_our_case_ids(message, [*references, *in_reply_to]), sender)
    if ours:
        return ours
    return (references or in_reply_to or [own])[0] if (references or in_reply_to or own) else ""


def trim_quoted_reply(text: str) -> str:
    """What the customer wrote above the quote of earlier mail ("On … wrote:", an Outlook
    header block, "-----Original Message-----", trailing "> " lines). The full text when
    nothing is quoted, or when the quote is all there is (inline answers stay whole)."""
    lines = (text or "").replace("\r\n", "\n").split("\n")
    cut = len(lines)
    for index, line in enumerate(lines):
        joined = f"{line} {lines[index + 1]}" if index + 1 < len(lines) else line
        if any(marker.match(line) or marker.match(joined) for marker in QUOTE_MARKERS):
            # "On Mon … <ann@x.com>\nwrote:" wraps across two lines in Gmail.
            cut = index
            break
        if OUTLOOK_HEADER.match(line) and any(
            OUTLOOK_NEXT.match(following) for following in lines[index + 1 : index + 4]
        ):
            cut = index
            break
    head = lines[:cut]
    # Trailing quoted lines (">"), and the blank lines between them, belong to the quote.
    while head and (not head[-1].strip() or head[-1].lstrip().startswith(">")):
        head.pop()
    trimmed = "\n".join(head).strip()
    return trimmed or (text or "").strip()


def sanitise_filename(name: str) -> str:
    """A file name safe on any disk and in a Content-Disposition header: no directories,
    control characters or leading dots, at most MAX_NAME_CHARS, "attachment" when nothing
    is left."""
    name = unicodedata.normalize("NFKC", str(name or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"[^\w.\- ()+,@=]", "_", name).strip(" .")
    name = re.sub(r"\s+", " ", name)
    if len(name) > MAX_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        extension = extension[:10] if dot else ""
        keep = MAX_NAME_CHARS - len(extension) - (1 if extension else 0)
        name = f"{(stem or name)[:keep]}{'.' if extension else ''}{extension}"
    return name or "attachment"


# --- bounces ---------------------------------------------------------------------------------


def record_bounce(report: BounceReport) -> Interaction | None:
    """Mark the outbound message a bounce reports on failed, with the reason; None when it
    names none of ours. Safe to call twice (a failed message stays failed)."""
    if not report.original_message_id:
        return None
    return mark_delivery(
        message_id=report.original_message_id,
        status=FAILED,
        reason=report.reason,
        facts={"bounce": {"recipient": report.recipient, "status": report.status}},
    )


def mark_delivery(
    *,
    status: str,
    message_id: str = "",
    provider_message_id: str = "",
    reason: str = "",
    facts: dict | None = None,
) -> Interaction | None:
    """Record what a provider or a mail server says happened to one of our outbound emails.

    Found by our Message-ID (its `external_id`) or by the provider's id (`data
    ["provider_message_id"]`, stored when it was sent). A failure carries its reason in
    `data["delivery_error"]`. Statuses only move forward (sent → delivered → opened), and a
    failure is final: a late "opened" does not hide a bounce. The case's page hears of it
    after commit. None when no outbound email matches.
    """
    found = Interaction.objects.filter(channel=Channel.EMAIL, direction=Direction.OUTBOUND)
    if message_id:
        found = found.filter(external_id=message_id)
    elif provider_message_id:
        # Some providers quote our own Message-ID (without its brackets) as their id. Keep
        # `data__provider_message_id=` as is: it compiles to `data -> 'provider_message_id'`, the
        # expression the index outbound_by_provider_id is on (a `->>` lookup would miss it).
        bare = provider_message_id.strip("<>")
        found = found.filter(
            Q(data__provider_message_id=provider_message_id)
            | Q(external_id__in=(provider_message_id, f"<{bare}>"))
        )
    else:
        return None
    with transaction.atomic():
        interaction = found.select_for_update(of=("self",)).order_by("id").first()
        if interaction is None:
            return None
        data = dict(interaction.data or {})
        events = list(data.get("delivery_events") or [])[-19:]
        events.append({"status": status, "at": timezone.now().isoformat(), "reason": reason})
        data["delivery_events"] = events
        data.update(facts or {})
        if status == FAILED:
            data["delivery_error"] = (reason or "the mail could not be delivered")[
                :MAX_REASON_CHARS
            ]
        if _moves_forward(interaction.status, status):
            interaction.status = status
        interaction.data = data
        interaction.save(update_fields=["status", "data"])
        publish_delivery_status(interaction)
    return interaction


_STATUS_RANK = {"": 0, "queued": 1, "sending": 2, "sent": 3, "delivered": 4, "opened": 5}


def _moves_forward(current: str, new: str) -> bool:
    if current == FAILED:
        return False
    if new == FAILED:
        return True
    return _STATUS_RANK.get(new, 0) > _STATUS_RANK.get(current, 0)


def _failed_recipient(part: EmailMessage) -> tuple[str, str, str] | None:
    """(recipient, status code, reason) of the first failed recipient in a delivery-status
    part, else None."""
    blocks = part.get_payload()
    if not isinstance(blocks, list):
        blocks = []
    for block in blocks[1:] or blocks:
        action = str(block.get("Action", "")).strip().lower()
        if action != "failed":
            continue
        recipient = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
        recipient = recipient.split(";", 1)[-1].strip()
        status = str(block.get("Status", "")).strip()
        diagnostic = str(block.get("Diagnostic-Code", "")).split(";", 1)[-1].strip()
        reason = " ".join(diagnostic.split()) or f"delivery failed (status {status or 'unknown'})"
        return recipient, status, reason[:MAX_REASON_CHARS]
    return None


# --- content ---------------------------------------------------------------------------------


def _content(
    message: EmailMessage, *, store_into: list[str] | None
) -> tuple[str, str, list[dict], list[dict]]:
    """(text, html, stored attachments, refused attachments) of a mail.

    The text part wins for body_text; the HTML part is kept too (the pipeline sanitises it).
    A mail with only HTML gets its text from the HTML there. Each stored file's path is
    appended to `store_into` as soon as it is written (so the caller can remove them all if
    anything fails); None (the mail is a repeat) lists attachments without writing them.
    """
    try:
        text_part = message.get_body(preferencelist=("plain",))
        html_part = message.get_body(preferencelist=("html",))
    except (KeyError, LookupError):
        text_part = html_part = None
    is_bare_text = not message.is_multipart() and message.get_content_maintype() == "text"
    if text_part is None and html_part is None and is_bare_text:
        text_part = message
    body_text = _text_of(text_part) if text_part is not None else ""
    body_html = _text_of(html_part) if html_part is not None else ""
    bodies = {id(text_part), id(html_part)}
    attachments: list[dict] = []
    refused: list[dict] = []
    total = 0
    for part in _leaves(message):
        if id(part) in bodies:
            continue
        if part.get_content_maintype() == "text" and not part.get_filename():
            # A further unnamed text part (a signature block, a second body): not a file.
            continue
        name = sanitise_filename(part.get_filename() or _default_name(part))
        content_type = part.get_content_type()
        payload = _bytes_of(part)
        entry = {"name": name, "size": len(payload), "content_type": content_type}
        reason = _refusal(name, content_type, payload)
        if reason is None and len(attachments) >= MAX_ATTACHMENTS:
            reason = f"more than {MAX_ATTACHMENTS} attachments"
        if reason is None and total + len(payload) > MAX_MAIL_BYTES:
            reason = f"the attachments together exceed {MAX_MAIL_BYTES // (1024 * 1024)} MB"
        if reason is not None:
            refused.append({**entry, "reason": reason})
            continue
        total += len(payload)
        path = ""
        if store_into is not None:
            path = _store(name, payload)
            store_into.append(path)
        attachments.append({**entry, "path": path})
    return body_text, body_html, attachments, refused


def _leaves(part: EmailMessage):
    """Every non-container part, depth first; an attached mail (message/rfc822) is one leaf."""
    if part.get_content_maintype() == "multipart":
        for child in part.iter_parts():
            yield from _leaves(child)
    else:
        yield part


def _refusal(name: str, content_type: str, payload: bytes) -> str | None:
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension in REFUSED_EXTENSIONS:
        return f"files ending .{extension} are not accepted"
    if content_type not in ALLOWED_CONTENT_TYPES:
        return f"{content_type} files are not accepted"
    if len(payload) > MAX_ATTACHMENT_BYTES:
        return f"larger than {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB"
    if not payload:
        return "the file is empty"
    signatures = MAGIC_BYTES.get(content_type)
    if signatures and not payload.startswith(signatures):
        return f"the content is not {content_type}"
    return None


def _store(name: str, payload: bytes) -> str:
    today = timezone.now()
    path = f"{ATTACHMENT_ROOT}/{today:%Y/%m}/{uuid.uuid4().hex}/{name}"
    return default_storage.save(path, ContentFile(payload))


def erase_attachments(customer) -> int:
    """The privacy eraser for mail attachments: delete the files this customer's mails stored.

    Runs inside the erasure's transaction, before the timeline is blanked (the paths live in
    each interaction's `data`); the files go only once the erasure commits. Returns how many.
    """
    paths = [
        attachment["path"]
        for data in Interaction.objects.filter(
            customer=customer, data__has_key="attachments"
        ).values_list("data", flat=True)
        for attachment in data.get("attachments") or ()
        if isinstance(attachment, dict)
        and isinstance(attachment.get("path"), str)
        and attachment["path"].startswith(f"{ATTACHMENT_ROOT}/")
    ]
    if paths:
        transaction.on_commit(lambda: _delete(paths), robust=True)
    return len(paths)


def _delete(paths: list[str]) -> None:
    for path in paths:
        if path:
            default_storage.delete(path)


def _default_name(part: EmailMessage) -> str:
    if part.get_content_type() == "message/rfc822":
        return "forwarded-message.eml"
    return f"attachment.{part.get_content_subtype()}"


def _text_of(part: EmailMessage) -> str:
    """A text part's content as str, whatever (or however wrongly) its charset is declared."""
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, AssertionError, KeyError):
        raw = part.get_payload(decode=True) or b""
        content = raw.decode("latin-1", errors="replace")
    if isinstance(content, bytes):
        content = content.decode(part.get_content_charset() or "utf-8", errors="replace")
    # One line ending whatever the transfer encoding kept (8bit bodies arrive with CRLF).
    return str(content).replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")


def _bytes_of(part: EmailMessage) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else inner
        return inner.as_bytes() if hasattr(inner, "as_bytes") else b""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


# --- headers ---------------------------------------------------------------------------------


def _header(message: EmailMessage, name: str) -> str:
    """A header's decoded value ('' when absent or beyond repair), one line."""
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError, AttributeError, HeaderParseError):
        # The policy's parser gave up on it: fall back to the raw text, still one line.
        wanted = name.lower()
        value = next((raw for key, raw in message.raw_items() if key.lower() == wanted), "")
    return " ".join(str(value or "").split())


def _from_mail_system(message: EmailMessage) -> bool:
    try:
        local_part = _sender(message)[1].split("@", 1)[0]
    except MailRefused:
        return False
    return local_part in MAIL_SYSTEM_SENDERS


def _sender(message: EmailMessage) -> tuple[str, str]:
    """(display name, address) of the From header; MailRefused when there is none."""
    try:
        header = message["From"]
        addresses = getattr(header, "addresses", ()) if header is not None else ()
    except (ValueError, IndexError, TypeError, AttributeError, HeaderParseError):
        addresses = ()
    for address in addresses:
        if address.addr_spec and "@" in address.addr_spec:
            return address.display_name or "", address.addr_spec.strip().lower()
    raise MailRefused("the mail has no sender address (From)")


def _facts(
    message: EmailMessage, *, sender: str, attachments: list[dict], refused: list[dict]
) -> dict:
    data = {"from": sender, "to": _header(message, "To")[:500]}
    for key, name in (("cc", "Cc"), ("reply_to", "Reply-To"), ("date", "Date")):
        value = _header(message, name)
        if value:
            data[key] = value[:500]
    message_id = _message_id(_header(message, "Message-ID"))
    if message_id:
        data["message_id"] = message_id
    references = _message_ids(_header(message, "References"))
    if references:
        data["references"] = " ".join(references[-10:])
    in_reply_to = _message_ids(_header(message, "In-Reply-To"))
    if in_reply_to:
        data["in_reply_to"] = in_reply_to[0]
    if attachments:
        data["attachments"] = attachments
    if refused:
        data["refused_attachments"] = refused
    return data


def _external_id(message: EmailMessage, *, raw: bytes | None, provider_id: str) -> str:
    message_id = _message_id(_header(message, "Message-ID"))
    if message_id and len(message_id) <= 255:
        return message_id
    source = message_id or provider_id
    if source:
        return f"<sha256-{hashlib.sha256(source.encode()).hexdigest()}@long-message-id>"
    digest = hashlib.sha256(raw if raw is not None else message.as_bytes()).hexdigest()
    return f"<sha256-{digest}@no-message-id>"


def _occurred_at(message: EmailMessage):
    """The mail's Date, unless it is missing, unreadable or in the future (then: now)."""
    now = timezone.now()
    try:
        sent_at = parsedate_to_datetime(_header(message, "Date"))
    except (TypeError, ValueError, IndexError):
        return now
    if sent_at is None or sent_at.tzinfo is None or sent_at > now + timedelta(minutes=5):
        return now
    return sent_at


_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")


def _message_ids(value: str) -> list[str]:
    return _MESSAGE_ID.findall(value or "")


def _message_id(value: str) -> str:
    found = _message_ids(str(value or ""))
    return found[0] if found else ""


def _our_case_ids(message: EmailMessage, ids: list[str]) -> list[int]:
    """Case ids our own references name: our Message-IDs (<case-12.…@our domain>, newest
    first) then the subject's "[#12]"."""
    domain = re.escape(settings.WORKBENCH_MAIL_DOMAIN)
    ours = re.compile(rf"^<case-(\d{{1,12}})\.[0-9a-f]+@{domain}>$", re.IGNORECASE)
    found = [int(m[1]) for m in (ours.match(i) for i in reversed(ids)) if m]
    found += [int(m) for m in SUBJECT_TOKEN.findall(_header(message, "Subject"))]
    return found


def _case_thread(case_ids: list[int], sender: str) -> str:
    """The thread key of the first named case that belongs to the sender, else ''.

    The sender check keeps a stranger who types "[#12]" out of someone else's case.
    """
    for case_id in dict.fromkeys(case_ids):
        case = Case.objects.filter(pk=case_id).only("id", "customer_id", "thread_key").first()
        if case is None or not case.thread_key:
            continue
        owns = Identity.objects.filter(
            customer_id=case.customer_id, channel=Channel.EMAIL, handle=sender
        ).exists()
        if owns:
            return case.thread_key
    return ""
