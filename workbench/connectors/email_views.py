"""Email doors: the raw RFC 5322 endpoint, the anymail provider webhooks, attachment downloads.

Each door checks who is calling (a shared secret, the provider's signature or basic auth),
hands the mail to `email_inbound`, and answers: 401 with no credentials, 403 with wrong ones
(or a provider not configured to be checked at all), 400 with the reason for a malformed
mail, 413 for one that is too large. Refusals store nothing.

A provider's post is larger than Django's DATA_UPLOAD_MAX_MEMORY_SIZE whenever the mail has
attachments of a few MB; that setting stays as it is for every form of ours. These doors read
the body themselves up to MAX_WEBHOOK_BYTES (the raw door's MAX_MAIL_BYTES plus the encoding's
overhead) and parse a multipart form from it, so anymail finds `request.body`, `request.POST` and
`request.FILES` ready and Django's site-wide check never runs.

The anymail views are used for what they are good at, verifying and parsing each provider's
format (`run_validators`, `parse_events`); their events are handed to our services here
directly rather than through anymail's signals, so a reader can follow the call.
"""

from __future__ import annotations

import hmac
import logging
from email.parser import BytesParser
from email.policy import HTTP

from anymail.exceptions import AnymailError, AnymailWebhookValidationFailure
from anymail.signals import EventType
from anymail.webhooks.mailgun import MailgunInboundWebhookView, MailgunTrackingWebhookView
from anymail.webhooks.postmark import PostmarkInboundWebhookView, PostmarkTrackingWebhookView
from anymail.webhooks.sendgrid import SendGridInboundWebhookView, SendGridTrackingWebhookView
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import (
    BadRequest,
    ImproperlyConfigured,
    PermissionDenied,
    RequestDataTooBig,
    ValidationError,
)
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import FileResponse, Http404, HttpResponse, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import get_object_or_404
from django.urls import path, re_path
from django.utils.datastructures import MultiValueDict
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cases.replies import FAILED, SENT
from customers.models import Channel, Interaction
from workbench import roles
from workbench.connectors import email_inbound
from workbench.connectors.email_inbound import ATTACHMENT_ROOT, MAX_MAIL_BYTES, MailRefused
from workbench.connectors.webhooks import read_body_within

logger = logging.getLogger(__name__)

# Provider payloads carry attachments base64-encoded or as form files: allow for the overhead.
MAX_WEBHOOK_BYTES = MAX_MAIL_BYTES * 4 // 3 + 1024 * 1024
WEBHOOK_TOO_LARGE = (
    f"The payload is larger than {MAX_WEBHOOK_BYTES:,} bytes "
    f"(a mail of up to {MAX_MAIL_BYTES // (1024 * 1024)} MB, encoded)."
)
# anymail's normalised tracking events → our delivery statuses (None: history only).
TRACKING_STATUS = {
    EventType.QUEUED: SENT,
    EventType.SENT: SENT,
    EventType.DELIVERED: "delivered",
    EventType.OPENED: "opened",
    EventType.CLICKED: "opened",
    EventType.BOUNCED: FAILED,
    EventType.REJECTED: FAILED,
    EventType.FAILED: FAILED,
}


# --- the raw endpoint ------------------------------------------------------------------------


@csrf_exempt
@login_not_required
@require_POST
def raw_inbound(request):
    """POST /inbound/email/raw/: one RFC 5322 mail as the body, `Authorization: Bearer <secret>`
    (settings.INBOUND_EMAIL_SECRET). 201 stored, 200 a repeat or a bounce, 202 a bounce about
    no mail of ours."""
    secret = getattr(settings, "INBOUND_EMAIL_SECRET", "") or ""
    given = request.headers.get("Authorization", "")
    if not given:
        response = _refuse(401, "Send the shared secret: Authorization: Bearer <secret>.")
        response["WWW-Authenticate"] = 'Bearer realm="inbound-email"'
        return response
    scheme, _, token = given.partition(" ")
    if not secret:
        return _refuse(403, "Raw inbound email is not configured (INBOUND_EMAIL_SECRET).")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), secret.encode()
    ):
        return _refuse(403, "Wrong shared secret.")
    raw = read_body_within(request, MAX_MAIL_BYTES)
    if raw is None:
        return _refuse(413, f"The mail is larger than {MAX_MAIL_BYTES // (1024 * 1024)} MB.")
    try:
        result = email_inbound.ingest_email(raw)
    except (MailRefused, ValidationError) as exc:
        return _refuse(400, _reason(exc))
    return _answer(result)


