"""The live-chat connector: the visitor's websocket, its signed token, allowed origins, delivery.

A visitor is anonymous. The widget (static/js/chat-widget.js) opens `ws/chat/` and says hello
with the token it kept in localStorage (none the first time); the server answers with a signed
token naming a visitor id (`v-<hex>`, the visitor's chat handle and thread key) and replays the
conversation after the last interaction the widget saw. Frames are JSON objects:

    visitor → server                                   server → visitor
    {"type": "hello", "token": "…"|null,               {"type": "welcome", "token": "…",
     "last_seen": 41|null, "name": "…"}                  "agents_online": true}
    {"type": "message", "id": "<uuid>", "text": "…",   {"type": "message", "id": 42, …}
     "name": "…"}
    {"type": "typing", "typing": true}                 {"type": "typing", "typing": true, "name": …}
                                                       {"type": "status", "agents_online": false}
    {"type": "email", "id": "<uuid>", "email": "…",    {"type": "email_saved", "email": "…"}
     "text": "…"}                                      {"type": "error", "code": "…", "message": …}

A visitor may give a display name (optional, in the hello or with a message or email frame): it
names the customer made for them, never matches an identity, and never renames a customer who
exists already; a malformed one is refused with an `invalid_name` error frame.

A message goes through the one inbound pipeline (`receive_inbound`, deduplicated on the visitor
and the widget's message id, so a resend after a reconnect stores once). Agent replies leave by
the delivery task like any reply: `send_chat` pushes the stored interaction's id to the visitor's
channel-layer group and the socket sends it. Typing travels both ways: the visitor's to the case
group (an "is typing…" fragment on the case page), the agents' from case presence
(workbench/presence.py) to the widget. Nothing of the staff hub is reachable from here.

Close codes: 4401 a token that is forged or expired (the widget starts afresh), 4403 an Origin
that may not embed the widget (refused at the handshake), 1003 a binary frame, 1009 a frame over
CHAT_MAX_FRAME_BYTES (after an error frame).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

import redis
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.http.request import split_domain_port, validate_host
from django.template.loader import render_to_string

from cases.fragments import CASE_PRESENCE
from cases.models import OPEN_STATUSES, Case
from cases.replies import FAILED
from cases.views import can_read_case
from customers.identity import link_identity, live_customer, normalise_handle
from customers.models import Channel, Direction, Identity, Interaction, Kind
from workbench import notifications, presence, realtime, roles
from workbench.connectors.inbound import InboundMessage, receive_inbound
from workbench.models import ChatWidgetOrigin, User

logger = logging.getLogger(__name__)

TOKEN_SALT = "workbench.chat.visitor"  # noqa: S105 (a signing namespace, not a secret)
VISITOR_ID = re.compile(r"^v-[0-9a-f]{32}$")
CLIENT_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")
MAX_REPLAY = 200
MAX_NAME_CHARS = 80
# Control, format (bidi overrides, zero-width), line and paragraph separators: a name with one of
# these could break a line of the case page or disguise itself as someone else's.
REFUSED_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Published to the case group when the visitor starts or stops typing (the case page shows it).
VISITOR_TYPING_EVENT = "chat.visitor_typing"

CLOSE_BAD_TOKEN = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNSUPPORTED = 1003
CLOSE_TOO_BIG = 1009


# --- the visitor's token --------------------------------------------------------------------


def issue_token(visitor_id: str | None = None) -> tuple[str, str]:
    """A new signed token and the visitor id it names (a fresh one unless given)."""
    visitor_id = visitor_id or f"v-{uuid.uuid4().hex}"
    return signing.dumps({"v": visitor_id}, salt=TOKEN_SALT), visitor_id


def visitor_of(token: str) -> str:
    """The visitor id a token names; signing.BadSignature when it is forged, altered or older
    than CHAT_TOKEN_MAX_AGE_S (SignatureExpired is a BadSignature)."""
    value = signing.loads(token, salt=TOKEN_SALT, max_age=settings.CHAT_TOKEN_MAX_AGE_S)
    visitor_id = value.get("v") if isinstance(value, dict) else None
    if not isinstance(visitor_id, str) or not VISITOR_ID.match(visitor_id):
        raise signing.BadSignature("the token names no visitor")
    return visitor_id


def visitor_group(visitor_id: str) -> str:
    """The channel-layer group of one visitor's sockets (never a realtime group of the hub)."""
    if not VISITOR_ID.match(visitor_id):
        raise ValueError("not a visitor id")
    return f"chat.visitor.{visitor_id}"


