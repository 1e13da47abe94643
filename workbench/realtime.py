"""Live updates: group names, who may subscribe, and `publish` (after commit, with a sequence).

A group is named `<kind>.<id>` (or just `<kind>` for singletons such as `console`) by
`group_name`; each kind is registered once, by the app that owns it, with the predicate that says
who may read it. An event is published to a group after the surrounding transaction commits and
carries a per-group sequence number (a Redis counter), so a page that sees a gap, or reconnects,
knows to refetch: channel-layer delivery is at-most-once.

A fragment renderer turns an event into the HTML the page swaps in; it is registered under the
event's name and is the same function the HTTP view uses, so both paths render the same partial
for the same user.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import msgpack
import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

_KIND = re.compile(r"^[a-z][a-z_]{0,30}$")
_NAME = re.compile(r"^(?P<kind>[a-z][a-z_]{0,30})(?:\.(?P<pk>[1-9][0-9]{0,18}))?$")
SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class GroupKind:
    kind: str
    can_read: Callable  # a rules predicate: (user) or (user, pk)
    has_id: bool


@dataclass(frozen=True)
class Fragment:
    event: str
    render: Callable[..., str]  # render(user, **data) -> HTML with one element per DOM id
    per_user: bool  # False: the HTML depends only on the user's roles, so it is shared


_groups: dict[str, GroupKind] = {}
_fragments: dict[str, Fragment] = {}


def register_group(kind: str, *, can_read: Callable, has_id: bool = True) -> None:
    """Declare a kind of group and the predicate (user, pk) that says who may subscribe."""
    if not _KIND.match(kind):
        raise ValueError(f"bad group kind {kind!r}")
    _groups[kind] = GroupKind(kind=kind, can_read=can_read, has_id=has_id)


def register_fragment(event: str, render: Callable[..., str], *, per_user: bool = False) -> None:
    """Declare how an event becomes HTML for one user: render(user, **data)."""
    _fragments[event] = Fragment(event=event, render=render, per_user=per_user)


def fragment_for(event: str) -> Fragment | None:
    return _fragments.get(event)


def group_name(kind: str, pk: int | None = None) -> str:
    """The one spelling of a group: `case.12`, `console`. Never built from user text."""
    spec = _groups.get(kind)
    if spec is None:
        raise LookupError(f"no realtime group kind {kind!r} is registered")
    if spec.has_id:
        if not isinstance(pk, int) or isinstance(pk, bool) or pk < 1:
            raise ValueError(f"group kind {kind!r} needs a positive integer id")
        return f"{kind}.{pk}"
    if pk is not None:
        raise ValueError(f"group kind {kind!r} takes no id")
    return kind


def parse_group(name: object) -> tuple[GroupKind, int | None] | None:
    """The kind and id a group name stands for, or None when it names nothing we publish."""
    if not isinstance(name, str):
        return None
    match = _NAME.match(name)
    if match is None:
        return None
    spec = _groups.get(match["kind"])
    if spec is None or spec.has_id != (match["pk"] is not None):
        return None
    return spec, int(match["pk"]) if match["pk"] else None


def can_subscribe(user, name: object) -> bool:
    """True when the user's role may read the group `name` (and it is a group at all)."""
    parsed = parse_group(name)
    if parsed is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    spec, pk = parsed
    return bool(spec.can_read.test(user, pk))


def layer_group(name: str) -> str:
    """The channel-layer group that carries a realtime group's events."""
    return f"wb.{name}"


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _seq_key(name: str) -> str:
    return f"{settings.REDIS_PREFIX}:seq:{name}"


def current_seq(name: str) -> int:
    """The sequence number of the last event published to a group (0 when none yet)."""
    value = _redis().get(_seq_key(name))
    return int(value) if value else 0