# --- anymail providers -----------------------------------------------------------------------


def _provider_door(view_class, *, is_inbound: bool):
    """A door for one anymail webhook view: its checks and parser, then our service."""

    @csrf_exempt
    @login_not_required
    @require_http_methods(["POST", "HEAD"])
    def door(request, *args, **kwargs):
        if request.method == "HEAD":
            # Some providers check a webhook URL exists with HEAD when it is configured.
            return HttpResponse()
        length = _content_length(request)
        if length is not None and length > MAX_WEBHOOK_BYTES:
            return _refuse(413, WEBHOOK_TOO_LARGE)
        try:
            view = view_class()
        except (ImproperlyConfigured, AnymailError) as exc:
            logger.warning("%s webhook is not configured: %s", view_class.__name__, exc)
            return _refuse(403, f"This webhook is not configured: {exc}")
        if view.warn_if_no_basic_auth and not view.basic_auth:
            # Basic auth is this provider's only check: without a secret, anyone could post.
            return _refuse(403, "This webhook is not configured: set ANYMAIL_WEBHOOK_SECRET.")
        if read_body_within(request, MAX_WEBHOOK_BYTES) is None:
            return _refuse(413, WEBHOOK_TOO_LARGE)
        try:
            _parse_multipart_form(request)
        except ValueError as exc:
            return _refuse(400, f"Malformed request: {exc}")
        if _lacks_credentials(request, view):
            response = _refuse(401, "The request carries no credentials or signature.")
            if view.basic_auth:
                response["WWW-Authenticate"] = 'Basic realm="anymail"'
            return response
        try:
            view.run_validators(request)
        except AnymailWebhookValidationFailure as exc:
            return _refuse(403, str(exc))
        except (MultiPartParserError, BadRequest, ValueError) as exc:
            return _refuse(400, f"Malformed request: {exc}")
        except RequestDataTooBig:
            return _refuse(413, WEBHOOK_TOO_LARGE)
        try:
            events = view.parse_events(request)
        except RequestDataTooBig:
            return _refuse(413, WEBHOOK_TOO_LARGE)
        except (AnymailError, MultiPartParserError, BadRequest, KeyError, ValueError) as exc:
            return _refuse(400, f"Malformed {view.esp_name} payload: {exc}")
        if is_inbound:
            return _take_inbound(events)
        _take_tracking(events)
        return HttpResponse("ok")

    door.__name__ = f"{view_class.__name__}_door"
    return door


def _take_inbound(events):
    if len(events) != 1:
        return _refuse(400, "Expected one inbound message per request.")
    event = events[0]
    try:
        result = email_inbound.ingest_message(event.message, provider_id=event.event_id or "")
    except (MailRefused, ValidationError) as exc:
        return _refuse(400, _reason(exc))
    return _answer(result)


def _take_tracking(events) -> None:
    """Record each event on the outbound email it names; events about mail we never sent
    (or that carry no id) are acknowledged and dropped, or the provider retries forever."""
    for event in events:
        status = TRACKING_STATUS.get(event.event_type)
        provider_id = str(event.message_id or "").strip()
        if not provider_id:
            continue
        reason = " ".join(
            str(part)
            for part in (event.reject_reason, event.description, event.mta_response)
            if part
        )
        email_inbound.mark_delivery(
            status=status or str(event.event_type),
            provider_message_id=provider_id,
            reason=reason or (f"the provider reported it {event.event_type}" if status else ""),
        )


def _lacks_credentials(request, view) -> bool:
    if view.basic_auth and "Authorization" not in request.headers:
        return True
    if isinstance(view, MailgunInboundWebhookView | MailgunTrackingWebhookView):
        if request.content_type == "application/json":
            return b'"signature"' not in request.body
        return "signature" not in request.POST
    if getattr(view, "webhook_verification_key", None) is not None:
        return "X-Twilio-Email-Event-Webhook-Signature" not in request.headers
    return False


mailgun_inbound = _provider_door(MailgunInboundWebhookView, is_inbound=True)
mailgun_tracking = _provider_door(MailgunTrackingWebhookView, is_inbound=False)
sendgrid_inbound = _provider_door(SendGridInboundWebhookView, is_inbound=True)
sendgrid_tracking = _provider_door(SendGridTrackingWebhookView, is_inbound=False)
postmark_inbound = _provider_door(PostmarkInboundWebhookView, is_inbound=True)
postmark_tracking = _provider_door(PostmarkTrackingWebhookView, is_inbound=False)