# --- origins --------------------------------------------------------------------------------


def normalise_origin(value: str) -> str:
    """`https://shop.example` as a browser sends it in Origin: lower case, no default port, no
    path; ValidationError for anything that is not an http(s) origin."""
    raw = (value or "").strip().rstrip("/")
    parts = urlsplit(raw.lower())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Write an origin such as https://shop.example (http or https).")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValidationError("An origin is scheme, host and port only: no path, no query.")
    try:
        port = parts.port
    except ValueError:
        raise ValidationError("The port is not a number.") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def is_origin_allowed(origin: str, host: str) -> bool:
    """Pages of Workbench itself (the Origin's host is the socket's Host, an allowed host) and
    the origins the CCO allowed may open the chat socket; nothing else, no Origin included."""
    try:
        origin = normalise_origin(origin)
    except ValidationError:
        return False
    netloc = urlsplit(origin).netloc
    if host and netloc == host.lower():
        domain, _port = split_domain_port(host)
        if domain and validate_host(domain, settings.ALLOWED_HOSTS):
            return True
    return ChatWidgetOrigin.objects.filter(origin=origin).exists()


# --- who is online --------------------------------------------------------------------------


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def agents_online() -> bool:
    """Whether an agent or supervisor has a live Workbench page open (their own `user.<id>`
    group has a subscriber): then a visitor can expect an answer now, else the widget offers
    "leave your email"."""
    ids = list(
        User.objects.filter(is_active=True, groups__name__in=(roles.AGENT, roles.SUPERVISOR))
        .values_list("pk", flat=True)
        .distinct()[:2000]
    )
    if not ids:
        return False
    config = settings.CHANNEL_LAYERS["default"]
    prefix = config["CONFIG"]["prefix"]
    groups = [realtime.layer_group(notifications.user_group(pk)) for pk in ids]
    if config["BACKEND"].endswith("pubsub.RedisPubSubChannelLayer"):
        counts = _redis().pubsub_numsub(*[f"{prefix}__group__{g}" for g in groups])
        return any(count > 0 for _channel, count in counts)
    pipe = _redis().pipeline(transaction=False)
    for group in groups:
        pipe.zcard(f"{prefix}:group:{group}")
    return any(count > 0 for count in pipe.execute())


# --- services the socket calls ----------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    customer_id: int | None
    case_id: int | None


def conversation_of(visitor_id: str) -> Conversation:
    """The visitor's customer (None before their first message) and open chat case."""
    identity = (
        Identity.objects.select_related("customer")
        .filter(channel=Channel.CHAT, handle=visitor_id)
        .first()
    )
    if identity is None:
        return Conversation(customer_id=None, case_id=None)
    customer = live_customer(identity.customer)
    case_id = (
        Case.objects.filter(
            customer=customer, thread_key=visitor_id, status__in=OPEN_STATUSES, merged_into=None
        )
        .order_by("-id")
        .values_list("pk", flat=True)
        .first()
    )
    return Conversation(customer_id=customer.pk, case_id=case_id)