def current_seqs(names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    values = _redis().mget([_seq_key(n) for n in names])
    return {n: int(v) if v else 0 for n, v in zip(names, values, strict=True)}


def publish(name: str, event: str, **data) -> None:
    """Send `event` to group `name` once the current transaction commits (never if it rolls back).

    `data` carries ids and scalars only; the receiving consumer renders the event's fragment for
    each user from fresh rows. Outside a transaction it is sent at once. A failure to reach Redis
    is logged, not raised: the database is the truth and the page repairs itself on reload.
    """
    _check(name, event, data)
    _send_on_commit([(name, event, data)])


def publish_many(events: list[tuple[str, str, dict]]) -> None:
    """`publish` for several (group, event, data) at once, sent in this order."""
    for name, event, data in events:
        _check(name, event, data)
    if events:
        _send_on_commit(list(events))


class _Outbox:
    """The events of one stretch of a transaction, sent together after the commit by one
    `send_many` (one Redis round trip), where an on-commit callback per event cost two round
    trips each (an inbound message publishes three)."""

    def __init__(self, events: list[tuple[str, str, dict]]):
        self.events = events
        self.__qualname__ = "realtime.send_many"  # what Django's on_commit logs a failure as

    def __call__(self) -> None:
        send_many(self.events)


def _send_on_commit(events: list[tuple[str, str, dict]]) -> None:
    """Add the events to the transaction's last outbox when nothing was registered after it in
    the same savepoint (so a rollback to any savepoint drops both alike and the order of all
    on-commit work holds); else register a new outbox."""
    connection = transaction.get_connection()
    hooks = connection.run_on_commit if connection.in_atomic_block else None
    if hooks:
        savepoints, last, _ = hooks[-1]
        if isinstance(last, _Outbox) and savepoints == set(connection.savepoint_ids):
            last.events.extend(events)
            return
    transaction.on_commit(_Outbox(events), robust=True)


def _check(name: str, event: str, data: dict) -> None:
    if parse_group(name) is None:
        raise ValueError(f"{name!r} is not a registered realtime group")
    if event not in _fragments:
        raise LookupError(f"no fragment is registered for event {event!r}")
    for key, value in data.items():
        if not isinstance(value, SCALARS):
            raise TypeError(f"publish data must be scalars; {key} is {type(value).__name__}")


def send_many(events: list[tuple[str, str, dict]]) -> list[int]:
    """Number each event and hand them to the channel layer, in order; their sequence numbers.

    With the pub/sub layer on our Redis and plain msgpack bytes, one Lua script numbers and
    publishes them all in one round trip; otherwise one pipeline numbers them and one more
    sends them (or the layer's `group_send`, one by one)."""
    if _direct_pubsub() is None:
        return [send_now(name, event, data) for name, event, data in events]
    layer, channel_of = _direct_pubsub()
    if _is_plain_msgpack(layer):
        keys, args = [], []
        for name, event, data in events:
            keys.append(_seq_key(name))
            args += [channel_of(layer_group(name)), _unnumbered(layer, name, event, data)]
        return [int(seq) for seq in _number_and_publish()(keys=keys, args=args)]
    with _redis().pipeline(transaction=False) as pipe:
        for name, _, _ in events:
            pipe.incr(_seq_key(name))
        seqs = [int(seq) for seq in pipe.execute()]
    with _redis().pipeline(transaction=False) as pipe:
        for (name, event, data), seq in zip(events, seqs, strict=True):
            message = _message(name, event, data, seq)
            pipe.publish(channel_of(layer_group(name)), layer.serialize(message))
        pipe.execute()
    return seqs


# Numbers each event and publishes it in one round trip: ARGV holds, per event, the Redis
# channel and the layer's message without its last entry's value, which is the sequence number
# (msgpack, as the layer serialises; a map's entries are its bytes one after another).
_NUMBER_AND_PUBLISH = """
local seqs = {}
for i, key in ipairs(KEYS) do
    local seq = redis.call('INCR', key)
    redis.call('PUBLISH', ARGV[2 * i - 1], ARGV[2 * i] .. cmsgpack.pack(seq))
    seqs[i] = seq
end
return seqs
"""
_SEQ_ENTRY_KEY = msgpack.packb("seq")


@cache
def _number_and_publish():
    return _redis().register_script(_NUMBER_AND_PUBLISH)


def _unnumbered(layer, name: str, event: str, data: dict) -> bytes:
    """The layer's bytes for the event's message, up to the value of its last entry, "seq"."""
    message = _message(name, event, data, 0)
    del message["seq"]
    packed = layer.serialize(message)  # a fixmap of five entries: its first byte says so
    return bytes([packed[0] + 1]) + packed[1:] + _SEQ_ENTRY_KEY


def _is_plain_msgpack(layer) -> bool:
    """Whether the layer's bytes are msgpack and nothing more (no encryption, no random
    prefix): only then can the sequence number be appended to a message already serialised."""
    global _plain_cache
    if _plain_cache is None or _plain_cache[0] is not layer:
        probe = {"type": "wb.event", "seq": 1}
        _plain_cache = (layer, layer.serialize(probe) == msgpack.packb(probe))
    return _plain_cache[1]


_plain_cache: tuple | None = None


def _message(name: str, event: str, data: dict, seq: int) -> dict:
    return {
        "type": "wb.event",
        "group": name,
        "seq": seq,
        "event": event,
        "data": data,
        "sent_at": time.time(),
    }


def send_now(name: str, event: str, data: dict) -> int:
    """Number the event and hand it to the channel layer; return its sequence number."""
    seq = int(_redis().incr(_seq_key(name)))
    message = _message(name, event, data, seq)
    direct = _direct_pubsub()
    if direct is not None:
        layer, channel_of = direct
        _redis().publish(channel_of(layer_group(name)), layer.serialize(message))
        return seq
    future = asyncio.run_coroutine_threadsafe(
        get_channel_layer().group_send(layer_group(name), message), _publisher_loop()
    )
    future.result(timeout=SEND_TIMEOUT_S)
    return seq


def _direct_pubsub() -> tuple | None:
    """(layer, group → Redis channel) when a group send is one PUBLISH on our own Redis.

    With channels-redis's pub/sub layer on one Redis (the default: the host is REDIS_URL), a
    group send is a single PUBLISH of the layer's serialised message on the group's Redis
    channel. Doing that here, on the same synchronous connection as the sequence counter, costs
    a sync caller (a take-next claim publishes three events) about a third of the CPU of a trip
    through the publisher loop's thread. The channel's name and the message's bytes come from
    the layer itself; any other layer or a sharded one goes through `group_send`.
    (`tests/workbench/test_realtime.py` proves a consumer subscribed through the layer hears it.)
    """
    global _direct_cache
    layer = get_channel_layer()
    if _direct_cache is None or _direct_cache[0] is not layer:  # settings may swap the layer
        _direct_cache = (layer, _find_direct(layer))
    return _direct_cache[1] or None


_direct_cache: tuple | None = None


def _find_direct(layer) -> tuple | bool:
    from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer

    if not isinstance(layer, RedisPubSubChannelLayer):
        return False
    # A loop layer only to ask the layer's own naming and sharding (it connects to nothing).
    shape = RedisPubSubLoopLayer(*layer._args, **layer._kwargs, channel_layer=layer)
    if len(shape._shards) != 1 or shape._shards[0].host.get("address") != settings.REDIS_URL:
        return False
    return layer, shape._get_group_channel_name


SEND_TIMEOUT_S = 10
_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def _publisher_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process, in a daemon thread, that every sync publisher hands its sends.

    `async_to_sync` per event started a thread, a loop and a Redis connection each time (about
    10 ms of CPU per event, most of a take-next claim); this loop keeps the channel layer's
    connection open. It also works from a thread that runs a loop of its own (Playwright's, an
    async test's), where `async_to_sync` refuses. A forked child (a Celery worker) makes its own.
    """
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="wb-publisher", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop
