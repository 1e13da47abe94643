"""The door for Meta's webhooks (Messenger, Instagram, WhatsApp): /inbound/meta/.

GET is Meta's subscription handshake (hub.mode=subscribe, hub.verify_token, hub.challenge);
POST carries events, signed in X-Hub-Signature-256 with the app secret over the raw body.
Unsigned → 401, badly signed → 403, malformed → 400 with the reason, a body over
webhooks.MAX_BODY_BYTES → 413; nothing is stored then.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from workbench.connectors import meta
from workbench.connectors.webhooks import (
    MAX_BODY_BYTES,
    MalformedPayload,
    load_json,
    read_body_within,
    refuse,
    signature_refusal,
    store_batch,
    too_large,
)


# Called by the provider, not a signed-in user: the signature is the authentication.
@login_not_required
@csrf_exempt
@require_http_methods(["GET", "POST"])
def webhook(request):
    if request.method == "GET":
        return _handshake(request)
    body = read_body_within(request, MAX_BODY_BYTES)
    if body is None:
        return too_large(MAX_BODY_BYTES)
    refusal = signature_refusal(
        body=body,
        header=request.headers.get("X-Hub-Signature-256"),
        secret=settings.META_APP_SECRET,
        encoding="hex",
    )
    if refusal is not None:
        return refusal
    try:
        counts = store_batch(meta.parse_webhook(load_json(body)))
    except MalformedPayload as exc:
        return refuse(400, str(exc))
    except ValidationError as exc:
        # Not the payload's fault (e.g. no queue to route to): Meta retries a non-2xx later.
        return refuse(503, "; ".join(exc.messages))
    return JsonResponse(counts)


def _handshake(request):
    mode = request.GET.get("hub.mode")
    token = request.GET.get("hub.verify_token", "")
    challenge = request.GET.get("hub.challenge", "")
    if mode != "subscribe" or not challenge:
        return refuse(400, "expected hub.mode=subscribe with a hub.challenge")
    if not settings.META_VERIFY_TOKEN:
        return refuse(503, "this webhook is not configured (no META_VERIFY_TOKEN)")
    if not hmac.compare_digest(token.encode(), settings.META_VERIFY_TOKEN.encode()):
        return refuse(403, "the verify token does not match")
    return HttpResponse(challenge, content_type="text/plain")