def clean_visitor_name(value: object) -> str:
    """The display name a visitor typed, stripped ("" when they gave none).

    ValidationError for one that is not text, longer than MAX_NAME_CHARS, or carries control
    or invisible formatting characters. It is only ever a label: it names the customer made
    for the visitor and is shown escaped, never used to find an identity.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError({"name": "Your name must be text."})
    name = value.strip()
    if len(name) > MAX_NAME_CHARS:
        raise ValidationError({"name": f"Keep your name to {MAX_NAME_CHARS} characters or fewer."})
    if any(unicodedata.category(char) in REFUSED_NAME_CATEGORIES for char in name):
        raise ValidationError({"name": "Your name has characters we cannot show; type it plainly."})
    return name


def receive_chat_message(
    *, visitor_id: str, client_id: str, text: str, display_name: str = "", answer_by: str = ""
) -> Interaction:
    """Store a visitor's message through the inbound pipeline; a resend stores nothing twice.

    The message id is the visitor's and the widget's together, so one visitor cannot reach
    another's message by guessing its id. `display_name` is the name the visitor gave (a hint:
    the identity service names a new customer with it and leaves an existing one as it is);
    without one they are "Chat visitor <6 hex>". `answer_by` names the channel the visitor asked
    to be answered on (see `leave_email`). ValidationError (nothing stored) for an empty text or
    a malformed name.
    """
    name = clean_visitor_name(display_name)
    data = {"from": visitor_id, "client_id": client_id}
    if answer_by:
        data["answer_by"] = answer_by
    result = receive_inbound(
        InboundMessage(
            channel=Channel.CHAT,
            handle=visitor_id,
            external_id=f"{visitor_id}:{client_id}",
            body_text=text,
            display_name=name or f"Chat visitor {visitor_id[2:8]}",
            thread_key=visitor_id,
            data=data,
        )
    )
    return result.interaction


def leave_email(
    *, visitor_id: str, client_id: str, email: str, text: str = "", display_name: str = ""
) -> Interaction:
    """The visitor asks to be answered by email: link the address to their customer and put the
    request on the case, so an agent answers there. An address another customer holds is not
    moved (customers.identity.link_identity); the entry says so, for an agent to merge.
    The entry carries `answer_by: "email"`, so the case's composer offers email first
    (cases.replies.default_reply_channel) while this is the visitor's latest word.
    ValidationError (nothing stored) for a malformed address.
    """
    try:
        email = normalise_handle(Channel.EMAIL, email)
    except ValidationError:
        raise ValidationError({"email": "That is not an email address."}) from None
    note = (text or "").strip()
    body = f"Please answer me by email at {email}." + (f"\n\n{note}" if note else "")
    interaction = receive_chat_message(
        visitor_id=visitor_id,
        client_id=client_id,
        text=body,
        display_name=display_name,
        answer_by=Channel.EMAIL,
    )
    link = link_identity(customer=interaction.customer, channel=Channel.EMAIL, handle=email)
    if not link.is_linked:
        logger.info("chat visitor %s left an email another customer holds", visitor_id)
    return interaction


def replay_since(*, customer_id: int, last_seen: int | None) -> list[Interaction]:
    """The chat messages of the customer after interaction `last_seen` (the newest ones when
    None), in and out, oldest first: never notes, never other channels, never failed replies."""
    rows = (
        Interaction.objects.filter(
            customer_id=customer_id,
            channel=Channel.CHAT,
            kind=Kind.MESSAGE,
            is_private=False,
            direction__in=(Direction.INBOUND, Direction.OUTBOUND),
        )
        .exclude(status=FAILED)
        .select_related("actor")
    )
    if last_seen is not None:
        return list(rows.filter(id__gt=last_seen).order_by("id")[:MAX_REPLAY])
    return list(reversed(rows.order_by("-id")[:MAX_REPLAY]))


def message_frame(interaction: Interaction) -> dict:
    """What the widget shows of one interaction: the text, who wrote, when; nothing else."""
    if interaction.direction == Direction.INBOUND:
        author = "You"
    elif interaction.actor is not None:
        author = interaction.actor.first_name or interaction.actor.get_username()
    else:
        author = "Support"
    return {
        "type": "message",
        "id": interaction.pk,
        "client_id": (interaction.data or {}).get("client_id"),
        "direction": interaction.direction,
        "author": author,
        "text": interaction.body_text,
        "at": interaction.occurred_at.isoformat(),
    }


def outbound_frame(*, interaction_id: int, customer_id: int | None) -> dict | None:
    """The frame of an agent's chat reply, if it is this visitor's customer's to see."""
    interaction = (
        Interaction.objects.select_related("actor")
        .filter(
            pk=interaction_id,
            channel=Channel.CHAT,
            kind=Kind.MESSAGE,
            direction=Direction.OUTBOUND,
            is_private=False,
        )
        .first()
    )
    if interaction is None or customer_id is None:
        return None
    if live_customer(interaction.customer).pk != customer_id:
        return None
    return message_frame(interaction)