# --- attachments -----------------------------------------------------------------------------


@require_GET
def attachment(request, interaction_id: int, index: int):
    """GET /email/attachments/<interaction>/<n>/: one stored attachment of an email, as a
    download, to whoever may read the customer (and, on a private entry, private notes)."""
    if not roles.can_read_customers(request.user):
        raise PermissionDenied("You may not read customers.")
    interaction = get_object_or_404(
        Interaction.objects.select_related("customer"), pk=interaction_id, channel=Channel.EMAIL
    )
    if interaction.is_private and not roles.can_read_private_notes(request.user):
        raise Http404("No such attachment.")
    if interaction.customer.erased_at is not None:
        raise Http404("No such attachment.")
    items = (interaction.data or {}).get("attachments") or []
    if not isinstance(items, list) or not 0 <= index < len(items):
        raise Http404("No such attachment.")
    item = items[index] if isinstance(items[index], dict) else {}
    stored_at = str(item.get("path") or "")
    if not stored_at.startswith(f"{ATTACHMENT_ROOT}/") or ".." in stored_at:
        raise Http404("No such attachment.")
    try:
        handle = default_storage.open(stored_at, "rb")
    except (FileNotFoundError, OSError):
        raise Http404("The file is gone.") from None
    # Always a download, never rendered in our origin; the type is from the allow-list.
    return FileResponse(
        handle,
        as_attachment=True,
        filename=str(item.get("name") or "attachment"),
        content_type=str(item.get("content_type") or "application/octet-stream"),
    )


# --- answers ---------------------------------------------------------------------------------


def _answer(result: email_inbound.EmailIngestResult) -> JsonResponse:
    if result.is_bounce:
        bounced = result.bounced
        body = {"status": "bounce", "interaction_id": bounced.pk if bounced else None}
        return JsonResponse(body, status=200 if bounced else 202)
    inbound = result.inbound
    data = inbound.interaction.data or {}
    body = {
        "status": "created" if inbound.created else "duplicate",
        "interaction_id": inbound.interaction.pk,
        "case_id": inbound.case.pk if inbound.case else None,
        "refused_attachments": data.get("refused_attachments", []),
    }
    return JsonResponse(body, status=201 if inbound.created else 200)


def _refuse(status: int, reason: str) -> JsonResponse:
    return JsonResponse({"error": reason}, status=status)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return " ".join(exc.messages)
    return str(exc)


def _content_length(request) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


def _parse_multipart_form(request) -> None:
    """Fill `request.POST` and `request.FILES` from a multipart/form-data body already read.

    Django's own parser would apply DATA_UPLOAD_MAX_MEMORY_SIZE to the form's text fields, and a
    provider's raw-MIME field (Mailgun's body-mime, SendGrid's email) holds the whole mail; the
    body is bounded by MAX_WEBHOOK_BYTES already. ValueError for a form that is not one.
    """
    if request.content_type != "multipart/form-data":
        return
    boundary = request.content_params.get("boundary")
    if not boundary:
        raise ValueError("the multipart form has no boundary")
    head = f'Content-Type: multipart/form-data; boundary="{boundary}"\r\n\r\n'.encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    if not message.is_multipart():
        raise ValueError("the multipart form has no parts")
    post = QueryDict(mutable=True, encoding=request.encoding)
    files = MultiValueDict()
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        content = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files.appendlist(
                name, SimpleUploadedFile(filename, content, content_type=part.get_content_type())
            )
        else:
            charset = part.get_content_charset() or request.encoding or "utf-8"
            try:
                post.appendlist(name, content.decode(charset, errors="replace"))
            except LookupError:
                post.appendlist(name, content.decode("utf-8", errors="replace"))
    post._mutable = False
    request._post, request._files = post, files


urlpatterns = [
    path("raw/", raw_inbound, name="inbound-email-raw"),
    re_path(r"^mailgun/inbound(?:_mime)?/$", mailgun_inbound, name="inbound-email-mailgun"),
    path("mailgun/tracking/", mailgun_tracking, name="inbound-email-mailgun-tracking"),
    path("sendgrid/inbound/", sendgrid_inbound, name="inbound-email-sendgrid"),
    path("sendgrid/tracking/", sendgrid_tracking, name="inbound-email-sendgrid-tracking"),
    path("postmark/inbound/", postmark_inbound, name="inbound-email-postmark"),
    path("postmark/tracking/", postmark_tracking, name="inbound-email-postmark-tracking"),
]
