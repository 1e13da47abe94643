"""Calling a provider's HTTP API for outbound messages: one request shape, failures sorted in two.

A provider that is DOWN (it cannot be reached, times out, answers 5xx or 429 "slow down") raises
`RetryableDeliveryError`: the message goes back to the queue and the delivery task tries again
later. A provider that REFUSES the message (any other 4xx) raises `DeliveryError` with the
provider's own words: trying again would be refused again, so the message is marked failed.
"""

from __future__ import annotations

import httpx
from django.conf import settings

MAX_ERROR_CHARS = 300


class DeliveryError(Exception):
    """The message cannot leave; the text says why (it is shown to agents)."""


class RetryableDeliveryError(DeliveryError):
    """The provider is down or busy: the message did not leave (as far as we know); try later."""


def post_json(*, provider: str, url: str, token: str, payload: dict) -> dict:
    """POST `payload` as JSON with a bearer token; return the provider's JSON answer.

    Raises RetryableDeliveryError (connect error, timeout, 5xx, 429) or DeliveryError (other
    4xx, or no token configured), both naming the provider and quoting its error text.
    """
    if not token:
        raise DeliveryError(f"{provider} is not configured: no access token in the settings")
    timeout = httpx.Timeout(
        settings.SOCIAL_HTTP_TIMEOUT_S, connect=min(5.0, settings.SOCIAL_HTTP_TIMEOUT_S)
    )
    try:
        response = httpx.post(
            url,
            json=payload,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
        )
    except httpx.TimeoutException as exc:
        raise RetryableDeliveryError(f"{provider} did not answer in time ({_name(exc)})") from exc
    except httpx.TransportError as exc:
        raise RetryableDeliveryError(f"{provider} is unreachable ({_name(exc)})") from exc
    status = response.status_code
    if status == 429 or status >= 500:
        raise RetryableDeliveryError(f"{provider} answered {status}: {error_text(response)}")
    if status >= 400:
        raise DeliveryError(f"{provider} refused the message ({status}): {error_text(response)}")
    try:
        answer = response.json()
    except ValueError:
        return {}  # accepted (2xx) but said nothing we can read: it left, without an id
    return answer if isinstance(answer, dict) else {}


def error_text(response: httpx.Response) -> str:
    """The provider's own explanation, from the error shapes Meta and X document, else the body.

    Meta: {"error": {"message", "code", …}}; X v2: {"title", "detail"} or {"errors": [{…}]}.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    text = ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            code = f" (code {error['code']})" if error.get("code") is not None else ""
            text = f"{error['message']}{code}"
        elif body.get("detail") or body.get("title"):
            text = str(body.get("detail") or body.get("title"))
        elif isinstance(body.get("errors"), list) and body["errors"]:
            first = body["errors"][0]
            if isinstance(first, dict):
                text = str(first.get("message") or first.get("detail") or first)
    if not text:
        text = response.text.strip() or response.reason_phrase or "no explanation"
    return text[:MAX_ERROR_CHARS]


def _name(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__