def agent_typing(case_id: int) -> str | None:
    """The first name of an agent typing on the case now, or None."""
    group = realtime.group_name("case", case_id)
    for person in presence.people_here(group=group, viewer_id=0):
        if person.is_typing:
            return person.name.split()[0] if person.name else "Support"
    return None


def announce_visitor_typing(*, case_id: int, typing: bool) -> None:
    realtime.publish(
        realtime.group_name("case", case_id), VISITOR_TYPING_EVENT, case_id=case_id, typing=typing
    )


def render_visitor_typing(viewer, *, case_id: int, typing: bool, **_data) -> str:
    """ "Chat visitor 3f2a1c is typing…" on the case page, for those who may read the case."""
    case = Case.objects.select_related("customer").filter(pk=case_id).first()
    if case is None or not can_read_case(viewer, case):
        return ""
    context = {"typing": typing, "name": str(case.customer), "is_live": True}
    return render_to_string("workbench/_chat_typing.html#chat-typing", context)


realtime.register_fragment(VISITOR_TYPING_EVENT, render_visitor_typing, per_user=True)


def is_over_rate(visitor_id: str) -> bool:
    """Count one message of the visitor; True when it is one too many for the window.

    The window starts at the visitor's first message and lasts CHAT_RATE_WINDOW_S (the key is
    created with its expiry, then counted, in one MULTI), shared by every socket and process.
    """
    key = f"{settings.REDIS_PREFIX}:chat:rate:{visitor_id}"
    pipe = _redis().pipeline(transaction=True)
    pipe.set(key, 0, ex=settings.CHAT_RATE_WINDOW_S, nx=True)
    pipe.incr(key)
    _, count = pipe.execute()
    return int(count) > settings.CHAT_RATE_MESSAGES


# --- delivery of agent replies --------------------------------------------------------------


def send_chat(interaction: Interaction) -> dict:
    """The chat sender of workbench.connectors.delivery: hand the reply to the visitor's open
    sockets. A visitor who is away reads it from the replay when they come back, so "sent"
    means it is on its way to them, live or on their next visit."""
    visitor_id = str((interaction.data or {}).get("to", ""))
    group = visitor_group(visitor_id)
    async_to_sync(get_channel_layer().group_send)(
        group, {"type": "chat.reply", "interaction_id": interaction.pk}
    )
    return {"pushed_to": visitor_id}


# --- the socket -----------------------------------------------------------------------------


