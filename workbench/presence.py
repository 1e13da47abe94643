"""Presence: who is viewing a realtime group's page (a case) and who is typing there, in Redis.

Every socket that views a group keeps one entry in a sorted set, scored with its last heartbeat;
an entry older than VIEWING_SECONDS is gone, so a crashed browser or server disappears without a
goodbye. Typing is a second sorted set scored with the time the typing state runs out, a few
seconds after the last keystroke event. A user is here while any of their sockets is.

When who-is-here (or who-types) changes, the group hears the kind's event through
`realtime.publish`; each receiving page renders "Also here: …" for its own user. Which kinds
have presence, and who may be present on one object, is registered by the app that owns the kind
(the same registry pattern as realtime), because this low part imports no app.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings

from workbench import realtime
from workbench.models import User

# A heartbeat every ~15 s keeps a socket here; three missed ones and it is gone.
HEARTBEAT_SECONDS = 15
VIEWING_SECONDS = 45
# "typing…" lasts this long after the last keystroke event the page relayed.
TYPING_SECONDS = 6
# One socket relays at most one typing state per this many seconds; the rest wait or drop.
TYPING_RELAY_INTERVAL_SECONDS = 1.0
# Keys of a case nobody looks at any more vanish on their own.
KEY_TTL_SECONDS = 2 * VIEWING_SECONDS
_MAX_ID = 2**63 - 1

# The clock presence reads: tests replace it to age heartbeats without sleeping.
clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class PresenceKind:
    kind: str
    may_be_present: Callable  # (user, pk) -> bool: the object-level read rule of the kind
    event: str  # the realtime event the group hears when who-is-here changes (data: pk)


@dataclass(frozen=True)
class Update:
    """One presence frame from a page: `{"type": "presence", "case": 12, "typing": true}`.

    `typing` is None for a heartbeat ("I am still here").
    """

    kind: str
    pk: int
    typing: bool | None

    @property
    def group(self) -> str:
        return realtime.group_name(self.kind, self.pk)


@dataclass(frozen=True)
class PresentPerson:
    user_id: int
    name: str
    is_typing: bool


_kinds: dict[str, PresenceKind] = {}


def register_presence(kind: str, *, may_be_present: Callable, event: str) -> None:
    """Give a realtime group kind presence: `may_be_present(user, pk)` says who may take part."""
    _kinds[kind] = PresenceKind(kind=kind, may_be_present=may_be_present, event=event)


def event_of(kind: str) -> str:
    """The realtime event whose fragment shows presence for a kind."""
    return _kinds[kind].event


def parse_frame(frame: dict) -> Update:
    """The presence update a page's JSON frame asks for; ValueError for anything malformed.

    Exactly `type`, one registered kind with a positive integer id, and optionally a boolean
    `typing`; nothing else, so a page cannot smuggle data through the hub.
    """
    if frame.get("type") != "presence":
        raise ValueError("not a presence frame")
    kinds = [key for key in frame if key in _kinds]
    if len(kinds) != 1 or set(frame) - {"type", "typing", kinds[0]}:
        raise ValueError("a presence frame names one thing and may say whether one types")
    kind = kinds[0]
    pk = frame[kind]
    if not isinstance(pk, int) or isinstance(pk, bool) or not 1 <= pk <= _MAX_ID:
        raise ValueError(f"{kind} must be a positive integer id")
    typing = frame.get("typing")
    if typing is not None and not isinstance(typing, bool):
        raise ValueError("typing must be true or false")
    return Update(kind=kind, pk=pk, typing=typing)


def may_be_present(user, update: Update) -> bool:
    """True when the user may read the object the update is about (reads the database)."""
    spec = _kinds.get(update.kind)
    if spec is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return bool(spec.may_be_present(user, update.pk))


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _keys(group: str) -> tuple[str, str]:
    base = f"{settings.REDIS_PREFIX}:presence:{group}"
    return f"{base}:sockets", f"{base}:typing"


def _member(user_id: int, socket: str) -> str:
    return f"{user_id}:{socket}"


def _user_id(member: bytes) -> int:
    return int(member.split(b":", 1)[0])


def _state(sockets: list[bytes], typing: list[bytes]) -> frozenset[tuple[int, bool]]:
    """Who is here and whether they type, as the pages show it: (user id, is typing) pairs."""
    here = {_user_id(m) for m in sockets}
    typing_ids = {_user_id(m) for m in typing} & here
    return frozenset((uid, uid in typing_ids) for uid in here)


def _change(group: str, *, now: float, write: Callable[[redis.client.Pipeline], None]) -> bool:
    """Drop what has run out, apply `write`, and tell whether what pages show changed.

    One MULTI/EXEC, so "before" and "after" belong to this change alone. "Before" counts entries
    that ran out since the last change: they are what the pages still show.
    """
    sockets_key, typing_key = _keys(group)
    pipe = _redis().pipeline(transaction=True)
    pipe.zrange(sockets_key, 0, -1)
    pipe.zrange(typing_key, 0, -1)
    pipe.zremrangebyscore(sockets_key, "-inf", now - VIEWING_SECONDS)
    pipe.zremrangebyscore(typing_key, "-inf", now)
    write(pipe)
    pipe.zrange(sockets_key, 0, -1)
    pipe.zrange(typing_key, 0, -1)
    pipe.expire(sockets_key, KEY_TTL_SECONDS)
    pipe.expire(typing_key, KEY_TTL_SECONDS)
    results = pipe.execute()
    before = _state(results[0], results[1])
    after = _state(results[-4], results[-3])
    return before != after


def _announce(group: str) -> None:
    parsed = realtime.parse_group(group)
    spec = _kinds.get(parsed[0].kind) if parsed else None
    if spec is None:
        raise LookupError(f"{group!r} has no presence")
    realtime.publish(group, spec.event, pk=parsed[1])


def update_presence(
    *, group: str, user_id: int, socket: str, typing: bool | None, now: float | None = None
) -> bool:
    """Record that one socket of a user views `group` (a heartbeat) and, unless `typing` is None,
    whether the user types there. Publishes to the group when what its pages show changed, and
    returns whether it did. The caller has checked that the user may read the group's object.
    """
    now = clock() if now is None else now
    sockets_key, typing_key = _keys(group)
    member = _member(user_id, socket)

    def write(pipe) -> None:
        pipe.zadd(sockets_key, {member: now})
        if typing is True:
            pipe.zadd(typing_key, {member: now + TYPING_SECONDS})
        elif typing is False:
            pipe.zrem(typing_key, member)

    changed = _change(group, now=now, write=write)
    if changed:
        _announce(group)
    return changed


def leave(*, group: str, user_id: int, socket: str, now: float | None = None) -> bool:
    """One socket stops viewing `group` (it closed). The user stays while another of their
    sockets views it. Publishes and returns True when what the group's pages show changed."""
    now = clock() if now is None else now
    sockets_key, typing_key = _keys(group)
    member = _member(user_id, socket)

    def write(pipe) -> None:
        pipe.zrem(sockets_key, member)
        pipe.zrem(typing_key, member)

    changed = _change(group, now=now, write=write)
    if changed:
        _announce(group)
    return changed


