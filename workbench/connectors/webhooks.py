"""What every social webhook shares: signature checks, refusals in one shape, a batch stored whole.

One webhook request may carry several messages. They are all parsed and validated before the
first is stored: if one is malformed the whole request is refused with 400 and nothing is stored,
so a provider that sends the same request again never finds it half-done in a way we chose.
Each message is then stored in its own transaction (the pipeline's durable one); should the
process die between two of them, the provider redelivers the request (it got no 200) and
deduplication on the provider's message id stores only what is missing.

A provider's body may be larger than Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), which stays
as it is for every form of ours: each provider door reads its body with `read_body_within`, up to
its own limit, and answers 413 above it (`too_large`) instead of Django's generic 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse

from customers.identity import normalise_handle
from workbench.connectors import receipts
from workbench.connectors.inbound import InboundMessage, receive_inbound, validate_inbound

# Meta and X each post a batch of events per request; 5 MB leaves room for the largest batch
# while keeping one request's memory bounded.
MAX_BODY_BYTES = 5 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024


class MalformedPayload(ValueError):
    """The request is not what the provider documents; the text says where and why (400)."""


@dataclass(frozen=True)
class Receipt:
    """A provider's word on one of our outbound messages: by its id, or "all up to" a time."""

    channel: str
    status: str
    external_id: str = ""
    recipient: str = ""
    up_to: datetime | None = None
    error: str = ""
    at: datetime | None = None


@dataclass
class Batch:
    """What one webhook request carried, parsed: inbound messages and receipts."""

    messages: list[InboundMessage] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    ignored: int = 0


def refuse(status: int, reason: str) -> JsonResponse:
    return JsonResponse({"error": reason}, status=status)


def too_large(limit: int) -> JsonResponse:
    return refuse(413, f"the body is larger than {limit:,} bytes")


def read_body_within(request: HttpRequest, limit: int) -> bytes | None:
    """The request's raw body, or None when it is over `limit` bytes (read no further).

    Read here rather than through `request.body`, whose check is the site-wide
    DATA_UPLOAD_MAX_MEMORY_SIZE. The bytes are kept on the request, so `request.body` (and
    `request.POST` for a url-encoded form) give them afterwards without that check.
    """
    if hasattr(request, "_body"):
        return request._body if len(request._body) <= limit else None
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    chunks, size = [], 0
    while chunk := request.read(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Django's own cache of the body: request.body returns it as it is
    request._stream = io.BytesIO(body)
    return body


def signature_refusal(
    *, body: bytes, header: str | None, secret: str, encoding: str
) -> JsonResponse | None:
    """None when `header` is "sha256=<HMAC-SHA256 of the raw body with secret>", else the refusal.

    Missing → 401, wrong → 403; `encoding` is how the provider writes the digest ("hex" for
    Meta, "base64" for X). No secret configured → 503: we cannot tell real requests from forged.
    """
    if not secret:
        return refuse(503, "this webhook is not configured (no secret in the settings)")
    if not header:
        return refuse(401, "the request is not signed")
    expected = "sha256=" + digest(secret, body, encoding)
    if not hmac.compare_digest(expected.encode(), header.strip().encode()):
        return refuse(403, "the signature does not match the body")
    return None


def digest(secret: str, message: bytes, encoding: str) -> str:
    mac = hmac.new(secret.encode(), message, hashlib.sha256)
    return mac.hexdigest() if encoding == "hex" else base64.b64encode(mac.digest()).decode()


def load_json(body: bytes) -> dict:
    """The request's JSON object, or MalformedPayload saying what is wrong with it."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayload(f"the body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedPayload("the body is not a JSON object")
    return payload


def handle_of(channel: str, raw: str, where: str) -> str:
    """The sender's handle, normalised, or MalformedPayload naming the field."""
    try:
        return normalise_handle(channel, raw)
    except ValidationError as exc:
        raise MalformedPayload(f"{where}: {'; '.join(exc.messages)}") from None


def from_epoch(value, where: str, *, millis: bool) -> datetime:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MalformedPayload(f"{where} is not a timestamp: {value!r}") from None
    try:
        return datetime.fromtimestamp(number / 1000 if millis else number, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedPayload(f"{where} is out of range: {value!r}") from None


def store_batch(batch: Batch) -> dict:
    """Store every message of the batch, or none when one is refused; then apply its receipts.

    Raises MalformedPayload (nothing stored) when the pipeline would refuse any message.
    Returns counts for the provider's 200 answer.
    """
    for number, message in enumerate(batch.messages, start=1):
        try:
            validate_inbound(message)
        except ValidationError as exc:
            reason = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.message_dict.items())
            raise MalformedPayload(f"message {number} ({message.external_id}): {reason}") from None
    results = [receive_inbound(message) for message in batch.messages]
    changed = 0
    for receipt in batch.receipts:
        if receipt.up_to is not None:
            changed += receipts.record_receipts_up_to(
                channel=receipt.channel,
                recipient=receipt.recipient,
                status=receipt.status,
                up_to=receipt.up_to,
            )
        else:
            changed += receipts.record_receipt(
                channel=receipt.channel,
                external_id=receipt.external_id,
                status=receipt.status,
                error=receipt.error,
                at=receipt.at,
            )
    return {
        "stored": sum(result.created for result in results),
        "duplicates": sum(not result.created for result in results),
        "receipts": changed,
        "ignored": batch.ignored,
    }