class ChatConsumer(AsyncWebsocketConsumer):
    """One visitor's widget. Refused at the handshake unless its Origin may embed the widget."""

    async def connect(self) -> None:
        self.visitor_id: str | None = None
        self.visitor_name = ""
        self.customer_id: int | None = None
        self.case_id: int | None = None
        self.visitor_typing = False
        self.visitor_typing_at = 0.0
        self.agent_typing_name: str | None = None
        self.agents_online = False
        self.typing_timer: asyncio.Task | None = None
        headers = dict(self.scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin-1")
        host = headers.get(b"host", b"").decode("latin-1")
        if not await database_sync_to_async(is_origin_allowed)(origin, host):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.typing_timer is not None:
            self.typing_timer.cancel()
        if self.visitor_typing and self.case_id is not None:
            await self._typing_to_case(False)
        if self.visitor_id is not None:
            await self.channel_layer.group_discard(
                visitor_group(self.visitor_id), self.channel_name
            )
        if self.case_id is not None:
            await self.channel_layer.group_discard(self._case_layer_group(), self.channel_name)

    async def error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    async def send_json(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if bytes_data is not None:
            await self.close(code=CLOSE_UNSUPPORTED)
            return
        if text_data is None or len(text_data.encode()) > settings.CHAT_MAX_FRAME_BYTES:
            limit = settings.CHAT_MAX_FRAME_BYTES
            await self.error("too_big", f"Messages are limited to {limit:,} bytes.")
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            await self.error("invalid", "A frame is a JSON object.")
            return
        kind = frame.get("type")
        if kind == "hello":
            await self.hello(frame)
        elif self.visitor_id is None:
            await self.error("no_hello", "Say hello with your token first.")
        elif kind == "message":
            await self.message(frame)
        elif kind == "email":
            await self.email(frame)
        elif kind == "typing":
            await self.typing(frame)
        else:
            await self.error("invalid", "Unknown frame type.")

    async def hello(self, frame: dict) -> None:
        if self.visitor_id is not None:
            await self.error("invalid", "Hello once per connection.")
            return
        # A refused name sends its error frame; the session goes on without it.
        await self.take_name(frame)
        token = frame.get("token")
        last_seen = frame.get("last_seen")
        if last_seen is not None and (not isinstance(last_seen, int) or last_seen < 0):
            last_seen = None
        if token:
            try:
                visitor_id = visitor_of(str(token))
            except signing.BadSignature:
                await self.error("bad_token", "This chat session is not valid any more.")
                await self.close(code=CLOSE_BAD_TOKEN)
                return
            token, _ = issue_token(visitor_id)  # refreshed, so an active visitor never expires
        else:
            token, visitor_id = issue_token()
        self.visitor_id = visitor_id
        await self.channel_layer.group_add(visitor_group(visitor_id), self.channel_name)
        conversation = await database_sync_to_async(conversation_of)(visitor_id)
        self.customer_id = conversation.customer_id
        await self.follow_case(conversation.case_id)
        online = await database_sync_to_async(agents_online)()
        self.agents_online = online
        await self.send_json(
            {"type": "welcome", "token": token, "visitor": visitor_id, "agents_online": online}
        )
        if self.customer_id is not None:
            rows = await database_sync_to_async(replay_since)(
                customer_id=self.customer_id, last_seen=last_seen
            )
            for row in rows:
                await self.send_json(message_frame(row))

    def _case_layer_group(self) -> str:
        return realtime.layer_group(realtime.group_name("case", self.case_id))

    async def follow_case(self, case_id: int | None) -> None:
        """Hear the case's presence events (agents typing), nothing else of its group."""
        if case_id == self.case_id:
            return
        if self.case_id is not None:
            await self.channel_layer.group_discard(self._case_layer_group(), self.channel_name)
        self.case_id = case_id
        if case_id is not None:
            await self.channel_layer.group_add(self._case_layer_group(), self.channel_name)

    async def take_name(self, frame: dict) -> bool:
        """Keep the frame's `name` for this visitor's next messages; False (and an
        `invalid_name` error frame) when it is refused. No `name` key keeps the one given."""
        if "name" not in frame:
            return True
        try:
            name = clean_visitor_name(frame["name"])
        except ValidationError as exc:
            await self.error("invalid_name", " ".join(exc.messages))
            return False
        if name:
            self.visitor_name = name
        return True

    def _client_id(self, frame: dict) -> str | None:
        client_id = frame.get("id")
        if isinstance(client_id, str) and CLIENT_ID.match(client_id):
            return client_id
        return None

    async def message(self, frame: dict) -> None:
        client_id = self._client_id(frame)
        text = frame.get("text")
        if client_id is None or not isinstance(text, str) or not text.strip():
            await self.error("invalid", "A message needs an id and some text.")
            return
        if not await self.take_name(frame):
            return
        if await database_sync_to_async(is_over_rate)(self.visitor_id):
            await self.error("rate_limited", "You are sending too fast; wait a few seconds.")
            return
        try:
            interaction = await database_sync_to_async(receive_chat_message)(
                visitor_id=self.visitor_id,
                client_id=client_id,
                text=text.strip(),
                display_name=self.visitor_name,
            )
        except ValidationError as exc:
            await self.error("invalid", " ".join(exc.messages))
            return
        await self.stored(interaction)

    async def email(self, frame: dict) -> None:
        client_id = self._client_id(frame)
        email = frame.get("email")
        text = frame.get("text") or ""
        if client_id is None or not isinstance(email, str) or not isinstance(text, str):
            await self.error("invalid", "Leave an email address.")
            return
        if not await self.take_name(frame):
            return
        if await database_sync_to_async(is_over_rate)(self.visitor_id):
            await self.error("rate_limited", "You are sending too fast; wait a few seconds.")
            return
        try:
            interaction = await database_sync_to_async(leave_email)(
                visitor_id=self.visitor_id,
                client_id=client_id,
                email=email,
                text=text,
                display_name=self.visitor_name,
            )
        except ValidationError as exc:
            await self.error("invalid_email", " ".join(exc.messages))
            return
        await self.stored(interaction)
        await self.send_json({"type": "email_saved", "email": email.strip().lower()})

    async def stored(self, interaction: Interaction) -> None:
        """Tell the widget its message is stored (the same frame a replay sends)."""
        self.customer_id = await database_sync_to_async(
            lambda: live_customer(interaction.customer).pk
        )()
        case_id = (interaction.data or {}).get("case_id")
        await self.follow_case(case_id if isinstance(case_id, int) else self.case_id)
        if self.visitor_typing:
            await self._typing_to_case(False)
        await self.send_json(message_frame(interaction))
        online = await database_sync_to_async(agents_online)()
        if online != self.agents_online:
            self.agents_online = online
            await self.send_json({"type": "status", "agents_online": online})

    async def typing(self, frame: dict) -> None:
        typing = frame.get("typing")
        if not isinstance(typing, bool) or self.case_id is None:
            return
        now = time.monotonic()
        if typing == self.visitor_typing and (not typing or now - self.visitor_typing_at < 2):
            return  # nothing new, or a refresh sooner than the case page needs one
        if typing and now - self.visitor_typing_at < presence.TYPING_RELAY_INTERVAL_SECONDS:
            return  # a page flapping between typing and not: one "typing" per interval
        if typing:
            self.visitor_typing_at = now
            self._expire_typing_later()
        await self._typing_to_case(typing)

    def _expire_typing_later(self) -> None:
        if self.typing_timer is not None:
            self.typing_timer.cancel()

        async def expire() -> None:
            await asyncio.sleep(presence.TYPING_SECONDS)
            if self.visitor_typing:
                await self._typing_to_case(False)

        self.typing_timer = asyncio.get_running_loop().create_task(expire())

    async def _typing_to_case(self, typing: bool) -> None:
        self.visitor_typing = typing
        if self.case_id is None:
            return
        try:
            await database_sync_to_async(announce_visitor_typing)(
                case_id=self.case_id, typing=typing
            )
        except Exception:
            logger.exception("could not relay visitor typing to case %s", self.case_id)

    # --- from the channel layer ---

    async def chat_reply(self, message: dict) -> None:
        frame = await database_sync_to_async(outbound_frame)(
            interaction_id=message["interaction_id"], customer_id=self.customer_id
        )
        if frame is not None:
            if self.agent_typing_name is not None:
                self.agent_typing_name = None
                await self.send_json({"type": "typing", "typing": False, "name": None})
            await self.send_json(frame)

    async def wb_event(self, message: dict) -> None:
        """The case group's events: only presence matters here, turned into a typing frame."""
        if message.get("event") != CASE_PRESENCE or self.case_id is None:
            return
        try:
            name = await database_sync_to_async(agent_typing)(self.case_id)
        except Exception:
            logger.exception("could not read presence of case %s", self.case_id)
            return
        if name != self.agent_typing_name:
            self.agent_typing_name = name
            await self.send_json({"type": "typing", "typing": name is not None, "name": name})