def expire_presence(*, group: str, now: float | None = None) -> bool:
    """Drop heartbeats and typing that ran out; publish and return True when that showed."""
    now = clock() if now is None else now
    changed = _change(group, now=now, write=lambda pipe: None)
    if changed:
        _announce(group)
    return changed


def people_here(*, group: str, viewer_id: int, now: float | None = None) -> list[PresentPerson]:
    """Everyone else viewing `group` now (the viewer themself left out), by name; one query."""
    now = clock() if now is None else now
    sockets_key, typing_key = _keys(group)
    pipe = _redis().pipeline(transaction=False)
    pipe.zrangebyscore(sockets_key, now - VIEWING_SECONDS, "+inf")
    pipe.zrangebyscore(typing_key, f"({now}", "+inf")
    sockets, typing = pipe.execute()
    state = {uid: is_typing for uid, is_typing in _state(sockets, typing) if uid != viewer_id}
    if not state:
        return []
    users = User.objects.filter(pk__in=state, is_active=True).only(
        "id", "username", "first_name", "last_name"
    )
    people = [
        PresentPerson(
            user_id=user.pk,
            name=user.get_full_name() or user.get_username(),
            is_typing=state[user.pk],
        )
        for user in users
    ]
    return sorted(people, key=lambda person: (person.name.casefold(), person.user_id))


class TypingGate:
    """Rate limit for one socket on one group: at most one typing state per interval goes on.

    A state offered too soon waits as `pending` (the latest wins) until `wait_seconds` pass, so
    a page that stops typing a moment after it started still ends up "not typing". Saying "not
    typing" twice relays nothing; saying "typing" again refreshes its time (once per interval).
    """

    def __init__(self, *, interval_seconds: float = TYPING_RELAY_INTERVAL_SECONDS) -> None:
        self.interval_seconds = interval_seconds
        self.relayed = False
        self.relayed_at: float | None = None
        self.pending: bool | None = None

    def offer(self, typing: bool, *, now: float) -> bool:
        """True when `typing` should be relayed now; otherwise it may wait as `pending`."""
        if self.relayed_at is not None and now - self.relayed_at < self.interval_seconds:
            self.pending = typing if typing != self.relayed else None
            return False
        self.pending = None
        if not typing and not self.relayed:
            return False
        self.relayed, self.relayed_at = typing, now
        return True

    def wait_seconds(self, *, now: float) -> float:
        if self.relayed_at is None:
            return 0.0
        return max(0.0, self.relayed_at + self.interval_seconds - now)
