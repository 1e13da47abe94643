"""The door for X's account activity webhooks: /inbound/x/.

GET is X's challenge-response check (crc_token → response_token); POST carries events, signed
in x-twitter-webhooks-signature (sha256=base64 HMAC of the raw body with the consumer secret).
Unsigned → 401, badly signed → 403, malformed → 400 with the reason, a body over
webhooks.MAX_BODY_BYTES → 413; nothing is stored then.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from workbench.connectors import x
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
        crc_token = request.GET.get("crc_token", "")
        if not crc_token:
            return refuse(400, "expected a crc_token")
        if not settings.X_CONSUMER_SECRET:
            return refuse(503, "this webhook is not configured (no X_CONSUMER_SECRET)")
        return JsonResponse({"response_token": x.crc_response_token(crc_token)})
    body = read_body_within(request, MAX_BODY_BYTES)
    if body is None:
        return too_large(MAX_BODY_BYTES)
    refusal = signature_refusal(
        body=body,
        header=request.headers.get("x-twitter-webhooks-signature"),
        secret=settings.X_CONSUMER_SECRET,
        encoding="base64",
    )
    if refusal is not None:
        return refusal
    try:
        counts = store_batch(x.parse_webhook(load_json(body)))
    except MalformedPayload as exc:
        return refuse(400, str(exc))
    except ValidationError as exc:
        return refuse(503, "; ".join(exc.messages))
    return JsonResponse(counts)
